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
(bench/http_load.py's generator), cache off in the service. Every server is started first and
paused (SIGSTOP); at each level they take turns, `--rounds` times, each resumed, warm again
for a second, measured for `--seconds / --rounds`, paused again: no server runs while another
is measured, and drift of the machine falls on all alike. Each row also has the CPU each
server spent per message (every thread of its process and of the processes it started) and
the load generator's beside it, on the same 2 cores: where a server's time goes. Targets:
the service >= 1.5x every peer's msg/s at concurrency 32 and no worse (>= 1.0x) at
concurrency 1.

Usage: .venv/bin/python -m bench.peers [--seconds 8] [--peer-python .venv-peers/bin/python]
           [--infinity-python .venv-infinity/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.http_load import (
    REPO,
    WARM_UP_S,
    free_port,
    load,
    service_env,
    texts_of_realistic_length,
    thread_cpu,
    transcript_body,
    wait_ready,
)
from bench.record import save

TARGETS = {1: 1.0, 32: 1.5}
LEVELS = (1, 8, 32)


@dataclass
class Server:
    """A server under test: how to start it, where it answers, what body it takes."""

    command: list[str]
    port: int
    ready: str
    env: dict[str, str]
    body_of: Callable[[str], bytes] = transcript_body
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/classify"

    def start(self, texts: list[str]) -> None:
        self.proc = subprocess.Popen(self.command, env=self.env)
        wait_ready(f"http://127.0.0.1:{self.port}{self.ready}", self.proc, seconds=300)
        asyncio.run(load(self.url, texts[:64], 4, 2.0, self.body_of))  # warm-up
        self.proc.send_signal(signal.SIGSTOP)  # holds no core while the others are measured

    def turn(self, texts: list[str], c: int, seconds: float) -> dict[str, Any]:
        """One round at concurrency `c`: the server resumed, warm again, measured, paused;
        with the CPU seconds the server (every thread of its process and of its children)
        and the load generator (this process) spent on the measured part."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        try:
            asyncio.run(load(self.url, texts[::-1], c, WARM_UP_S, self.body_of))
            server, generator = process_cpu(self.proc.pid), time.process_time()
            out = asyncio.run(load(self.url, texts, c, seconds, self.body_of, keep=True))
            out["server_cpu_s"] = process_cpu(self.proc.pid) - server
            out["load_cpu_s"] = time.process_time() - generator
            return out
        finally:
            self.proc.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(30)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its descendants now running: the sum over
    every thread (a server may serve from worker processes)."""
    threads = thread_cpu(pid)
    children: set[int] = set()
    for tid in threads:  # a child is listed under the thread that started it
        try:
            children.update(map(int, Path(f"/proc/{pid}/task/{tid}/children").read_text().split()))
        except OSError:
            continue
    return sum(threads.values()) + sum(process_cpu(child) for child in children)


def measure(
    servers: dict[str, Server], texts: list[str], seconds: float, rounds: int
) -> dict[str, dict[int, dict[str, float]]]:
    """Every server at each concurrency, in `rounds` alternating rounds of `seconds / rounds`
    (this machine drifts by more than the differences between minutes apart): the servers
    all started, each paused (SIGSTOP) except the one under load. msg/s over all its rounds,
    p50 and p99 over all its requests."""
    turns: dict[str, dict[int, list[dict[str, Any]]]] = {
        n: {c: [] for c in LEVELS} for n in servers
    }
    try:
        for server in servers.values():
            server.start(texts)
        for c in LEVELS:
            for _ in range(rounds):
                for name, server in servers.items():
                    turns[name][c].append(server.turn(texts, c, seconds / rounds))
    finally:
        for server in servers.values():
            server.stop()
    rows: dict[str, dict[int, dict[str, float]]] = {}
    for name, by in turns.items():
        rows[name] = {}
        for c, parts in by.items():
            lat = np.concatenate([p["latencies"] for p in parts])
            took = sum(p["requests"] / p["rps"] for p in parts)
            rows[name][c] = {
                "rps": len(lat) / took,
                "p50": float(np.percentile(lat, 50)),
                "p99": float(np.percentile(lat, 99)),
                "errors": float(sum(p["errors"] for p in parts)),
                "requests": float(len(lat)),
                "rounds": float(len(parts)),
                # CPU per request: the server's, and the load generator's on the same cores
                "cpu_ms": 1000 * sum(p["server_cpu_s"] for p in parts) / len(lat),
                "load_cpu_ms": 1000 * sum(p["load_cpu_s"] for p in parts) / len(lat),
            }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=os.environ.get("ST_MODEL_DIR", ""))
    parser.add_argument("--seconds", type=float, default=8.0, help="per server and level")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per level")
    parser.add_argument("--peer-python", default=str(REPO / ".venv-peers/bin/python"))
    parser.add_argument("--infinity-python", default=str(REPO / ".venv-infinity/bin/python"))
    parser.add_argument("--record", default=None, help="also write the figures to DIR")
    args = parser.parse_args()
    from service.settings import DEFAULT_MODEL_DIR

    model_dir = (Path(args.model_dir) if args.model_dir else DEFAULT_MODEL_DIR).resolve()
    texts = texts_of_realistic_length(20_000)
    port = free_port()
    servers: dict[str, Server] = {
        "service": Server(
            [sys.executable, "-m", "service", "serve"],
            port,
            "/readyz",
            service_env(model_dir, port),
        )
    }
    peer_env = {k: v for k, v in os.environ.items() if not k.startswith("ST_")}
    if Path(args.peer_python).exists():
        peer_port = free_port()
        servers["optimum + pipeline"] = Server(
            [
                args.peer_python,
                str(REPO / "bench/optimum_server.py"),
                str(model_dir),
                str(peer_port),
            ],
            peer_port,
            "/docs",
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
            servers[row] = Server(
                [
                    args.infinity_python,
                    str(REPO / "bench/infinity_server.py"),
                    str(model_dir),
                    str(peer_port),
                ],
                peer_port,
                "/health",
                {**peer_env, "INFINITY_PEER_PIPE_BATCH": pipe_batch},
                infinity_body,
            )
    else:
        print(f"skipped infinity: no {args.infinity_python} (make bench-peers makes it)")
    rows = measure(servers, texts, args.seconds, args.rounds)

    print(
        f"\n{'server':<22}{'conc':>5}{'msg/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'CPU ms/msg':>12}{'load CPU':>10}"
    )
    for name, by in rows.items():
        for c, r in by.items():
            print(
                f"{name:<22}{c:>5}{r['rps']:>9.1f}{r['p50']:>9.1f}{r['p99']:>9.1f}"
                f"{int(r['errors']):>8}{r['cpu_ms']:>12.2f}{r['load_cpu_ms']:>10.2f}"
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
