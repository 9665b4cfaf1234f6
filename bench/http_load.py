"""`make bench`: the HTTP API under load, side by side with the raw engine and a naive server.

Drives POST /v1/classify with one-message transcripts of realistic lengths (the test split's
messages) at concurrency 1, 8 and 32, and prints throughput, p50 and p99 next to:
  (a) the raw onnxruntime engine on the same texts, batched by 32, its calls spread over the
      cores as the service spreads them (the ceiling);
  (b) a naive baseline: the same model on PyTorch behind a plain FastAPI route: the fine-tuned
      weights of runs/<name>/checkpoint when a training run left them, otherwise (a fresh
      clone) the model's base model with an untrained head of the same shape (same cost).
For each service run it also says where the CPU went: the CPU time per request of the
server's event loop (its main thread) and of its other threads (the model calls), read from
/proc, against the raw engine's CPU time per message. Then the batch form: one request of 64
one-message transcripts against 64 concurrent single requests; and the re-send case: a
20-message transcript re-sent with one new message, against a fresh one-message transcript.
All traffic stays on 127.0.0.1; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.record import save
from service.artifact import ModelArtifact
from service.classifier import Classifier
from training.config import REPO

TARGETS = {
    "service_vs_raw_c32": 0.80,
    "service_vs_naive_c32": 5.0,
    "resend_vs_one": 1.5,
    "batch_form_vs_singles": 0.9,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server did not start")


def service_env(model_dir: Path, port: int) -> dict[str, str]:
    """The environment of a benchmarked service: no keys, no cache, quiet logs; the rest (for
    example ST_MODEL_RUNS) as the caller's environment says."""
    return {
        **os.environ,
        "ST_AUTH_REQUIRED": "false",
        "ST_MODEL_DIR": str(model_dir),
        "ST_PORT": str(port),
        "ST_LOG_LEVEL": "warning",
        "ST_CACHE_ENTRIES": "0",
    }


def texts_of_realistic_length(n: int) -> list[str]:
    """Test-split messages (the lengths people really write), made unique per request."""
    import pyarrow.parquet as pq

    path = REPO / "training/data/splits/test.parquet"
    base = pq.read_table(path, columns=["text"]).column("text").to_pylist()
    rng = np.random.default_rng(0)
    return [f"{base[int(i)]} ({k})" for k, i in enumerate(rng.integers(len(base), size=n))]


