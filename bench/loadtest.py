"""`make loadtest`: the service at twice its measured capacity, on loopback, bounded in time.

1. Measure capacity: closed loop, 16 concurrent clients, one-message transcripts.
2. Offer 2x that rate, open loop, for --seconds: the excess must be shed at once (503 with
   Retry-After), no 200 may carry a wrong answer, memory must stay under --max-rss-mb.
3. Drop the load: the service must answer correctly again at once.
Prints the figures; exits non-zero if a guarantee does not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.http_load import Connection, free_port
from service.artifact import ModelArtifact
from service.classifier import Classifier

PATH = "/v1/classify"
SAFE_MARGIN = 0.1  # texts whose scores sit this far from every threshold: flags cannot flip

TEXTS = [
    "I was diagnosed with type 2 diabetes last month",
    "Which party should I vote for in the election?",
    "We fast during Ramadan and pray at the mosque",
    "Recommend hiking boots for rocky trails",
    "How do I reverse a linked list in Python?",
    "my therapist upped my antidepressant dose and now i can't sleep",
    "Can you help me write a letter to my MP opposing the new immigration bill?",
    "What's a good recipe for banana bread without nuts?",
]


@dataclass
class Figures:
    offered: int = 0
    served: int = 0
    shed: int = 0
    other: int = 0
    wrong: int = 0
    left_in_generator: int = 0
    latencies: list[float] = field(default_factory=list)


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def served_buckets(url: str) -> dict[float, float]:
    """Cumulative counts of the server's own latency histogram for served classify calls."""
    out: dict[float, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("st_request_seconds_bucket{") and 'route="/v1/classify"' in line:
            if 'status="200"' in line:
                le = line.split('le="')[1].split('"')[0]
                out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def server_p99_ms(before: dict[float, float], after: dict[float, float]) -> float:
    """Upper bound of the histogram bucket holding the 99th percentile of the requests served
    between two scrapes: the service's own latency, without the load generator's queueing."""
    delta = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in sorted(after)}
    total = delta.get(float("inf"), 0.0)
    for le, count in delta.items():
        if total and count >= 0.99 * total:
            return le * 1000
    return float("nan")


def expected_flags(model_dir: Path) -> dict[str, dict[str, bool]]:
    """What the model says, computed in-process, for texts far from every threshold."""
    clf = Classifier(ModelArtifact.load(model_dir))
    out = {}
    for text, s in zip(TEXTS, clf.score_texts(TEXTS), strict=True):
        if all(
            abs(s.scores[lab] - clf.artifact.thresholds[lab]) > SAFE_MARGIN for lab in clf.labels
        ):
            out[text] = s.flags
    return out


async def one(
    conn: Connection,
    text: str,
    figs: Figures,
    expected: dict[str, dict[str, bool]],
    timeout: float = 30.0,
) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": text}]}).encode()
    t = time.perf_counter()
    try:
        status, headers, out = await asyncio.wait_for(conn.post(PATH, body), timeout)
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError):
        conn.close()
        conn.writer = None
        figs.other += 1
        return
    if status == 200:
        figs.served += 1
        figs.latencies.append(time.perf_counter() - t)
        if json.loads(out)["transcript"]["flags"] != expected[text]:
            figs.wrong += 1
    elif status in (429, 503):
        figs.shed += 1
        assert "retry-after" in headers
    else:
        figs.other += 1


async def capacity(
    host: str, port: int, texts: list[str], seconds: float, expected: dict[str, dict[str, bool]]
) -> float:
    figs, stop = Figures(), time.monotonic() + seconds

    async def worker(k: int) -> None:
        conn, i = Connection(host, port), k
        while time.monotonic() < stop:
            await one(conn, texts[i % len(texts)], figs, expected)
            i += 16
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(16)))
    return figs.served / (time.perf_counter() - started)


async def overload(
    host: str,
    port: int,
    texts: list[str],
    rate: float,
    seconds: float,
    expected: dict[str, dict[str, bool]],
    connections: int = 128,
) -> Figures:
    """Open loop: requests fall due at `rate`; each is sent on a free connection of a pool of
    `connections` (a request that finds none waits in the generator, and its wait is not
    the server's latency)."""
    figs = Figures()
    due: asyncio.Queue[int | None] = asyncio.Queue()

    async def sender() -> None:
        conn = Connection(host, port)
        while (k := await due.get()) is not None:
            await one(conn, texts[k % len(texts)], figs, expected)
        conn.close()

    senders = [asyncio.create_task(sender()) for _ in range(connections)]
    start, k = time.monotonic(), 0
    while (now := time.monotonic()) - start < seconds:
        while k < int((now - start) * rate):
            due.put_nowait(k)
            k += 1
        await asyncio.sleep(0.002)
    figs.offered = k
    figs.left_in_generator = due.qsize()
    for _ in senders:
        due.put_nowait(None)
    await asyncio.gather(*senders)
    return figs


def run(model_dir: Path, seconds: float, max_rss_mb: float) -> bool:
    expected = expected_flags(model_dir)
    texts = list(expected)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ST_")}
    env.update(
        {
            "ST_AUTH_REQUIRED": "false",
            "ST_MODEL_DIR": str(model_dir),
            "ST_PORT": str(port),
            "ST_LOG_LEVEL": "warning",
            "ST_CACHE_ENTRIES": "0",
            "ST_QUEUE_MAX_WINDOWS": "256",
            "ST_MAX_INFLIGHT": "16",
        }
    )
    proc = subprocess.Popen([sys.executable, "-m", "service", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        cap = asyncio.run(capacity("127.0.0.1", port, texts, min(5.0, seconds), expected))
        before = served_buckets(url)
        figs = asyncio.run(overload("127.0.0.1", port, texts, 2 * cap, seconds, expected))
        server_p99 = server_p99_ms(before, served_buckets(url))
        time.sleep(1.0)
        after = Figures()

        async def recover() -> None:
            conn = Connection("127.0.0.1", port)
            for i in range(20):
                await one(conn, texts[i % len(texts)], after, expected, timeout=10)
            conn.close()

        asyncio.run(recover())
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    p99 = float(np.percentile(figs.latencies, 99) * 1000) if figs.latencies else float("nan")
    print(f"capacity (16 clients, closed loop): {cap:.1f} req/s")
    print(
        f"offered {figs.offered} at {2 * cap:.1f} req/s for {seconds:.0f} s: served "
        f"{figs.served}, shed {figs.shed} (503), other {figs.other}, wrong answers "
        f"{figs.wrong}, still queued in the generator at the end {figs.left_in_generator}"
        f"; p99 of served: {server_p99:.0f} ms in the server (its latency "
        f"histogram, bucket bound), {p99:.0f} ms at the load generator"
    )
    print(
        f"peak server memory {rss:.0f} MB (bound {max_rss_mb:.0f} MB); after the load: "
        f"{after.served}/20 served, {after.wrong} wrong"
    )
    ok = (
        figs.wrong == 0
        and figs.other == 0
        and figs.shed > 0
        and rss < max_rss_mb
        and after.served == 20
        and after.wrong == 0
    )
    print("guarantees hold" if ok else "GUARANTEE BROKEN")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=os.environ.get("ST_MODEL_DIR", ""))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-rss-mb", type=float, default=1500.0)
    args = parser.parse_args()
    from service.settings import DEFAULT_MODEL_DIR

    model_dir = Path(args.model_dir) if args.model_dir else DEFAULT_MODEL_DIR
    sys.exit(0 if run(model_dir, args.seconds, args.max_rss_mb) else 1)


if __name__ == "__main__":
    main()
