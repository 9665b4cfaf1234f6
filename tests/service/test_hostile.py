"""Hostile and careless clients, in process: each case was a hole before it had this test."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.admission import Admission
from service.app import create_app
from service.artifact import ModelArtifact
from service.batching import MicroBatcher
from service.classifier import Classifier
from service.settings import Settings

KEY_A, KEY_B = "key-a-0123456789abcdef", "key-b-0123456789abcdef"
SECRET = "my-secret-diagnosis-text"


@pytest.fixture(scope="module")
def keyed(shipped_model_dir: Path) -> Iterator[TestClient]:
    settings = Settings(model_dir=shipped_model_dir, api_keys=f"{KEY_A},{KEY_B}")
    with TestClient(create_app(settings)) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- errors are always the documented JSON ----------------------------------------------------
def test_a_lone_surrogate_is_422_naming_the_field(keyed: TestClient) -> None:
    raw = b'{"messages": [{"role": "user", "content": "abc \\ud800 def"}]}'
    r = keyed.post(
        "/v1/classify", content=raw, headers={**auth(KEY_A), "content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "messages[0].content"


def test_unknown_field_names_and_ids_are_not_echoed(keyed: TestClient) -> None:
    body = {"messages": [{"role": "user", "content": "hi", "made_up_field_7x": 1}]}
    r = keyed.post("/v1/classify", json=body, headers=auth(KEY_A))
    assert r.status_code == 422
    assert "made_up_field_7x" not in r.text
    assert r.json()["errors"][0] == {
        "field": "messages[0]",
        "problem": "unknown field (not part of the schema)",
    }
    bad_source = {
        "messages": [{"role": "user", "content": "hi"}],
        "signals": [{"id": "caller-id-93", "text": "boots", "source_messages": [4]}],
        "region": "US",
    }
    r = keyed.post("/v1/screen", json=bad_source, headers=auth(KEY_A))
    assert r.status_code == 422 and "caller-id-93" not in r.text
    assert "signals[0].source_messages[0]" in r.json()["message"]


class Exploding(Classifier):
    """A classifier whose model run fails with the text in the exception's message."""

    def run(self, sequences: Any) -> Any:
        raise RuntimeError(f"failed on {SECRET}")


