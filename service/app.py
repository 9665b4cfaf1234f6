"""The REST API: a thin FastAPI wrapper over the scoring engine. This module assembles the app
(lifespan, error handlers, middlewares); the routes live in `service/routes/`, one module per
area."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__
from service.admission import Admission
from service.artifact import ModelArtifact
from service.batching import Overloaded
from service.classifier import Classifier
from service.engine import RequestTooLarge, ScoringEngine
from service.observability import Metrics, RequestContext
from service.routes import classify, errors, operations, screen
from service.routes.deps import ServiceError
from service.routes.direct import DirectRoutes
from service.settings import Settings, get_settings
from service.tracing import setup as setup_tracing

log = logging.getLogger("service")


def load_classifier(settings: Settings) -> Classifier:
    """Load the model directory named by the settings; raises ModelDirError if it is broken."""
    artifact = ModelArtifact.load(settings.model_dir)
    _runs, threads = settings.model_parallelism()
    clf = Classifier(
        artifact,
        threads=threads,
        batch_size=settings.batch_size,
        batch_cells=settings.batch_cells,
        lone_threads=settings.lone_call_threads(),
    )
    clf.score_texts(["warm-up"])  # the model answers before we call ourselves ready
    clf.run_alone(clf.windows("warm-up"))  # and so does its session for lone calls
    return clf


def create_app(
    settings: Settings | None = None,
    classifier: Classifier | None = None,
    tracing_exporter: Any = None,
) -> FastAPI:
    """Build the app; the model is loaded in the lifespan unless one is given (tests)."""
    settings = settings or get_settings()
    metrics = Metrics()

    def on_batch(windows: int, seconds: float) -> None:
        metrics.batch.observe(windows)
        metrics.batch_seconds.observe(seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        clf = classifier or load_classifier(settings)
        engine = ScoringEngine(
            clf,
            settings.cache_entries,
            settings.batch_max_windows,
            settings.batch_max_tokens,
            settings.batch_wait_ms,
            settings.queue_max_windows,
            on_batch,
            settings.max_request_windows,
            getattr(app.state, "tracer", None),
            settings.model_parallelism()[0],
        )
        engine.start()
        app.state.engine = engine
        metrics.model.info({"name": clf.artifact.name, "version": clf.artifact.version})
        if not settings.auth_required:
            log.warning("API keys are OFF: local use only", extra={"fields": {}})
        # which event loop serves (ST_EVENT_LOOP; `auto` takes uvloop where it is installed)
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        log.info(
            "ready",
            extra={
                "fields": {
                    "model": clf.artifact.name,
                    "version": clf.artifact.version,
                    "event_loop": loop,
                }
            },
        )
        yield
        app.state.engine = None
        await engine.stop()

    # /docs and /redoc load their assets from the fastapi-offline package: they work offline
    app = FastAPIOffline(
        title="sensitive-topics",
        version=__version__,
        summary="Decides whether a chat transcript reveals health, religion or politics.",
        description=(
            "**Fail-closed contract**: any answer other than 2xx from `/v1/screen` (or "
            "`/v1/classify`) means *use none of these signals*. Errors are JSON with a stable "
            "`code`; no error, log line or metric ever contains transcript text."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    setup_tracing(app, settings.tracing, tracing_exporter)
    app.state.api_keys = [k.encode() for k in settings.keys()]
    app.state.metrics = metrics
    app.state.regions = settings.regions()

    async def known_error(_: Request, exc: Exception) -> JSONResponse:
        response = errors.answer(exc, metrics)
        if response is None:  # not one of ours: the request context answers 500
            raise exc
        return response

    for known in (
        RequestValidationError,
        ServiceError,
        StarletteHTTPException,
        RequestTooLarge,
        Overloaded,
    ):
        app.add_exception_handler(known, known_error)

    # one router per area; a reader finds a route by its file name
    app.include_router(operations.router)
    app.include_router(classify.router)
    app.include_router(screen.router)

    if settings.direct_routes:  # inside admission: the key is checked, the body bounded
        app.add_middleware(DirectRoutes)
    app.add_middleware(
        Admission,
        keys=app.state.api_keys if settings.auth_required else None,
        protected=lambda p: (
            p.startswith("/v1/") or (p == "/metrics" and not settings.metrics_public)
        ),
        scoring=lambda p: p.startswith("/v1/"),
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        max_inflight=settings.max_inflight,
        on_shed=metrics.shed.inc,
        on_gone=metrics.gone.inc,
    )
    app.add_middleware(RequestContext, metrics=metrics)
    return app


def create_served_app() -> FastAPI:
    """Factory for worker processes: JSON logs, settings from the environment."""
    from service.observability import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
