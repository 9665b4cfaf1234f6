"""What uvloop gives the server: the service on uvloop (`ST_EVENT_LOOP=uvloop`, what `auto`
picks where it is installed) against the same service on asyncio's own loop
(`ST_EVENT_LOOP=asyncio`), both started, taking turns in alternating rounds on the same texts.

    .venv/bin/python -m bench.event_loop [--seconds 6] [--rounds 4]

One-message transcripts from the test split, cache off, concurrency 32 and 1; for each round
the messages per second and the CPU per message of the server's event loop (its main thread)
and of its other threads (the model calls): `bench/ab.py` with these two servers.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from bench.ab import LEVELS, alternate, show
from bench.record import save

LOOPS = ("uvloop", "asyncio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--record", default=None, help="also write the figures to DIR")
    args = parser.parse_args()
    rows = alternate({x: {"ST_EVENT_LOOP": x} for x in LOOPS}, args.rounds, args.seconds)
    show(rows)
    summary: dict[str, Any] = {}
    for c in LEVELS:
        uv = sum(x["rps"] for x in rows["uvloop"][c])
        aio = sum(x["rps"] for x in rows["asyncio"][c])
        loop_cpu = {n: statistics.mean(x["loop_cpu_ms"] for x in rows[n][c]) for n in LOOPS}
        summary[str(c)] = {"msgs_ratio": uv / aio, "loop_cpu_ms": loop_cpu}
    save(args.record, "event_loop", {"rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
