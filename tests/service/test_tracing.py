"""OpenTelemetry spans: the route, the preparation, the queue wait and the shared model run."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service.app import create_app
from service.settings import Settings

SECRET = "my secret diagnosis of diabetes"


def test_spans_for_route_queue_wait_and_model_run(shipped_model_dir: Path) -> None:
    exporter = InMemorySpanExporter()
    app = create_app(
        Settings(model_dir=shipped_model_dir, auth_required=False), tracing_exporter=exporter
    )
    with TestClient(app) as c:
        exporter.clear()  # the warm-up and readiness are not a request
        body = {"messages": [{"role": "user", "content": SECRET}]}
        assert c.post("/v1/classify", json=body).status_code == 200
    spans = {s.name: s for s in exporter.get_finished_spans()}
    route = next(s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER)
    assert route.name == "POST /v1/classify"
    prepare, wait, run = spans["st.prepare"], spans["st.queue_wait"], spans["st.model_run"]
    assert prepare.parent is not None and prepare.parent.span_id == route.context.span_id
    assert wait.parent is not None and wait.parent.span_id == route.context.span_id
    assert [link.context.span_id for link in run.links] == [route.context.span_id]
    assert run.attributes["st.windows"] >= 1
    for s in exporter.get_finished_spans():  # counts and timings only, never text
        assert SECRET not in str(dict(s.attributes or {}))


def test_tracing_is_off_by_default(client: TestClient) -> None:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    assert type(engine.tracer).__name__ == "NoOpTracer"
