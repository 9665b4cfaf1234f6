"""The REST API: a thin FastAPI wrapper over the scoring engine."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__
from service.admission import Admission
from service.artifact import ModelArtifact
from service.batching import Overloaded
from service.classifier import Classifier, TextScore, TranscriptScore, model_role
from service.engine import RequestTooLarge, ScoringEngine
from service.gate import decide
from service.language import TranscriptLanguages
from service.observability import Metrics, RequestContext
from service.schemas import (
    BatchClassifyResponse,
    ClassifyRequest,
    ClassifyResponse,
    ContentPart,
    ErrorResponse,
    Evidence,
    LabelDecision,
    Message,
    MessageResult,
    ModelInfo,
    ModelRef,
    Reason,
    ScreenRequest,
    ScreenResponse,
    Signal,
    SignalDecision,
    TranscriptIn,
    TranscriptResult,
)
from service.settings import Settings, get_settings
from service.tracing import setup as setup_tracing

log = logging.getLogger("service")
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 401, 413, 422, 503)
}


class ServiceError(Exception):
    """An error with a stable code, turned into a JSON answer."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        limit: tuple[str, int] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.limit, self.headers = limit, headers


async def get_engine(request: Request) -> ScoringEngine:
    """The app's scoring engine, injected into routes (tests may swap it). Async, like
    every dependency here, so that a request costs no thread-pool hop."""
    engine: ScoringEngine | None = getattr(request.app.state, "engine", None)
    if engine is None:
        raise ServiceError(503, "not_ready", "the model is not loaded")
    return engine


BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key of the service (ST_API_KEYS / ST_API_KEYS_FILE).",
)