def test_a_500_is_json_with_the_request_id_and_no_text(
    shipped_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clf = Exploding(ModelArtifact.load(shipped_model_dir))
    app = create_app(Settings(model_dir=shipped_model_dir, auth_required=False), clf)
    caplog.set_level(logging.INFO)
    with TestClient(app, raise_server_exceptions=False) as c:
        body = {"messages": [{"role": "user", "content": SECRET}]}
        r = c.post("/v1/classify", json=body, headers={"x-request-id": "req-500-test"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"] == "req-500-test"
    assert r.json()["code"] == "internal_error" and "req-500-test" in r.json()["message"]
    assert SECRET not in r.text
    errors = [x for x in caplog.records if x.getMessage() == "unhandled error"]
    assert errors and errors[0].fields == {  # type: ignore[attr-defined]
        "request_id": "req-500-test",
        "exception": "RuntimeError",
    }
    assert all(SECRET not in x.getMessage() for x in caplog.records)


# -- raw ASGI: framing, auth before the body, slow bodies ---------------------------------------
async def call(
    app: Any,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    stall: bool = False,
    path: str = "/v1/classify",
) -> list[dict[str, Any]]:
    """One request straight through the ASGI app; `stall` never sends the rest of the body."""
    sent: list[dict[str, Any]] = []
    queue = list(chunks)

    async def receive() -> dict[str, Any]:
        if queue:
            chunk = queue.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(queue) or stall}
        await asyncio.sleep(3600 if stall else 0.01)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
        "scheme": "http",
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    return sent


def status_of(sent: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(start["status"]), json.loads(body)


def admission(**kw: Any) -> Admission:
    async def route(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        data = json.dumps({"read": len(message.get("body", b""))}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": data})

    args: dict[str, Any] = {
        "keys": [KEY_A.encode()],
        "protected": lambda p: p.startswith("/v1/"),
        "scoring": lambda p: p.startswith("/v1/"),
        "max_body_bytes": 1_000,
        "body_timeout_s": 0.3,
        "max_inflight": 4,
    }
    return Admission(route, **{**args, **kw})


KEYED = [(b"authorization", f"Bearer {KEY_A}".encode())]


def test_content_length_and_transfer_encoding_together_is_400() -> None:
    headers = [*KEYED, (b"content-length", b"2"), (b"transfer-encoding", b"chunked")]
    status, body = status_of(asyncio.run(call(admission(), headers, [b"{}"])))
    assert status == 400 and body["code"] == "invalid_body"


def test_a_chunked_body_over_the_limit_is_413() -> None:
    headers = [*KEYED, (b"transfer-encoding", b"chunked")]
    status, body = status_of(asyncio.run(call(admission(), headers, [b"x" * 600, b"x" * 600])))
    assert status == 413 and body["limit"] == {"name": "max_body_bytes", "value": 1000}


def test_no_key_is_401_before_the_body_is_read_or_a_slot_taken() -> None:
    gate = admission(max_inflight=1)
    headers = [(b"content-length", b"500")]
    status, body = status_of(asyncio.run(call(gate, headers, [b"x"], stall=True)))
    assert status == 401 and body["code"] == "unauthorized"  # at once, though the body stalls
    assert gate.in_flight == 0


def test_a_slow_body_is_408_and_frees_its_slot() -> None:
    gate = admission(max_inflight=1)
    headers = [*KEYED, (b"content-length", b"500")]
    status, body = status_of(asyncio.run(call(gate, headers, [b"x" * 10], stall=True)))
    assert status == 408 and body["code"] == "body_timeout"
    assert gate.in_flight == 0
    status, body = status_of(asyncio.run(call(gate, [*KEYED], [b"{}"])))
    assert status == 200 and body == {"read": 2}


# -- a client that has gone leaves no work behind --------------------------------------------
def test_work_queued_by_a_client_that_has_gone_is_dropped() -> None:
    runs: list[int] = []

    def slow_run(seqs: Any) -> Any:
        runs.append(len(seqs))
        import time

        time.sleep(0.3)
        return np.zeros((len(seqs), 3), np.float32)

    async def go() -> tuple[int, int]:
        batcher = MicroBatcher(slow_run, max_windows=4, wait_ms=0)
        batcher.start()
        first = asyncio.create_task(batcher.submit([[1, 2]] * 4))  # running
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(batcher.submit([[1, 2]] * 12))  # 3 runs' worth, queued
        await asyncio.sleep(0.05)
        gone.cancel()
        await first
        await asyncio.sleep(0.5)
        await batcher.stop()
        return sum(runs), batcher.stats.queued_windows

    ran, queued = asyncio.run(go())
    assert ran == 4  # only the first request's windows ever reached the model
    assert queued == 0


# -- privacy ------------------------------------------------------------------------------------
def test_the_cache_is_not_shared_across_api_keys(keyed: TestClient) -> None:
    engine = keyed.app.state.engine  # type: ignore[attr-defined]
    body = {"messages": [{"role": "user", "content": "a text only key A has sent, 7c1e"}]}
    assert keyed.post("/v1/classify", json=body, headers=auth(KEY_A)).status_code == 200
    misses = engine.cache.misses
    assert keyed.post("/v1/classify", json=body, headers=auth(KEY_B)).status_code == 200
    assert engine.cache.misses == misses + 1  # key B paid for its own reading
    hits = engine.cache.hits
    assert keyed.post("/v1/classify", json=body, headers=auth(KEY_A)).status_code == 200
    assert engine.cache.hits == hits + 1


def test_metrics_need_a_key_unless_public(keyed: TestClient, shipped_model_dir: Path) -> None:
    assert keyed.get("/metrics").status_code == 401
    assert keyed.get("/metrics", headers=auth(KEY_A)).status_code == 200
    settings = Settings(model_dir=shipped_model_dir, api_keys=KEY_A, metrics_public=True)
    with TestClient(create_app(settings)) as c:
        assert c.get("/metrics").status_code == 200


def test_key_file_rules(tmp_path: Path, shipped_model_dir: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("\ufeff# the pipeline's keys\n\n  key-c-0123456789abcdef  \n", encoding="utf-8")
    assert Settings(model_dir=shipped_model_dir, api_keys_file=f).keys() == [
        "key-c-0123456789abcdef"
    ]
    f.write_text("short-key\n", encoding="utf-8")
    with pytest.raises(ValueError, match="shorter than 16"):
        Settings(model_dir=shipped_model_dir, api_keys_file=f)
    with pytest.raises(ValueError, match="shorter than 16"):
        Settings(model_dir=shipped_model_dir, api_keys="abc")
