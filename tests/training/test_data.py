"""The corpus schema and the grouped, deterministic split."""

from __future__ import annotations

from collections import defaultdict

from training.config import LABELS
from training.data import all_records, examples, split_of

ROLES = {"user", "assistant", "system"}


def test_split_is_deterministic_and_roughly_70_15_15() -> None:
    groups = [f"g{i}" for i in range(20000)]
    splits = [split_of(g) for g in groups]
    assert splits == [split_of(g) for g in groups]
    share = {s: splits.count(s) / len(splits) for s in ("train", "validation", "test")}
    assert abs(share["train"] - 0.70) < 0.02 and abs(share["test"] - 0.15) < 0.02


def test_records_follow_the_schema() -> None:
    records = all_records()
    assert records
    ids = set()
    for r in records:
        assert r["id"] not in ids, r["id"]
        ids.add(r["id"])
        assert r["lang"] and r["source"] and r["group"] and r["kind"]
        assert r["messages"]
        for m in r["messages"]:
            assert m["role"] in ROLES
            assert isinstance(m["content"], str) and m["content"].strip()
            assert set(m["labels"]) <= set(LABELS), r["id"]


def test_no_group_or_text_spans_two_splits() -> None:
    where: dict[str, set[str]] = defaultdict(set)
    text_where: dict[str, set[str]] = defaultdict(set)
    for e in examples(all_records()):
        where[e["group"]].add(e["split"])
        text_where[e["text"].lower()].add(e["split"])
    assert all(len(s) == 1 for s in where.values())
    leaked = [t for t, s in text_where.items() if len(s) > 1]
    assert not leaked, leaked[:5]


def test_a_fixed_train_record_never_trains_on_a_held_out_authored_text() -> None:
    def rec(rid: str, texts: list[str], **extra: str) -> dict[str, object]:
        msgs = [{"role": "user", "content": t, "labels": []} for t in texts]
        return {"id": rid, "group": rid, "lang": "en", "source": "authored", "kind": "t",
                "messages": msgs, **extra}  # fmt: skip

    held = next(g for g in (f"g{i}" for i in range(100)) if split_of(g) == "test")
    records = [
        rec(held, ["ok", "a sentence held out in the authored test split"]),
        rec(
            "pinned",
            ["ok", "a new line", "a sentence held out in the authored test split"],
            split="train",
        ),  # fmt: skip
    ]
    out = [e for e in examples(records) if e["record"] == "pinned"]
    assert [e["text"] for e in out] == ["a new line"]
    assert all(e["split"] == "train" for e in out)
    # the dropped turns still give the next one its context
    assert out[0]["context"] == "ok"
