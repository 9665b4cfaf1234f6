"""The REST API: a thin FastAPI wrapper over the scoring engine. This module assembles the app
(lifespan, error handlers, middlewares); the routes live in `service/routes/`, one module per
area."""

from __future__ import annotations

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
from service.routes import classify, operations, screen
from service.routes.deps import ServiceError
from service.schemas import (
    ClassifyRequest,
    ContentPart,
    ErrorResponse,
    Message,
    ScreenRequest,
    Signal,
    TranscriptIn,
)
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


def _error(
    status: int,
    code: str,
    message: str,
    errors: list[dict[str, str]] | None = None,
    limit: tuple[str, int] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(
        code=code,
        message=message,
        errors=errors or [],
        limit={"name": limit[0], "value": limit[1]} if limit else None,
    )
    return JSONResponse(
        status_code=status, content=body.model_dump(exclude_none=True), headers=headers
    )


def _field_names() -> frozenset[str]:
    """Every field name of the request bodies: the only words a field path may contain."""
    names: set[str] = set()
    for model in (ClassifyRequest, ScreenRequest, TranscriptIn, Message, ContentPart, Signal):
        names.update(model.model_fields)
    return frozenset(names)


FIELD_NAMES = _field_names()


def _describe(err: Any) -> dict[str, str]:
    """The field's path (`messages[2].content`) and the rule it breaks; never a value the
    caller sent (it may be transcript text), nor the name of a field it made up. Pydantic's
    union tags in a location (`str`, `list[ContentPart]`) are not fields and are left out."""
    loc = [p for p in err.get("loc", ()) if p != "body"]
    problem = str(err.get("msg", "invalid"))
    if err.get("type") == "extra_forbidden" and loc:
        loc, problem = loc[:-1], "unknown field (not part of the schema)"
    path = ""
    for p in loc:
        if isinstance(p, int):
            path += f"[{p}]"
        elif p in FIELD_NAMES:
            path += f".{p}" if path else str(p)
    return {"field": path or "body", "problem": problem}


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
        log.info(
            "ready", extra={"fields": {"model": clf.artifact.name, "version": clf.artifact.version}}
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

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_describe(e) for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "problem": "invalid"}
        return _error(422, "invalid_request", f"{first['field']}: {first['problem']}", errors)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, limit=exc.limit, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        code = "invalid_body" if exc.status_code == 400 else "http_error"
        return _error(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(RequestTooLarge)
    async def too_large(_: Request, exc: RequestTooLarge) -> JSONResponse:
        return _error(
            413,
            "limit_exceeded",
            f"the request needs at least {exc.windows} token windows; max_request_windows is "
            f"{exc.limit} (send fewer or shorter messages)",
            limit=("max_request_windows", exc.limit),
        )

    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        metrics.shed.inc()
        return _error(
            503,
            "overloaded",
            "the service is at capacity; retry shortly",
            headers={"Retry-After": "1"},
        )

    # one router per area; a reader finds a route by its file name
    app.include_router(operations.router)
    app.include_router(classify.router)
    app.include_router(screen.router)

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