class Connection:
    """One keep-alive HTTP/1.1 connection over plain asyncio streams (a cheap load generator:
    it shares the CPU with the server, so it must cost little per request)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: load\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body_out = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection") == "close":
            self.writer.close()
        return status, headers, body_out

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def transcript_body(text: str) -> bytes:
    """A one-message transcript, as this service takes it."""
    return json.dumps({"messages": [{"role": "user", "content": text}]}).encode()


async def load(
    url: str,
    texts: list[str],
    concurrency: int,
    seconds: float,
    body_of: Callable[[str], bytes] = transcript_body,
    keep: bool = False,
) -> dict[str, Any]:
    """A closed-loop load generator: `concurrency` keep-alive connections, each sending its
    next request when the last is answered. Plain asyncio streams, so that the generator takes
    little of the CPU it shares with the server. `body_of` makes a request body of one text
    (a peer may want another shape)."""
    parsed = httpx.URL(url)
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    counter = iter(range(len(texts)))

    async def worker() -> None:
        nonlocal errors
        conn = Connection(parsed.host, int(parsed.port or 80))
        try:
            while time.monotonic() < stop:
                i = next(counter, None)
                if i is None:
                    return
                body = body_of(texts[i])
                t = time.perf_counter()
                status, _, _ = await conn.post(parsed.path, body)
                latencies.append(time.perf_counter() - t)
                errors += status != 200
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    out: dict[str, Any] = {
        "rps": len(lat) / took,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "errors": errors,
        "requests": len(lat),
    }
    if keep:  # each request's ms, for callers that pool rounds
        out["latencies"] = lat.tolist()
    return out


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of a process, by thread id (Linux /proc;
    a thread that ended between the listing and the read is left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after the name, which may hold spaces
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def cpu_split(
    pid: int, before: dict[int, float], after: dict[int, float], requests: int
) -> dict[str, float]:
    """CPU milliseconds per request between two `thread_cpu` readings of a server: its main
    thread (the event loop) and every other thread (model calls, worker threads)."""
    loop = after.get(pid, 0.0) - before.get(pid, 0.0)
    rest = sum(v - before.get(t, 0.0) for t, v in after.items() if t != pid)
    n = max(1, requests)
    return {"loop_cpu_ms": 1000 * loop / n, "model_cpu_ms": 1000 * rest / n}


def raw_engine(model_dir: Path, texts: list[str], seconds: float) -> tuple[float, float]:
    """Messages per second of the scoring core alone, batches of 32, spread over the cores as
    the service spreads its model calls (ST_MODEL_RUNS calls at once, ST_THREADS each): the
    ceiling the service's HTTP path is measured against; and its CPU milliseconds per message
    (this process's CPU time over the timed part)."""
    import threading

    from service.settings import Settings

    runs, threads = Settings(auth_required=False).model_parallelism()
    clf = Classifier(ModelArtifact.load(model_dir), threads=threads, batch_size=32)
    clf.score_texts(texts[:32])  # warm-up
    done = [0] * runs
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        k = i * (len(texts) // runs)
        while time.perf_counter() < stop:
            chunk = texts[k % len(texts) : k % len(texts) + 32]
            k += 32
            clf.score_texts(chunk)
            done[i] += len(chunk)

    start, cpu = time.perf_counter(), time.process_time()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(runs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    cpu, took = time.process_time() - cpu, time.perf_counter() - start
    return sum(done) / took, 1000 * cpu / max(1, sum(done))


class ScoringCore:
    """The scoring core alone on one text at a time (normalise, tokenise, one onnxruntime call
    at batch 1, on as many threads as the service gives a call that runs alone, as every call
    at concurrency 1 does): the floor under the service's latency at concurrency 1."""

    def __init__(self, model_dir: Path, texts: list[str]) -> None:
        from service.settings import Settings

        settings = Settings(auth_required=False)
        threads = settings.lone_call_threads() or settings.model_parallelism()[1]
        self.clf = Classifier(ModelArtifact.load(model_dir), threads=threads)
        self.texts, self.k = texts, 0
        self.clf.score_texts(texts[:8])  # warm-up

    def latencies(self, seconds: float) -> list[float]:
        """ms of each call, for about `seconds`."""
        lat, start = [], time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            self.clf.score_texts([self.texts[self.k % len(self.texts)]])
            lat.append((time.perf_counter() - t) * 1000)
            self.k += 1
        return lat


WARM_UP_S = 1.0  # of each round, not counted: the other side has just had the cores


def overhead_rounds(
    url: str, core: ScoringCore, texts: list[str], rounds: int, seconds: float
) -> dict[str, float]:
    """The service at concurrency 1 and the scoring core alone, in alternating rounds of
    `seconds` each (this machine drifts by more than the overhead between runs minutes apart):
    p50 of each side over all its rounds, and the median of the rounds' differences."""
    service: list[float] = []
    alone: list[float] = []
    diffs = []
    for r in range(rounds):
        part = texts[r * len(texts) // rounds : (r + 1) * len(texts) // rounds]
        asyncio.run(load(url, part[::-1], 1, WARM_UP_S))  # each side warm again first
        s = asyncio.run(load(url, part, 1, seconds, keep=True))["latencies"]
        core.latencies(WARM_UP_S)
        c = core.latencies(seconds)
        service += s
        alone += c
        diffs.append(float(np.percentile(s, 50) - np.percentile(c, 50)))
    return {
        "service_p50_ms": float(np.percentile(service, 50)),
        "core_p50_ms": float(np.percentile(alone, 50)),
        "overhead_ms": float(np.median(diffs)),
        "rounds": rounds,
    }


async def resend(url: str, reps: int) -> dict[str, float]:
    """Mean latency of a fresh one-message transcript vs a 20-message one re-sent plus one."""
    one, grown = [], []
    async with httpx.AsyncClient(timeout=60) as client:
        for r in range(reps):
            convo = [
                {
                    "role": "user" if i % 2 == 0 else "assistant",
                    "content": f"turn {i} of chat {r}: planning a weekend in the mountains",
                }
                for i in range(20)
            ]
            await client.post(url, json={"messages": convo})  # the pipeline saw it before
            new = {"role": "user", "content": f"chat {r}: what should I pack for the rain?"}
            t = time.perf_counter()
            await client.post(url, json={"messages": [*convo, new]})
            grown.append(time.perf_counter() - t)
            single = {"role": "user", "content": f"chat {r}: a fresh question about packing"}
            t = time.perf_counter()
            await client.post(url, json={"messages": [single]})
            one.append(time.perf_counter() - t)
    return {"one_ms": 1000 * float(np.mean(one)), "resend_ms": 1000 * float(np.mean(grown))}


async def batch_form(url: str, texts: list[str], reps: int, size: int = 64) -> dict[str, float]:
    """Messages per second of one request carrying `size` one-message transcripts (the batch
    form of /v1/classify) against `size` concurrent one-transcript requests, same texts,
    alternating, `reps` times each (cache off: every message costs model time)."""
    parsed = httpx.URL(url)
    batch_s, singles_s = [], []
    for r in range(reps):
        chunk = texts[r * size : (r + 1) * size]
        if len(chunk) < size:
            break
        body = json.dumps(
            {
                "transcripts": [
                    {"id": str(i), "messages": [{"role": "user", "content": t}]}
                    for i, t in enumerate(chunk)
                ]
            }
        ).encode()
        conn = Connection(parsed.host, int(parsed.port or 80))
        t = time.perf_counter()
        status, _, _ = await conn.post(parsed.path, body)
        batch_s.append(time.perf_counter() - t)
        conn.close()
        if status != 200:
            raise RuntimeError(f"batch form answered {status}")
        other = texts[(reps + r) * size : (reps + r + 1) * size]  # same lengths, new texts
        conns = [Connection(parsed.host, int(parsed.port or 80)) for _ in other]
        t = time.perf_counter()
        answers = await asyncio.gather(
            *(c.post(parsed.path, transcript_body(x)) for c, x in zip(conns, other, strict=True))
        )
        singles_s.append(time.perf_counter() - t)
        for c in conns:
            c.close()
        if any(a[0] != 200 for a in answers):
            raise RuntimeError("a single request failed")
    return {
        "batch_msg_s": size * len(batch_s) / sum(batch_s),
        "singles_msg_s": size * len(singles_s) / sum(singles_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=os.environ.get("ST_MODEL_DIR", ""))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--record", default=None, help="also write the figures to DIR/http_load.json"
    )
    args = parser.parse_args()
    from service.settings import DEFAULT_MODEL_DIR

    model_dir = Path(args.model_dir) if args.model_dir else DEFAULT_MODEL_DIR
    name = ModelArtifact.load(model_dir).name
    texts = texts_of_realistic_length(20_000)
    print(
        f"model {name}; texts: test-split messages, mean {np.mean([len(t) for t in texts]):.0f}"
        f" chars; {args.seconds:.0f} s per run"
    )

    port = free_port()
    env = service_env(model_dir, port)
    service = subprocess.Popen([sys.executable, "-m", "service", "serve"], env=env)
    rows: dict[str, dict[str, float]] = {}
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", service)
        for c in (1, 8, 32):
            before = thread_cpu(service.pid)
            row = asyncio.run(load(f"http://127.0.0.1:{port}/v1/classify", texts, c, args.seconds))
            row.update(cpu_split(service.pid, before, thread_cpu(service.pid), row["requests"]))
            rows[f"service c={c}"] = row
        # the overhead above the scoring core: both sides in alternating rounds, same texts
        core = ScoringCore(model_dir, texts)
        over = overhead_rounds(
            f"http://127.0.0.1:{port}/v1/classify", core, texts, 4, args.seconds / 2
        )
        del core
    finally:
        service.terminate()
        service.wait(30)
    raw_rps, raw_cpu = raw_engine(model_dir, texts, args.seconds)
    rows["raw engine"] = {"rps": raw_rps, "model_cpu_ms": raw_cpu}

    checkpoint = REPO / "runs" / name / "checkpoint"
    artifact = ModelArtifact.load(model_dir)
    naive_model = str(checkpoint) if checkpoint.exists() else artifact.base_model
    print(
        "naive baseline: "
        + (
            f"the fine-tuned PyTorch weights of {checkpoint.relative_to(REPO)}"
            if checkpoint.exists()
            else f"base model {naive_model} with an untrained head of the same shape"
        )
    )
    if naive_model:
        nport = free_port()
        naive = subprocess.Popen(
            [sys.executable, str(REPO / "bench/naive_server.py"), naive_model, str(nport)]
        )
        try:
            wait_ready(f"http://127.0.0.1:{nport}/docs", naive, seconds=900)  # may convert e5
            rows["naive c=32"] = asyncio.run(
                load(f"http://127.0.0.1:{nport}/v1/classify", texts, 32, args.seconds)
            )
        finally:
            naive.terminate()
            naive.wait(30)

    port = free_port()
    env.update({"ST_PORT": str(port)})
    service = subprocess.Popen([sys.executable, "-m", "service", "serve"], env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", service)
        bf = asyncio.run(batch_form(f"http://127.0.0.1:{port}/v1/classify", texts, 8))
    finally:
        service.terminate()
        service.wait(30)

    port = free_port()
    env.update({"ST_PORT": str(port), "ST_CACHE_ENTRIES": "100000"})
    service = subprocess.Popen([sys.executable, "-m", "service", "serve"], env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", service)
        rs = asyncio.run(resend(f"http://127.0.0.1:{port}/v1/classify", 30))
    finally:
        service.terminate()
        service.wait(30)

    nan = float("nan")
    print(
        f"\n{'run':<16}{'msg/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'loop CPU ms/msg':>17}{'model CPU ms/msg':>18}"
    )
    for k, v in rows.items():
        print(
            f"{k:<16}{v['rps']:>9.1f}{v.get('p50', nan):>9.1f}{v.get('p99', nan):>9.1f}"
            f"{int(v.get('errors', 0)):>8}{v.get('loop_cpu_ms', nan):>17.2f}"
            f"{v.get('model_cpu_ms', nan):>18.2f}"
        )
    ratios = {
        "service_vs_raw_c32": rows["service c=32"]["rps"] / rows["raw engine"]["rps"],
        "resend_vs_one": rs["resend_ms"] / rs["one_ms"],
        "batch_form_vs_singles": bf["batch_msg_s"] / bf["singles_msg_s"],
    }
    if "naive c=32" in rows:
        ratios["service_vs_naive_c32"] = rows["service c=32"]["rps"] / rows["naive c=32"]["rps"]
    one = rows["service c=1"]["p50"]
    print(f"\none-message transcript, concurrency 1: p50 {one:.1f} ms")
    print(
        f"overhead above the scoring core alone (batch 1, same texts), {over['rounds']} "
        f"alternating rounds: service p50 {over['service_p50_ms']:.2f} ms, core p50 "
        f"{over['core_p50_ms']:.2f} ms, median difference {over['overhead_ms']:.2f} ms "
        f"(target < 2: {'yes' if over['overhead_ms'] < 2 else 'no'})"
    )
    print(f"re-send 20+1 messages: {rs['resend_ms']:.1f} ms vs one message {rs['one_ms']:.1f} ms")
    print(
        f"one request of 64 one-message transcripts: {bf['batch_msg_s']:.1f} msg/s vs 64 "
        f"concurrent single requests {bf['singles_msg_s']:.1f} msg/s"
    )
    print("\nratio                       value   target  met")
    for k, v in ratios.items():
        t = TARGETS[k]
        met = v <= t if k == "resend_vs_one" else v >= t
        print(f"{k:<26}{v:>7.2f}{'<=' if k == 'resend_vs_one' else '>='}{t:>6.2f}  {met}")
    figures = {
        "model": f"{name} {artifact.version}",
        "naive": "fine-tuned checkpoint" if checkpoint.exists() else "base model, untrained head",
        "rows": rows,
        "ratios": ratios,
        "resend": rs,
        "batch_form": bf,
        "model_call_p50_ms": over["core_p50_ms"],
        "overhead_service_p50_ms": over["service_p50_ms"],
        "overhead_rounds": over["rounds"],
        "overhead_ms": over["overhead_ms"],
    }
    print(json.dumps(figures))
    save(args.record, "http_load", figures)


if __name__ == "__main__":
    main()
