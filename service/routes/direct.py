"""The scoring routes served straight from ASGI, for the requests that are all the load.

`POST /v1/classify` and `POST /v1/screen` with a JSON body (or none declared) are answered
here, inside admission (which has checked the key, bounded and read the body): the body is
parsed with `json.loads` and validated against the route's request model, then the route's own
handler (`classify_body`, `screen_body`) answers, and any error is the same JSON error FastAPI's
handlers give (`service.routes.errors.answer`). What FastAPI does per request on top (route
matching through its routers, solving the dependencies, its exception middlewares) took about
0.2 ms of the event loop's time per request at concurrency 1, an eighth of what the service
adds to the model call (README, "Benchmarks": the timeline and the A/B runs).

FastAPI's routes stay the documented interface (OpenAPI, `/docs`) and answer everything else:
another method or content type (FastAPI's own validation error), and every request when
`ST_DIRECT_ROUTES=false`. The tests run the same requests both ways and compare the answers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from service.routes import errors
from service.routes.classify import classify_body
from service.routes.deps import Scoring
from service.routes.screen import screen_body
from service.schemas import ClassifyRequest, ScreenRequest

Handler = Callable[[Scoring, Any], Awaitable[BaseModel]]


@dataclass(frozen=True)
class Route:
    path: str  # read by the request context's metrics and access log, as a FastAPI route's
    model: type[BaseModel]
    handler: Handler


ROUTES: Mapping[str, Route] = {
    r.path: r
    for r in (
        Route("/v1/classify", ClassifyRequest, classify_body),
        Route("/v1/screen", ScreenRequest, screen_body),
    )
}


def _is_json(scope: Scope) -> bool:
    """No content type declared, or a JSON one (`application/json`, `application/*+json`):
    the bodies FastAPI parses as JSON. Anything else goes to FastAPI, which refuses it."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or (
                media.startswith(b"application/") and media.endswith(b"+json")
            )
    return True


class DirectRoutes:
    """ASGI middleware: answers the scoring routes itself, passes every other request on."""

    def __init__(self, app: ASGIApp, routes: Mapping[str, Route] = ROUTES) -> None:
        self.app, self.routes = app, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        body = await _body(receive)
        if body is None:  # the client left before its body was complete
            return
        scope["route"] = route
        state = scope["app"].state
        try:
            ctx = Scoring.of(state, scope)  # 503 before the model is loaded, as FastAPI's
            request = _parse(route.model, body)
            result = await route.handler(ctx, request)
        except Exception as exc:
            response = errors.answer(exc, state.metrics)
            if response is None:  # not one of ours: the request context answers 500
                raise
            await response(scope, receive, send)
            return
        data = result.model_dump_json().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(data)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})


async def _body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _parse(model: type[BaseModel], body: bytes) -> BaseModel:
    """The request model from a JSON body, as FastAPI reads it: `json.loads`, then validation
    of the parsed value (the same rules as FastAPI's, so the same answers)."""
    if not body:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required"}]
        )
    try:
        value = json.loads(body)
    except json.JSONDecodeError as e:  # its message names a position, never the text
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", e.pos),
                    "msg": "JSON decode error",
                    "ctx": {"error": e.msg},
                }
            ]
        ) from None
    except Exception:  # not UTF-8 (or -16, -32), nested too deep to parse: 400, as FastAPI
        raise HTTPException(400, "There was an error parsing the body") from None
    return model.model_validate(value, from_attributes=True)  # as FastAPI validates a body
