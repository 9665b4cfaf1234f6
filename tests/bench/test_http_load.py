"""bench/http_load.py: where a server's CPU went, per thread, read from /proc."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from bench.http_load import cpu_split, thread_cpu


def test_a_busy_worker_thread_is_charged_to_the_model_side_not_the_loop() -> None:
    pid = os.getpid()
    before = thread_cpu(pid)
    assert pid in before  # the main thread is listed under the process id
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    def charged(now: dict[int, float]) -> float:
        return cpu_split(pid, before, now, requests=1)["model_cpu_ms"] / 1000

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        # the main thread mostly sleeps while the worker spins, until the worker has been
        # charged 0.1 s of CPU (bounded: on a loaded machine the worker may get little of it)
        deadline = time.monotonic() + 60
        after = thread_cpu(pid)  # read while the worker still exists
        while charged(after) < 0.1 and time.monotonic() < deadline:
            time.sleep(0.05)
            after = thread_cpu(pid)
    finally:
        stop.set()
        worker.join()
    split = cpu_split(pid, before, after, requests=10)
    assert split["model_cpu_ms"] >= 10.0  # >= 0.1 s of CPU over 10 requests
    assert split["loop_cpu_ms"] < split["model_cpu_ms"] / 2
    assert cpu_split(pid, before, before, requests=0) == {"loop_cpu_ms": 0.0, "model_cpu_ms": 0.0}


def test_a_servers_cpu_counts_the_processes_it_started() -> None:
    """bench/peers.py charges a server with its own threads and its children's (a server may
    answer from worker processes): a parent that only sleeps, whose child spins."""
    import subprocess
    import sys

    from bench.peers import process_cpu

    child = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    child += "print(flush=True)\ntime.sleep(60)"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"p = subprocess.Popen([sys.executable, '-c', {child!r}])\n"
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None
        parent.stdout.readline()  # the child has spun 0.3 s of CPU
        assert process_cpu(parent.pid) >= 0.25
        assert sum(thread_cpu(parent.pid).values()) < 0.25  # not the parent's own
    finally:
        for tid in Path(f"/proc/{parent.pid}/task").iterdir():
            for pid in (tid / "children").read_text().split():
                os.kill(int(pid), 9)
        parent.kill()
        parent.wait()
