"""The service's JSON errors: one place that turns an exception into the documented answer, for
FastAPI's exception handlers and for the direct routes alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.batching import Overloaded
from service.engine import RequestTooLarge
from service.observability import Metrics
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


def error(
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


def describe(err: Any) -> dict[str, str]:
    """The field's path (`messages[2].content`) and the rule it breaks; never a value the
    caller sent (it may be transcript text), nor the name of a field it made up. Pydantic's
    union tags in a location (`str`, `list[ContentPart]`) are not fields and are left out."""
    loc = [p for p in err.get("loc", ()) if p != "body"]
    problem = str(err.get("msg", "invalid"))
    if err.get("type") == "json_invalid":  # where and why, never the text around it
        at = next((p for p in loc if isinstance(p, int)), None)
        why = (err.get("ctx") or {}).get("error")
        where = f" at character {at}" if at is not None else ""
        return {"field": "body", "problem": f"invalid JSON{where}" + (f": {why}" if why else "")}
    if err.get("type") == "extra_forbidden" and loc:
        loc, problem = loc[:-1], "unknown field (not part of the schema)"
    path = ""
    for p in loc:
        if isinstance(p, int):
            path += f"[{p}]"
        elif p in FIELD_NAMES:
            path += f".{p}" if path else str(p)
    return {"field": path or "body", "problem": problem}


def invalid(errors: Sequence[Any]) -> JSONResponse:
    """422 `invalid_request`, naming each field and the rule it breaks."""
    described = [describe(e) for e in errors]
    first = described[0] if described else {"field": "body", "problem": "invalid"}
    return error(422, "invalid_request", f"{first['field']}: {first['problem']}", described)


def answer(exc: Exception, metrics: Metrics) -> JSONResponse | None:
    """The JSON error for an exception the service knows, or None (a bug: answered 500 by
    the request context, with its request id)."""
    if isinstance(exc, RequestValidationError | ValidationError):
        return invalid(exc.errors())
    if isinstance(exc, ServiceError):
        return error(exc.status, exc.code, exc.message, limit=exc.limit, headers=exc.headers)
    if isinstance(exc, RequestTooLarge):
        return error(
            413,
            "limit_exceeded",
            f"the request needs at least {exc.windows} token windows; max_request_windows is "
            f"{exc.limit} (send fewer or shorter messages)",
            limit=("max_request_windows", exc.limit),
        )
    if isinstance(exc, Overloaded):
        metrics.shed.inc()
        return error(
            503,
            "overloaded",
            "the service is at capacity; retry shortly",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, StarletteHTTPException):
        headers = dict(exc.headers) if exc.headers else None
        code = "invalid_body" if exc.status_code == 400 else "http_error"
        return error(exc.status_code, code, str(exc.detail), headers=headers)
    return None
