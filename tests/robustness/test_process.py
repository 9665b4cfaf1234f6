"""The server process: SIGTERM drains in-flight requests and exits 0; workers each serve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from bench.http_load import free_port


def start(model_dir: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ST_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"],
        env={
            **clean,
            "ST_AUTH_REQUIRED": "false",
            "ST_MODEL_DIR": str(model_dir),
            "ST_PORT": str(port),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def test_sigterm_drains_in_flight_requests(shipped_model_dir: Path) -> None:
    proc, url = start(shipped_model_dir)
    body = {
        "messages": [{"role": "user", "content": f"long message {i} " * 40} for i in range(150)]
    }
    results: list[int] = []

    def call() -> None:
        try:
            results.append(httpx.post(f"{url}/v1/classify", json=body, timeout=60).status_code)
        except httpx.HTTPError:
            results.append(-1)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # requests are in flight
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(90)
    code = proc.wait(60)
    assert results == [200, 200, 200, 200]
    assert code == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)  # new requests are refused


@pytest.mark.slow
def test_two_workers_each_hold_a_model(shipped_model_dir: Path) -> None:
    proc, url = start(shipped_model_dir, ST_WORKERS="2")
    try:
        for _ in range(10):
            r = httpx.post(
                f"{url}/v1/classify",
                timeout=30,
                json={"messages": [{"role": "user", "content": "Which party should I vote for?"}]},
            )
            assert r.status_code == 200 and r.json()["transcript"]["flags"]["politics"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    logs = [json.loads(x) for x in proc.stderr.read().decode().splitlines() if x.startswith("{")]
    assert sum(1 for x in logs if x.get("event") == "ready") == 2
