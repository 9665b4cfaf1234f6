"""The typed client fails closed: empty set on any error, retries only what is worth it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx

from service.client import AsyncClient, Client
from tests.robustness.test_process import start

MESSAGES = [{"role": "user", "content": "Recommend hiking boots for rocky trails"}]
SIGNALS = [{"id": "boots", "text": "hiking boots", "source_messages": [0]}]
ANSWER = {"decisions": [{"id": "boots", "decision": "allowed", "reasons": []}]}


def scripted(*answers: tuple[int, dict[str, str]]) -> tuple[httpx.MockTransport, list[float]]:
    """A transport answering in turn with (status, headers); 200 carries ANSWER."""
    seen: list[float] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        status, headers = queue.pop(0) if queue else (200, {})
        body = ANSWER if status == 200 else {"code": "overloaded", "message": "", "errors": []}
        return httpx.Response(status, headers=headers, content=json.dumps(body))

    return httpx.MockTransport(handle), seen


def test_a_503_is_retried_after_its_retry_after() -> None:
    transport, seen = scripted((503, {"retry-after": "0.3"}), (200, {}))
    with Client("http://st", "k" * 16, transport=transport) as c:
        assert c.screen(MESSAGES, SIGNALS, "US") == {"boots"}
    assert len(seen) == 2 and seen[1] - seen[0] >= 0.29


def test_any_other_error_is_the_empty_set_without_retry() -> None:
    for status in (400, 401, 413, 422, 500):
        transport, seen = scripted((status, {}))
        with Client("http://st", transport=transport) as c:
            assert c.screen(MESSAGES, SIGNALS, "US") == set()
        assert len(seen) == 1, status


def test_not_our_json_is_the_empty_set() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=b"<html>proxy</html>"))
    with Client("http://st", transport=transport) as c:
        assert c.screen(MESSAGES, SIGNALS, "US") == set()
    odd = httpx.MockTransport(lambda r: httpx.Response(200, json={"decisions": [{"x": 1}]}))
    with Client("http://st", transport=odd) as c:
        assert c.screen(MESSAGES, SIGNALS, "US") == set()


def test_a_live_server_killed_midway(judged_model_dir: Path) -> None:
    """Allowed while it runs; the empty set, quickly, once it is gone (sync and async)."""
    proc, url = start(judged_model_dir, ST_REGION_REQUIRED="true")
    try:
        with Client(url, timeout=5) as c:
            assert c.screen(MESSAGES, SIGNALS, "US") == {"boots"}
            assert c.screen(MESSAGES, SIGNALS, None) == set()  # no region: blocked
            proc.kill()
            proc.wait(10)
            t = time.monotonic()
            assert c.screen(MESSAGES, SIGNALS, "US") == set()
            assert time.monotonic() - t < 5

        async def gone() -> set[str]:
            async with AsyncClient(url, timeout=1) as ac:
                return await ac.screen(MESSAGES, SIGNALS, "US")

        assert asyncio.run(gone()) == set()
    finally:
        proc.kill()
