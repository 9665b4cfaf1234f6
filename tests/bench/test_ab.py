"""bench/ab.py: which servers a command line asks for."""

from __future__ import annotations

import pytest

from bench.ab import parse


def test_each_argument_is_one_server_of_st_settings() -> None:
    got = parse(["ST_BATCH_MAX_WINDOWS=1", "ST_EVENT_LOOP=asyncio,ST_MODEL_RUNS=2"])
    assert got == {
        "ST_BATCH_MAX_WINDOWS=1": {"ST_BATCH_MAX_WINDOWS": "1"},
        "ST_EVENT_LOOP=asyncio,ST_MODEL_RUNS=2": {"ST_EVENT_LOOP": "asyncio", "ST_MODEL_RUNS": "2"},
    }


@pytest.mark.parametrize("spec", ["", "BATCH=1", "ST_BATCH_MAX_WINDOWS", "PATH=/x,ST_PORT=1"])
def test_anything_but_st_settings_is_refused(spec: str) -> None:
    with pytest.raises(SystemExit):
        parse([spec])
