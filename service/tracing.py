"""Request tracing with OpenTelemetry, off unless configured (`ST_TRACING`).

With tracing on, FastAPI's own instrumentation makes a span per request (route, status), and
the engine adds its spans under it: `st.prepare` (normalise, read after the turns, tokenise),
`st.queue_wait` (from queuing a request's windows to the shared model run that takes them) and
`st.model_run` (one shared run, linked to every request it served). Spans carry counts and
timings only, never text. Without a configured provider every span is a no-op.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

NO_OP = trace.NoOpTracer()


def setup(app: Any, mode: str, exporter: Any = None) -> None:
    """Turn tracing on for this app: `console` prints spans, `otlp` sends them to the
    collector named by the standard OTEL_EXPORTER_OTLP_* variables; `exporter` (tests) wins."""
    if mode == "off" and exporter is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    provider = TracerProvider(resource=Resource.create({"service.name": "sensitive-topics"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif mode == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError as exc:
            raise RuntimeError(
                "ST_TRACING=otlp needs the OTLP exporter: "
                "pip install opentelemetry-exporter-otlp-proto-http"
            ) from exc
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    app.state.tracer = provider.get_tracer("sensitive-topics")  # the engine's spans
