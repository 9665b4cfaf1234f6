"""Two or more servers of this service that differ only in their `ST_` settings, all started,
taking turns in alternating rounds on the same texts (the order flips every round, so that a
machine that drifts during the run favours none).

    .venv/bin/python -m bench.ab ST_BATCH_MAX_WINDOWS=64 ST_BATCH_MAX_WINDOWS=1 [--rounds 4]
        [--levels 32,1]

Each argument is one server: comma-separated `NAME=value` settings on top of the benchmarked
service's environment (`bench.http_load.service_env`). One-message transcripts from the test
split, cache off, concurrency 32 and 1 (or `--levels`); for each round the messages per second
and the CPU per message of the server's event loop (its main thread) and of its other threads
(the model calls). `bench/event_loop.py` is this with `ST_EVENT_LOOP=uvloop` and `asyncio`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence

from bench.http_load import (
    cpu_split,
    free_port,
    load,
    service_env,
    texts_of_realistic_length,
    thread_cpu,
    wait_ready,
)

LEVELS = (32, 1)
Rows = dict[str, dict[int, list[dict[str, float]]]]


def alternate(
    servers: Mapping[str, Mapping[str, str]],
    rounds: int,
    seconds: float,
    levels: Sequence[int] = LEVELS,
) -> Rows:
    """Start one server per entry (its name -> its extra environment), then measure each at
    every concurrency level, round after round, in alternating order."""
    from service.settings import DEFAULT_MODEL_DIR

    texts = texts_of_realistic_length(40_000)
    names = list(servers)
    rows: Rows = {x: {c: [] for c in levels} for x in names}
    running: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for name in names:
            port = free_port()
            env = {**service_env(DEFAULT_MODEL_DIR, port), **servers[name]}
            proc = subprocess.Popen([sys.executable, "-m", "service", "serve"], env=env)
            wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
            running[name] = (proc, port)
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                proc, port = running[name]
                url = f"http://127.0.0.1:{port}/v1/classify"
                for c in levels:
                    before = thread_cpu(proc.pid)
                    got = asyncio.run(load(url, texts, c, seconds))
                    cpu = cpu_split(proc.pid, before, thread_cpu(proc.pid), got["requests"])
                    rows[name][c].append({"rps": got["rps"], "p50": got["p50"], **cpu})
    finally:
        for proc, _ in running.values():
            proc.terminate()
            proc.wait(30)
    return rows


def show(rows: Rows) -> None:
    """Each server's rounds, its mean CPU per message and median p50, then each server's
    messages per second against the first's at each level."""
    print(f"\n{'server':<28}{'c':>4}  {'msg/s by round':<44}{'loop / model CPU ms':>20}{'p50':>8}")
    for name, by in rows.items():
        for c, runs in by.items():
            rps = " / ".join(f"{x['rps']:.1f}" for x in runs)
            loop = statistics.mean(x["loop_cpu_ms"] for x in runs)
            model = statistics.mean(x["model_cpu_ms"] for x in runs)
            p50 = statistics.median(x["p50"] for x in runs)
            print(f"{name:<28}{c:>4}  {rps:<44}{f'{loop:.2f} / {model:.2f}':>20}{p50:>8.1f}")
    first = next(iter(rows))
    for name in list(rows)[1:]:
        for c in rows[first]:
            ratio = sum(x["rps"] for x in rows[name][c]) / sum(x["rps"] for x in rows[first][c])
            print(f"{name} / {first} at c={c}: {ratio:.3f}x messages per second")


def parse(specs: Sequence[str]) -> dict[str, dict[str, str]]:
    """`NAME=value,NAME=value` per server -> {spec: environment}."""
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        pairs = [p.split("=", 1) for p in spec.split(",") if p]
        if not pairs or any(len(p) != 2 or not p[0].startswith("ST_") for p in pairs):
            raise SystemExit(f"not ST_NAME=value[,ST_NAME=value]: {spec}")
        out[spec] = dict((k, v) for k, v in pairs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("servers", nargs="+", help="ST_NAME=value[,...] per server")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--levels", default=",".join(map(str, LEVELS)), help="concurrency levels, e.g. 32,8,1"
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.levels.split(",") if c]
    show(alternate(parse(args.servers), args.rounds, args.seconds, levels))


if __name__ == "__main__":
    main()
