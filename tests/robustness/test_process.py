"""The server process: SIGTERM drains in-flight requests and exits 0; workers each serve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx
import pytest

from bench.http_load import free_port


class Served(subprocess.Popen[bytes]):
    """A server process whose output is read as it comes: a pipe nobody reads fills up, and a
    server blocked writing a log line serves nothing more (nor exits on SIGTERM)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        super().__init__(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[bytes] = []
        self._drains = [
            threading.Thread(target=self._drain, args=(pipe,), daemon=True)
            for pipe in (self.stdout, self.stderr)
        ]
        for t in self._drains:
            t.start()

    def _drain(self, pipe: IO[bytes] | None) -> None:
        for line in pipe or ():
            self.lines.append(line)

    def logs(self) -> list[dict[str, object]]:
        """The JSON log lines written so far (all of them once the process has exited)."""
        if self.poll() is not None:
            for t in self._drains:
                t.join(10)
        return [json.loads(x) for x in list(self.lines) if x.startswith(b"{")]


def start(model_dir: Path, **env: str) -> tuple[Served, str]:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ST_")}
    proc = Served(
        [sys.executable, "-m", "service", "serve"],
        {
            **clean,
            "ST_AUTH_REQUIRED": "false",
            "ST_MODEL_DIR": str(model_dir),
            "ST_PORT": str(port),
            **env,
        },
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


@pytest.mark.parametrize("setting, loop", [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_the_server_runs_on_the_event_loop_it_is_told(
    shipped_model_dir: Path, setting: str, loop: str
) -> None:
    """`auto` (the default) serves on uvloop where it is installed (a dependency on Linux);
    `asyncio` on asyncio's own loop; either answers."""
    pytest.importorskip("uvloop")
    proc, url = start(shipped_model_dir, ST_EVENT_LOOP=setting)
    try:
        body = {"messages": [{"role": "user", "content": POLITICAL}]}
        r = httpx.post(f"{url}/v1/classify", json=body, timeout=30)
        assert r.status_code == 200 and r.json()["transcript"]["flags"] == EXPECTED[POLITICAL]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    ready = [x for x in proc.logs() if x.get("event") == "ready"]
    assert len(ready) == 1 and ready[0]["event_loop"] == loop


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
    assert sum(1 for x in proc.logs() if x.get("event") == "ready") == 2


POLITICAL = "Which party should I vote for in the election?"
NEUTRAL = "What's a good recipe for banana bread without nuts?"
EXPECTED = {
    POLITICAL: {"health": False, "religion": False, "politics": True},
    NEUTRAL: {"health": False, "religion": False, "politics": False},
}


def workers_of(pid: int) -> set[int]:
    """Live uvicorn workers of `pid`: its spawned multiprocessing children (not a helper)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue  # it exited meanwhile
        state, ppid = fields[0], int(fields[1])
        spawned = b"--multiprocessing-fork" in cmdline and not any(
            b"resource_tracker" in arg for arg in cmdline
        )
        if ppid == pid and state not in "ZX" and spawned:
            found.add(int(entry.name))
    return found


def connections_of(pid: int, port: int) -> int:
    """Open client connections (ESTABLISHED on the server's port) that process `pid` holds."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            local_port = int(cols[1].rsplit(":", 1)[1], 16)
            count += local_port == port and cols[3] == "01" and cols[9] in inodes
    return count


def ask(client: httpx.Client, url: str, text: str) -> str:
    """One request: 'ok' (right answer), 'wrong' (a 200 with a wrong one), 'error', 'timeout'."""
    body = {"messages": [{"role": "user", "content": text}]}
    try:
        r = client.post(f"{url}/v1/classify", json=body)
    except httpx.TimeoutException:
        return "timeout"  # no answer within the client's timeout: a lost request
    except httpx.TransportError:
        return "error"  # connection reset / closed by a dying worker: an error answer
    if r.status_code != 200:
        return "error"
    return "ok" if r.json()["transcript"]["flags"] == EXPECTED[text] else "wrong"


def test_killed_worker_is_replaced_and_no_request_is_lost(shipped_model_dir: Path) -> None:
    proc, url = start(shipped_model_dir, ST_WORKERS="2")
    outcomes: list[tuple[float, str]] = []
    stop = threading.Event()
    give_up = time.monotonic() + 120  # every loop below is bounded

    def drive(n: int) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set() and time.monotonic() < give_up:
                outcome = ask(client, url, (POLITICAL, NEUTRAL)[n % 2])
                outcomes.append((time.monotonic(), outcome))
                n += 1

    def wait_for(cond: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.1)
        return cond()

    def ready_events() -> int:
        return sum(1 for x in proc.logs() if x.get("event") == "ready")

    load = [threading.Thread(target=drive, args=(i,), daemon=True) for i in range(8)]
    try:
        assert wait_for(lambda: len(workers_of(proc.pid)) == 2, 10)
        before = workers_of(proc.pid)
        for t in load:
            t.start()
        assert wait_for(lambda: sum(o == "ok" for _, o in outcomes) >= 50, 30), "no load"
        # Kill the worker holding the most client connections: it is serving requests now.
        port = int(url.rsplit(":", 1)[1])
        held = {pid: connections_of(pid, port) for pid in before}
        victim = max(held, key=lambda pid: held[pid])
        assert held[victim] > 0, held
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        # The supervisor notices and starts a replacement, which loads its own model.
        def replaced() -> bool:
            now = workers_of(proc.pid)
            return len(now) == 2 and victim not in now and len(now - before) == 1

        assert wait_for(replaced, 30), f"no replacement: {before} -> {workers_of(proc.pid)}"
        after = workers_of(proc.pid)
        assert wait_for(lambda: ready_events() == 3, 30), "the replacement never became ready"
        time.sleep(1)  # keep the load on both workers for a moment
        stop.set()
        for t in load:
            t.join(35)
        assert not any(t.is_alive() for t in load), "a request hung past its timeout"

        counts = {k: sum(o == k for _, o in outcomes) for k in ("ok", "error", "wrong", "timeout")}
        print(f"workers {sorted(before)} -> {sorted(after)}, connections {held}: {counts}")
        assert counts["wrong"] == 0 and counts["timeout"] == 0, counts
        assert counts["ok"] + counts["error"] == len(outcomes)  # every request was answered
        assert any(o == "ok" and at > killed_at for at, o in outcomes), "no success after kill"

        # Served again: a fresh connection each time (so either worker may answer), all right.
        served = []
        for i in range(20):
            with httpx.Client(timeout=30) as client:
                served.append(ask(client, url, (POLITICAL, NEUTRAL)[i % 2]))
        assert served == ["ok"] * 20, served
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
    assert ready_events() == 3  # two workers at start, one replacement: one model each
