"""`make bench-peers`: this service side by side with what a user would pick instead, the same
model and the same texts, in one run.

Peers (each in its own process, on the same 2 cores as the load generator):
  - optimum: a plain FastAPI route over optimum's ORTModelForSequenceClassification and a
    transformers pipeline (bench/optimum_server.py), serving the shipped int8 model.onnx;
    it runs in its own environment (`.venv-peers`: optimum pins an older transformers than
    training uses), made by `make bench-peers`.
  - infinity: infinity-emb's own server (bench/infinity_server.py; dynamic batching across
    requests, optimum engine) serving the same int8 model.onnx, in the same environment. Two
    rows: as shipped (its transformers pipeline then runs the model one text at a time) and
    with the pipeline given batch_size 32 (one padded ONNX run per group: the stronger peer).
    It has its own environment too (`.venv-infinity`: it pins numpy < 2 and an older uvicorn),
    made by `make bench-peers`.
Load: one-message transcripts of test-split messages, closed loop at concurrency 1, 8 and 32
(bench/http_load.py's generator), cache off in the service. Targets: the service >= 1.5x
every peer's msg/s at concurrency 32 and no worse (>= 1.0x) at concurrency 1.

Usage: .venv/bin/python -m bench.peers [--seconds 8] [--peer-python .venv-peers/bin/python]
           [--infinity-python .venv-infinity/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench.http_load import (
    REPO,
    free_port,
    load,
    service_env,
    texts_of_realistic_length,
    transcript_body,
    wait_ready,
)
from bench.record import save

TARGETS = {1: 1.0, 32: 1.5}
LEVELS = (1, 8, 32)


def measure(
    command: list[str],
    port: int,
    ready: str,
    texts: list[str],
    seconds: float,
    env: dict[str, str],
    body_of: Callable[[str], bytes] = transcript_body,
) -> dict[int, dict[str, float]]:
    """Start a server listening on `port`, load it at each concurrency, stop it."""
    proc = subprocess.Popen(command, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}{ready}", proc, seconds=300)
        url = f"http://127.0.0.1:{port}/v1/classify"
        asyncio.run(load(url, texts[:64], 4, 2.0, body_of))  # warm-up
        return {c: asyncio.run(load(url, texts, c, seconds, body_of)) for c in LEVELS}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=os.environ.get("ST_MODEL_DIR", ""))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--peer-python", default=str(REPO / ".venv-peers/bin/python"))
    parser.add_argument("--infinity-python", default=str(REPO / ".venv-infinity/bin/python"))
    parser.add_argument("--record", default=None, help="also write the figures to DIR")
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
    if Path(args.infinity_python).exists():
        served = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["name"]

        def infinity_body(text: str) -> bytes:
            return json.dumps({"model": served, "input": [text]}).encode()

        for row, pipe_batch in (("infinity", ""), ("infinity, batched pipe", "32")):
            peer_port = free_port()
            rows[row] = measure(
                [
                    args.infinity_python,
                    str(REPO / "bench/infinity_server.py"),
                    str(model_dir),
                    str(peer_port),
                ],
                peer_port,
                "/health",
                texts,
                args.seconds,
                {**peer_env, "INFINITY_PEER_PIPE_BATCH": pipe_batch},
                infinity_body,
            )
    else:
        print(f"skipped infinity: no {args.infinity_python} (make bench-peers makes it)")

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
    save(args.record, "peers", {"rows": rows, "ratios": ratios, "targets": TARGETS})


if __name__ == "__main__":
    main()
