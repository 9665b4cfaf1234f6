"""What the routes share: dependencies (engine, settings, metrics, API key, tenant), the
service's JSON error, and the request bounds."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from service.classifier import TranscriptScore
from service.engine import ScoringEngine
from service.observability import Metrics
from service.schemas import ErrorResponse, Message, ModelRef
from service.settings import Settings

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


def engine_of(state: Any) -> ScoringEngine:
    """The app's scoring engine (from its state); 503 `not_ready` before the model is loaded."""
    engine: ScoringEngine | None = getattr(state, "engine", None)
    if engine is None:
        raise ServiceError(503, "not_ready", "the model is not loaded")
    return engine


async def get_engine(request: Request) -> ScoringEngine:
    """The app's scoring engine, injected into routes (tests may swap it). Async, like
    every dependency here, so that a request costs no thread-pool hop."""
    return engine_of(request.app.state)


@dataclass(frozen=True)
class Scoring:
    """What a scoring route needs: the app's engine, settings, metrics and blocked regions,
    and whose request it is (`tenant`: a digest of its API key, set by admission; it scopes
    the cache). Built from the app's state and the request's scope, by FastAPI's dependency
    or by the direct routes."""

    engine: ScoringEngine
    settings: Settings
    metrics: Metrics
    regions: frozenset[str]
    tenant: str

    @classmethod
    def of(cls, state: Any, scope: Mapping[str, Any]) -> Scoring:
        return cls(
            engine_of(state),
            state.settings,
            state.metrics,
            state.regions,
            str(scope.get("state", {}).get("tenant", "")),
        )


async def get_scoring(request: Request) -> Scoring:
    return Scoring.of(request.app.state, request.scope)


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


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


EngineDep = Annotated[ScoringEngine, Depends(get_engine)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ScoringDep = Annotated[Scoring, Depends(get_scoring)]
Authorized = Depends(check_key)


def bound(name: str, value: int, actual: int, status: int = 422) -> None:
    if actual > value:
        raise ServiceError(status, "limit_exceeded", f"{name} is {value}", limit=(name, value))


def check_messages(settings: Settings, messages: Sequence[Message]) -> None:
    bound("max_messages", settings.max_messages, len(messages))
    longest = max((len(m.text) for m in messages), default=0)
    bound("max_message_chars", settings.max_message_chars, longest, 413)


def model_ref(engine: ScoringEngine) -> ModelRef:
    a = engine.classifier.artifact
    return ModelRef(name=a.name, version=a.version)


def count_flags(metrics: Metrics, result: TranscriptScore) -> None:
    for m in result.messages:
        for lab, f in m.flags.items():
            if f:
                metrics.flags.labels(lab).inc()


def serialized(body: BaseModel) -> Response:
    """The answer as JSON, written by the model that built it. The route's declared
    response_model still documents it; returning a Response skips FastAPI's second pass over
    an answer the route has just validated (re-validating it against the response model,
    then encoding the dump)."""
    return Response(body.model_dump_json(), media_type="application/json")
