"""An unlabelled pool of real text for a distilled run: messages of the real sources' train
groups that nobody labelled, learnt from the teacher's scores alone (`TrainConfig.teacher_pool`).

    python -m training.pool [--out build/pool/unlabelled.parquet] [--per-pool 600]
        [--chat-conversations 300] [--languages ar,de,en,...]

Labelled real text is scarce (a few thousand train items); the real pools hold hundreds of
thousands of items of the same sources. A student that learns the teacher's probabilities on
them sees far more of the real text it will judge, in every language of the model, than the
labels alone show it (a shallower student loses least of the teacher's judgement where it has
seen the teacher judge). Drawn, with a fixed seed, only from the groups the real data puts in
train (`training.selection.split_of`): per source and language at most `per_pool` single items,
and `chat_conversations` whole chat conversations (each message read after the turns before
it, as in the splits). Left out: every labelled item and every conversation with one, every
text that is in a held-out split, and the chat conversations reserved for independent
evaluation (`training.selection.load` never yields those). Rows have the splits' columns, kind
`pool` and no labels; the pool is built from the pinned packages `make data` fetched
(`build/real/items`) and kept under `build/`, never committed.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from service.text import normalize
from training.config import resolve
from training.data import HISTORY_TURNS, text_key
from training.realdata import REAL_SPLITS, label_rows
from training.selection import CHAT_MAX, ITEMS_DIR, SEED, conversations, load, split_of

log = logging.getLogger(__name__)

POOL_KIND = "pool"
OUT = "build/pool/unlabelled.parquet"
# the languages of the multilingual model (training/configs/e5-multi.json's data)
LANGUAGES = ("ar", "de", "en", "es", "fa", "fr", "he", "tr")
SPLITS_DIR = "training/data/splits"


def held_out_texts(splits_dir: Path) -> set[str]:
    """The keys of the texts a train row may not have, as `training.data.examples` rules:
    every text of the authored validation and test splits, and every text of at least 20
    characters of a held-out real split."""
    keys: set[str] = set()
    for name in ("validation", "test", *REAL_SPLITS):
        path = splits_dir / f"{name}.parquet"
        if path.exists():
            texts = pq.read_table(path, columns=["text"])["text"].to_pylist()
            keys |= {text_key(t) for t in texts if name in ("validation", "test") or len(t) >= 20}
    return keys


def _row(source: str, it: dict[str, Any], turn: int, history: list[list[str]]) -> dict[str, Any]:
    text = normalize(it["text"])
    return {
        "id": f"pool-{source}-{it['key']}",
        "record": f"pool-{source}-{it.get('conv', it['key'])}",
        "group": it["split_group"],
        "lang": it["lang"],
        "source": source,
        "kind": POOL_KIND,
        "variety": it.get("origin", ""),
        "template": False,
        "role": "user",
        "turn": turn,
        "text": text,
        "context": history[-1][1] if history else "",
        "history": history,
        "labels": [],
    }


def build(
    sources: list[str],
    per_pool: int = 600,
    chat_conversations: int = 400,
    languages: tuple[str, ...] = LANGUAGES,
    items_dir: str = ITEMS_DIR,
    splits_dir: str = SPLITS_DIR,
    seed: int = SEED,
) -> list[dict[str, Any]]:
    """The pool's rows (see the module's doc)."""
    labelled = {(r["source"], r["key"]) for r in label_rows()}
    held = held_out_texts(resolve(splits_dir))
    rng = random.Random(seed + 500)
    rows: list[dict[str, Any]] = []
    for source in sources:
        items = [
            it
            for it in load(source, items_dir)
            if split_of(it["split_group"]) == "train" and it["lang"] in languages
        ]
        if source == "chitchat":
            convs = [
                msgs
                for _, msgs in sorted(conversations(items).items())
                if len(msgs) <= CHAT_MAX and not any((source, m["key"]) in labelled for m in msgs)
            ]
            for msgs in rng.sample(convs, min(chat_conversations, len(convs))):
                history: list[list[str]] = []
                for i, m in enumerate(sorted(msgs, key=lambda m: m["pos"])):
                    if text_key(m["text"]) not in held:  # a held-out text stays context only
                        rows.append(_row(source, m, i, history))
                    history = [*history, ["user", normalize(m["text"])]][-HISTORY_TURNS:]
            continue
        by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for it in items:
            if (source, it["key"]) not in labelled and text_key(it["text"]) not in held:
                by_lang[it["lang"]].append(it)
        for _lang, pool in sorted(by_lang.items()):
            for it in rng.sample(pool, min(per_pool, len(pool))):
                rows.append(_row(source, it, 0, []))
    return rows


def write(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def main() -> None:
    from training.fetch import load_sources

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=OUT)
    ap.add_argument(
        "--per-pool", type=int, default=600, help="single items per source and language"
    )
    ap.add_argument("--chat-conversations", type=int, default=400)
    ap.add_argument("--languages", default=",".join(LANGUAGES))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sources = [s.name for s in load_sources() if (resolve(ITEMS_DIR) / f"{s.name}.jsonl").exists()]
    rows = build(sources, args.per_pool, args.chat_conversations, tuple(args.languages.split(",")))
    write(rows, resolve(args.out))
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r["lang"]] += 1
    log.info("pool: %d rows -> %s (%s)", len(rows), args.out, dict(sorted(counts.items())))


if __name__ == "__main__":
    main()
