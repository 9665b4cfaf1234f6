"""A short version of `make loadtest`: twice the capacity for a few seconds."""

from __future__ import annotations

from pathlib import Path

from bench.loadtest import run


def test_overload_is_shed_and_answers_stay_right(shipped_model_dir: Path) -> None:
    assert run(shipped_model_dir, seconds=6, max_rss_mb=1500)
