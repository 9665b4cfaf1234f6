"""What preparing small requests on the event loop gives: the service as shipped (a request
of up to `service.engine.INLINE_CHARS` characters normalised, read after its turns, looked up
in the cache, tokenised and its languages identified on the event loop; a bigger one in a
worker thread) against the same service with every request prepared in a worker thread,
alternating, same texts.

    .venv/bin/python -m bench.loop_prepare [--seconds 8] [--rounds 2]

The second server is this very code with one change made at start-up (INLINE_CHARS set to 0);
the model calls stay on their threads in both. One-message transcripts from the test split
(all under the bound), cache off, concurrency 32 and 1.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys

from bench.http_load import free_port, load, service_env, texts_of_realistic_length, wait_ready
from bench.record import save

ALWAYS_THREAD = """
import sys
import service.engine as engine

engine.INLINE_CHARS = 0
from service.__main__ import main
sys.exit(main(["serve"]))
"""


def serve(shipped: bool) -> list[str]:
    """The command of the service as shipped, or with every request prepared in a thread."""
    if shipped:
        return [sys.executable, "-m", "service", "serve"]
    return [sys.executable, "-c", ALWAYS_THREAD]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--record", default=None, help="also write the figures to DIR")
    args = parser.parse_args()
    from service.settings import DEFAULT_MODEL_DIR

    texts = texts_of_realistic_length(40_000)
    results: dict[str, dict[int, list[float]]] = {"event loop": {}, "worker thread": {}}
    servers = {}
    try:
        for name, shipped in (("event loop", True), ("worker thread", False)):
            port = free_port()
            proc = subprocess.Popen(serve(shipped), env=service_env(DEFAULT_MODEL_DIR, port))
            wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
            servers[name] = (proc, port)
        for _ in range(args.rounds):
            for name, (_, port) in servers.items():
                url = f"http://127.0.0.1:{port}/v1/classify"
                for c in (32, 1):
                    r = asyncio.run(load(url, texts, c, args.seconds))
                    results[name].setdefault(c, []).append(r["rps"])
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    print(f"\n{'prepare on':<16}{'c=32 msg/s':>24}{'c=1 msg/s':>24}")
    for name, by in results.items():
        print(
            f"{name:<16}" + "".join(f"{' / '.join(f'{x:.1f}' for x in by[c]):>24}" for c in (32, 1))
        )
    for c in (32, 1):
        a, b = sum(results["event loop"][c]), sum(results["worker thread"][c])
        print(f"shipped (event loop) / worker thread at c={c}: {a / b:.2f}x")
    save(args.record, "loop_prepare", {"rows": results})


if __name__ == "__main__":
    main()