async def check_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> None:
    """Bearer API key, compared in constant time with every accepted key. Admission already
    checked it before the body was read; this dependency declares the scheme in OpenAPI (so
    `/docs` has an Authorize button and generated clients send the key) and checks again."""
    settings: Settings = request.app.state.settings
    if not settings.auth_required:
        return
    header = request.headers.get("authorization", "")
    scheme, _sep, token = header.partition(" ")
    given = token.strip().encode()
    ok = False
    for key in request.app.state.api_keys:
        ok |= hmac.compare_digest(given, key)
    if scheme.lower() != "bearer" or not given or not ok:
        raise ServiceError(
            401,
            "unauthorized",
            "a valid bearer API key is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def get_tenant(request: Request) -> str:
    """Whose request this is (a digest of its API key, set by admission): scopes the cache."""
    return str(request.scope.get("state", {}).get("tenant", ""))


EngineDep = Annotated[ScoringEngine, Depends(get_engine)]
TenantDep = Annotated[str, Depends(get_tenant)]
Authorized = Depends(check_key)


def load_classifier(settings: Settings) -> Classifier:
    """Load the model directory named by the settings; raises ModelDirError if it is broken."""
    artifact = ModelArtifact.load(settings.model_dir)
    clf = Classifier(
        artifact,
        threads=settings.threads,
        batch_size=settings.batch_size,
        batch_cells=settings.batch_cells,
    )
    clf.score_texts(["warm-up"])  # the model answers before we call ourselves ready
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


def _evidence(scores: TextScore, index: int) -> list[Evidence]:
    return [
        Evidence(
            label=lab, message_index=index, window=scores.best_window[lab], score=scores.scores[lab]
        )
        for lab, f in scores.flags.items()
        if f
    ]


def _transcript_result(
    messages: Sequence[Message],
    result: TranscriptScore,
    langs: TranscriptLanguages,
    tid: str | None = None,
) -> TranscriptResult:
    out = [
        MessageResult(
            index=i,
            role=m.role,
            scores=s.scores,
            flags=s.flags,
            sensitive=s.sensitive,
            windows=s.windows,
            skipped_parts=m.skipped_parts,
            evidence=_evidence(s, i),
            language=g.language,
            language_supported=g.language in langs.supported,
        )
        for i, (m, s, g) in enumerate(zip(messages, result.messages, langs.messages, strict=True))
    ]
    evidence = [e for m in out for e in m.evidence]
    return TranscriptResult(
        id=tid,
        language=langs.transcript.language,
        language_supported=langs.transcript.language in langs.supported,
        messages=out,
        transcript=LabelDecision(
            scores=result.scores, flags=result.flags, sensitive=result.sensitive, evidence=evidence
        ),
    )


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
    regions = settings.regions()

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

    def bound(name: str, value: int, actual: int, status: int = 422) -> None:
        if actual > value:
            raise ServiceError(status, "limit_exceeded", f"{name} is {value}", limit=(name, value))

    def check_messages(messages: Sequence[Message]) -> None:
        bound("max_messages", settings.max_messages, len(messages))
        longest = max((len(m.text) for m in messages), default=0)
        bound("max_message_chars", settings.max_message_chars, longest, 413)

    def model_ref(engine: ScoringEngine) -> ModelRef:
        a = engine.classifier.artifact
        return ModelRef(name=a.name, version=a.version)

    def count_flags(result: TranscriptScore) -> None:
        for m in result.messages:
            for lab, f in m.flags.items():
                if f:
                    metrics.flags.labels(lab).inc()

    @app.get("/healthz", summary="The process is alive.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="The model is loaded and answering.",
        responses={503: {"model": ErrorResponse}},
    )
    async def readyz(engine: EngineDep) -> dict[str, str]:
        await engine.batcher.submit(engine.classifier.encode_items(["ready?"])[0])
        return {"status": "ready", "model": engine.classifier.artifact.name}

    @app.get("/metrics", summary="Prometheus metrics.", response_class=Response)
    async def prometheus() -> Response:
        engine: ScoringEngine | None = getattr(app.state, "engine", None)
        if engine is not None:
            metrics.queue.set(engine.batcher.stats.queued_windows)
            metrics.cache.set_counts(engine.cache.hits, engine.cache.misses)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/v1/model",
        response_model=ModelInfo,
        summary="The served model.",
        dependencies=[Authorized],
        responses=ERRORS,
    )
    async def model_info(engine: EngineDep) -> ModelInfo:
        a = engine.classifier.artifact
        return ModelInfo(
            name=a.name,
            version=a.version,
            base_model=a.base_model,
            labels=list(a.labels),
            thresholds=a.thresholds,
            languages=list(a.languages),
            supported_languages=sorted(a.supported_languages),
            max_length=a.max_length,
        )

    @app.post(
        "/v1/classify",
        response_model=ClassifyResponse | BatchClassifyResponse,
        summary="Classify a transcript, or a batch, and each of their messages.",
        dependencies=[Authorized],
        responses=ERRORS,
    )
    async def classify(
        body: ClassifyRequest, engine: EngineDep, tenant: TenantDep
    ) -> ClassifyResponse | BatchClassifyResponse:
        if body.messages is not None:
            check_messages(body.messages)
            contents = [m.text for m in body.messages]
            result = await engine.transcript(
                contents, [model_role(m.role) for m in body.messages], tenant
            )
            count_flags(result)
            single = _transcript_result(body.messages, result, engine.languages(contents))
            return ClassifyResponse(model=model_ref(engine), **single.model_dump())
        transcripts = body.transcripts or []
        bound("max_transcripts", settings.max_transcripts, len(transcripts))
        for t in transcripts:
            check_messages(t.messages)
        # every transcript's windows counted as one request, scored in shared model runs
        scored = await engine.transcripts(
            [
                ([m.text for m in t.messages], [model_role(m.role) for m in t.messages])
                for t in transcripts
            ],
            tenant,
        )
        results = []
        for t, r in zip(transcripts, scored, strict=True):
            count_flags(r)
            contents = [m.text for m in t.messages]
            results.append(_transcript_result(t.messages, r, engine.languages(contents), t.id))
        return BatchClassifyResponse(model=model_ref(engine), results=results)

    @app.post(
        "/v1/screen",
        response_model=ScreenResponse,
        summary="Allow or block each interest signal derived from a transcript.",
        description="Fail-closed: any non-2xx answer means use none of these signals.",
        dependencies=[Authorized],
        responses=ERRORS,
    )
    async def screen(body: ScreenRequest, engine: EngineDep, tenant: TenantDep) -> ScreenResponse:
        check_messages(body.messages)
        bound("max_signals", settings.max_signals, len(body.signals))
        for k, s in enumerate(body.signals):
            for j, i in enumerate(s.source_messages or []):
                if not 0 <= i < len(body.messages):
                    raise ServiceError(
                        422,
                        "invalid_request",
                        f"signals[{k}].source_messages[{j}]: not the index of a message",
                    )
        contents = [m.text for m in body.messages]
        result = await engine.transcript(
            contents, [model_role(m.role) for m in body.messages], tenant
        )
        langs = engine.languages(contents)
        unsupported = langs.unsupported() if settings.unsupported_language == "block" else []
        signal_scores = await engine.score([s.text for s in body.signals], tenant=tenant)
        blocked_region = body.region in regions if body.region else settings.region_required
        decisions = []
        for s, score in zip(body.signals, signal_scores, strict=True):
            d = decide(s.id, score, s.source_messages, result, blocked_region, unsupported)
            decisions.append(
                SignalDecision(
                    id=s.id,
                    decision="allowed" if d.allowed else "blocked",
                    reasons=[
                        Reason(
                            type=r.type,
                            label=r.label,
                            message_index=r.message_index,
                            language=r.language,
                        )
                        for r in d.reasons
                    ],
                )
            )
        single = _transcript_result(body.messages, result, langs)
        return ScreenResponse(
            model=model_ref(engine), transcript=single.transcript, decisions=decisions
        )

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
