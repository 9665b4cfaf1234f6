"""`make bench-peers`: this service side by side with what a user would pick instead, the same
model and the same texts, in one run.

Peers (each in its own process, on the same 2 cores as the load generator):
  - optimum: a plain FastAPI route over optimum's ORTModelForSequenceClassification and a
    transformers pipeline (bench/optimum_server.py), serving the shipped int8 model.onnx;
    it runs in its own environment (`.venv-peers`: optimum pins an older transformers than
    training uses), made by `make bench-peers`.
Load: one-message transcripts of test-split messages, closed loop at concurrency 1, 8 and 32
(bench/http_load.py's generator), cache off in the service. Targets: the service >= 1.5x
every peer's msg/s at concurrency 32 and no worse (>= 1.0x) at concurrency 1.

Usage: .venv/bin/python -m bench.peers [--seconds 8] [--peer-python .venv-peers/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.http_load import (
    REPO,
    free_port,
    load,
    service_env,
    texts_of_realistic_length,
    wait_ready,
)

TARGETS = {1: 1.0, 32: 1.5}
LEVELS = (1, 8, 32)


def measure(
    command: list[str], port: int, ready: str, texts: list[str], seconds: float, env: dict
) -> dict[int, dict[str, float]]:
    """Start a server listening on `port`, load it at each concurrency, stop it."""
    proc = subprocess.Popen(command, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}{ready}", proc, seconds=300)
        url = f"http://127.0.0.1:{port}/v1/classify"
        asyncio.run(load(url, texts[:64], 4, 2.0))  # warm-up
        return {c: asyncio.run(load(url, texts, c, seconds)) for c in LEVELS}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=os.environ.get("ST_MODEL_DIR", ""))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--peer-python", default=str(REPO / ".venv-peers/bin/python"))
    args = parser.parse_args()
    from service.settings import DEFAULT_MODEL_DIR

    model_dir = (Path(args.model_dir) if args.model_dir else DEFAULT_MODEL_DIR).resolve()
    texts = texts_of_realistic_length(20_000)
    port = free_port()
    rows: dict[str, dict[int, dict[str, float]]] = {}
    rows["service"] = measure(
        [sys.executable, "-m", "service", "serve"], port, "/readyz", texts, args.seconds,
        service_env(model_dir, port),
    )  # fmt: skip
    peer_env = {k: v for k, v in os.environ.items() if not k.startswith("ST_")}
    if Path(args.peer_python).exists():
        peer_port = free_port()
        rows["optimum + pipeline"] = measure(
            [
                args.peer_python,
                str(REPO / "bench/optimum_server.py"),
                str(model_dir),
                str(peer_port),
            ],
            peer_port,
            "/docs",
            texts,
            args.seconds,
            peer_env,
        )
    else:
        print(f"skipped optimum: no {args.peer_python} (make bench-peers makes it)")

    print(f"\n{'server':<22}{'conc':>5}{'msg/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, by in rows.items():
        for c, r in by.items():
            print(
                f"{name:<22}{c:>5}{r['rps']:>9.1f}{r['p50']:>9.1f}{r['p99']:>9.1f}"
                f"{int(r['errors']):>8}"
            )
    print(f"\n{'ratio (msg/s)':<40}{'value':>7}{'target':>9}  met")
    ratios = {}
    for name in rows:
        if name == "service":
            continue
        for c, target in TARGETS.items():
            v = rows["service"][c]["rps"] / rows[name][c]["rps"]
            ratios[f"service / {name}, c={c}"] = v
            print(f"{'service / ' + name + f', c={c}':<40}{v:>7.2f}{'>= ' + str(target):>9}  "
                  f"{'yes' if v >= target else 'no'}")  # fmt: skip
    print(json.dumps({"rows": rows, "ratios": ratios}))


if __name__ == "__main__":
    main()
