"""What preparing requests off the event loop gives: the service as shipped (each request
normalised, read after its turns, looked up in the cache and tokenised in a worker thread)
against the same service with that step run on the event loop, alternating, same texts.

    .venv/bin/python -m bench.loop_prepare [--seconds 8] [--rounds 2]

The second server is this very code with one change made at start-up (the engine's
`asyncio.to_thread` for the prepare step replaced by a direct call); the model calls stay on
their threads in both. One-message transcripts from the test split, cache off, concurrency 32
and 1.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys

from bench.http_load import free_port, load, service_env, texts_of_realistic_length, wait_ready

ON_LOOP = """
import sys, types, asyncio
import service.engine as engine

async def _inline(fn, *args, **kwargs):
    return fn(*args, **kwargs)

engine.asyncio = types.SimpleNamespace(to_thread=_inline)
from service.__main__ import main
sys.exit(main(["serve"]))
"""


def serve(on_loop: bool) -> list[str]:
    """The command of the service, with its prepare step on the event loop or not."""
    if on_loop:
        return [sys.executable, "-c", ON_LOOP]
    return [sys.executable, "-m", "service", "serve"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from service.settings import DEFAULT_MODEL_DIR

    texts = texts_of_realistic_length(40_000)
    results: dict[str, dict[int, list[float]]] = {"worker thread": {}, "event loop": {}}
    servers = {}
    try:
        for name, on_loop in (("worker thread", False), ("event loop", True)):
            port = free_port()
            proc = subprocess.Popen(serve(on_loop), env=service_env(DEFAULT_MODEL_DIR, port))
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
        a, b = sum(results["worker thread"][c]), sum(results["event loop"][c])
        print(f"worker thread / event loop at c={c}: {a / b:.2f}x")


if __name__ == "__main__":
    main()
