"""What uvloop gives the server: the service on uvloop (`ST_EVENT_LOOP=uvloop`, what `auto`
picks where it is installed) against the same service on asyncio's own loop
(`ST_EVENT_LOOP=asyncio`), both started, taking turns in alternating rounds on the same texts.

    .venv/bin/python -m bench.event_loop [--seconds 6] [--rounds 4]

One-message transcripts from the test split, cache off, concurrency 32 and 1; for each round
the messages per second and the CPU per message of the server's event loop (its main thread)
and of its other threads (the model calls). The order of the two servers flips every round, so
that a machine that drifts during the run favours neither.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
from typing import Any

from bench.http_load import (
    cpu_split,
    free_port,
    load,
    service_env,
    texts_of_realistic_length,
    thread_cpu,
    wait_ready,
)
from bench.record import save

LOOPS = ("uvloop", "asyncio")
LEVELS = (32, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--record", default=None, help="also write the figures to DIR")
    args = parser.parse_args()
    from service.settings import DEFAULT_MODEL_DIR

    texts = texts_of_realistic_length(40_000)
    rows: dict[str, dict[int, list[dict[str, float]]]] = {x: {c: [] for c in LEVELS} for x in LOOPS}
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for name in LOOPS:
            port = free_port()
            env = {**service_env(DEFAULT_MODEL_DIR, port), "ST_EVENT_LOOP": name}
            proc = subprocess.Popen([sys.executable, "-m", "service", "serve"], env=env)
            wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
            servers[name] = (proc, port)
        for r in range(args.rounds):
            for name in LOOPS if r % 2 == 0 else LOOPS[::-1]:
                proc, port = servers[name]
                url = f"http://127.0.0.1:{port}/v1/classify"
                for c in LEVELS:
                    before = thread_cpu(proc.pid)
                    got = asyncio.run(load(url, texts, c, args.seconds))
                    cpu = cpu_split(proc.pid, before, thread_cpu(proc.pid), got["requests"])
                    rows[name][c].append({"rps": got["rps"], "p50": got["p50"], **cpu})
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    summary: dict[str, Any] = {}
    print(f"\n{'loop':<10}{'c':>4}  {'msg/s by round':<44}{'loop CPU ms/msg':>16}{'p50 ms':>9}")
    for name in LOOPS:
        for c in LEVELS:
            runs = rows[name][c]
            rps = " / ".join(f"{x['rps']:.1f}" for x in runs)
            loop_ms = statistics.mean(x["loop_cpu_ms"] for x in runs)
            p50 = statistics.median(x["p50"] for x in runs)
            print(f"{name:<10}{c:>4}  {rps:<44}{loop_ms:>16.2f}{p50:>9.2f}")
    for c in LEVELS:
        uv = sum(x["rps"] for x in rows["uvloop"][c])
        aio = sum(x["rps"] for x in rows["asyncio"][c])
        loop_cpu = {n: statistics.mean(x["loop_cpu_ms"] for x in rows[n][c]) for n in LOOPS}
        summary[str(c)] = {"msgs_ratio": uv / aio, "loop_cpu_ms": loop_cpu}
        print(f"uvloop / asyncio at c={c}: {uv / aio:.3f}x messages per second")
    save(args.record, "event_loop", {"rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
