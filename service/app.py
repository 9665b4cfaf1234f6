"""The REST API: a thin FastAPI wrapper over the scoring core."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.artifact import ModelArtifact
from service.classifier import Classifier
from service.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    LabelDecision,
    MessageResult,
    ModelInfo,
    ModelRef,
)
from service.settings import Settings, get_settings

log = logging.getLogger("service")


class ServiceError(Exception):
    """An error with a stable code, turned into a JSON answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def get_classifier(request: Request) -> Classifier:
    """The app's classifier, injected into routes (tests may swap it)."""
    clf: Classifier | None = getattr(request.app.state, "classifier", None)
    if clf is None:
        raise ServiceError(503, "not_ready", "the model is not loaded")
    return clf


ClassifierDep = Annotated[Classifier, Depends(get_classifier)]


def load_classifier(settings: Settings) -> Classifier:
    """Load the model directory named by the settings; raises ModelDirError if it is broken."""
    artifact = ModelArtifact.load(settings.model_dir)
    clf = Classifier(artifact, threads=settings.threads, batch_size=settings.batch_size)
    clf.score_texts(["warm-up"])  # the model answers before we call ourselves ready
    return clf


def _error(
    status: int, code: str, message: str, errors: list[dict[str, str]] | None = None
) -> JSONResponse:
    body = ErrorResponse(code=code, message=message, errors=errors or [])
    return JSONResponse(status_code=status, content=body.model_dump())


def _describe(err: dict[str, Any]) -> dict[str, str]:
    # Only the location and the rule: the offending value may be transcript text.
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    return {"field": loc or "body", "problem": str(err.get("msg", "invalid"))}


def create_app(settings: Settings | None = None, classifier: Classifier | None = None) -> FastAPI:
    """Build the app; the model is loaded in the lifespan unless one is given (tests)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.classifier = classifier or load_classifier(settings)
        log.info("model loaded", extra={"model": app.state.classifier.artifact.name})
        yield
        app.state.classifier = None

    app = FastAPI(
        title="sensitive-topics",
        version="0.1.0",
        summary="Decides whether a chat transcript reveals health, religion or politics.",
        lifespan=lifespan,
    )
    app.state.settings = settings

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_describe(e) for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "problem": "invalid"}
        return _error(422, "invalid_request", f"{first['field']}: {first['problem']}", errors)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.get("/healthz", summary="The process is alive.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="The model is loaded and answering.",
        responses={503: {"model": ErrorResponse}},
    )
    async def readyz(clf: ClassifierDep) -> dict[str, str]:
        await run_in_threadpool(clf.score_texts, ["ready?"])
        return {"status": "ready", "model": clf.artifact.name}

    @app.get("/v1/model", response_model=ModelInfo, summary="The served model.")
    async def model_info(clf: ClassifierDep) -> ModelInfo:
        a = clf.artifact
        return ModelInfo(
            name=a.name,
            version=a.version,
            base_model=a.base_model,
            labels=list(a.labels),
            thresholds=a.thresholds,
            languages=list(a.languages),
            max_length=a.max_length,
        )

    @app.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        summary="Classify a transcript and each of its messages.",
        responses={422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
    )
    async def classify(body: ClassifyRequest, clf: ClassifierDep) -> ClassifyResponse:
        if len(body.messages) > settings.max_messages:
            raise ServiceError(
                422,
                "too_many_messages",
                f"messages: at most {settings.max_messages} messages per transcript",
            )
        for i, m in enumerate(body.messages):
            if len(m.content) > settings.max_message_chars:
                raise ServiceError(
                    413,
                    "message_too_long",
                    f"messages.{i}.content: at most {settings.max_message_chars} characters",
                )
        result = await run_in_threadpool(clf.score_transcript, [m.content for m in body.messages])
        return ClassifyResponse(
            model=ModelRef(name=clf.artifact.name, version=clf.artifact.version),
            transcript=LabelDecision(
                scores=result.scores, flags=result.flags, sensitive=result.sensitive
            ),
            messages=[
                MessageResult(
                    index=i,
                    role=m.role,
                    scores=s.scores,
                    flags=s.flags,
                    sensitive=s.sensitive,
                    windows=s.windows,
                )
                for i, (m, s) in enumerate(zip(body.messages, result.messages, strict=True))
            ],
        )

    return app
