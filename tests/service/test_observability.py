"""Request ids, metrics, and no transcript text in any log line, metric or error body."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.observability import JsonFormatter

SECRET = "my oncologist says the tumour in my pancreas has grown"


def test_request_id_is_accepted_or_generated(client: TestClient) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces"
    assert len(generated.headers["x-request-id"]) == 32
    ids = {client.get("/healthz").headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_metrics_count_requests_batches_and_flags(client: TestClient) -> None:
    client.post("/v1/classify", json={"messages": [{"role": "user", "content": SECRET}]})
    text = client.get("/metrics").text
    for name in (
        "st_requests_total",
        "st_request_seconds_bucket",
        "st_batch_windows_bucket",
        "st_queue_windows",
        "st_cache_hits",
        "st_flags_total",
    ):
        assert name in text, name
    assert 'st_flags_total{label="health"}' in text
    assert 'route="/v1/classify"' in text


def test_no_text_in_logs_metrics_or_errors(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies = [
        client.post("/v1/classify", json={"messages": [{"role": "user", "content": SECRET}]}),
        client.post(
            "/v1/classify",
            json={"transcripts": [{"id": "t", "messages": [{"role": "user", "content": SECRET}]}]},
        ),
        client.post(
            "/v1/screen",
            json={
                "messages": [{"role": "user", "content": SECRET}],
                "signals": [{"id": "s", "text": SECRET}],
            },
        ),
        client.post("/v1/classify", json={"messages": [{"role": "robot", "content": SECRET}]}),
        client.post("/v1/classify", json={"messages": [{"role": "user", "content": SECRET}] * 60}),
        client.post(
            "/v1/screen",
            json={
                "messages": [{"role": "user", "content": SECRET}],
                "signals": [{"id": "s", "text": SECRET, "source_messages": [5]}],
            },
        ),
    ]
    assert [r.status_code for r in bodies] == [200, 200, 200, 422, 422, 422]
    for r in bodies[3:]:
        assert "tumour" not in r.text and "pancreas" not in r.text
    metrics = client.get("/metrics").text
    formatter = JsonFormatter()
    logged = "\n".join(formatter.format(rec) for rec in caplog.records)
    assert "request" in logged  # the access log did run
    for word in ("tumour", "pancreas", "oncologist"):
        assert word not in logged and word not in metrics


def test_no_text_in_the_batch_commands_output_streams_or_errors_file(
    tmp_path: Path, shipped_model_dir: Path
) -> None:
    rows = [
        {"id": 0, "messages": [{"role": "user", "content": SECRET}]},
        {"id": 1, "messages": SECRET},  # not a transcript: an error row
        {"id": 2, "messages": [{"role": "user", "content": 7}, {"content": SECRET}]},
        {"id": 3},  # the column is missing
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "service", "score", str(src), "--output", str(out)]
    cmd += ["--messages-column", "messages", "--model-dir", str(shipped_model_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1  # error rows and no --allow-errors
    errors = (tmp_path / "out.jsonl.errors.jsonl").read_text()
    assert [json.loads(x)["row"] for x in errors.splitlines()] == [1, 2, 3]
    assert "rows read 4 = rows written 1 + rows in errors 3" in done.stderr
    for word in ("tumour", "pancreas", "oncologist"):
        assert word not in done.stdout and word not in done.stderr and word not in errors
