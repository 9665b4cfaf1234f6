"""Metrics, structured logs with a request id, and the body-size cap: never any text."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
log = logging.getLogger("service.access")


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "st_requests", "Requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "st_request_seconds",
            "Request latency by route and status (a shed 503 is fast; a served 200 is not)",
            ["route", "status"],
            registry=r,
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
        )
        self.batch = Histogram(
            "st_batch_windows",
            "Windows per shared model run",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.batch_seconds = Histogram("st_batch_seconds", "Model run time", registry=r)
        self.queue = Gauge("st_queue_windows", "Windows waiting for the model", registry=r)
        self.cache_hits = Gauge("st_cache_hits", "Message score cache hits", registry=r)
        self.cache_misses = Gauge("st_cache_misses", "Message score cache misses", registry=r)
        self.flags = Counter("st_flags", "Flagged messages by label", ["label"], registry=r)
        self.shed = Counter("st_shed", "Requests refused because the queue was full", registry=r)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; only the fields we put there (no message arguments)."""

    def format(self, record: logging.LogRecord) -> str:
        # Our own events are fixed strings; arguments are formatted only for the server's
        # lifecycle lines (ports, pids), never for anything that could carry a request.
        event = record.getMessage() if record.name == "uvicorn.error" else record.msg
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "event": str(event),
        }
        out.update(getattr(record, "fields", {}))
        return json.dumps(out)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


class RequestContext:
    """ASGI middleware: request id (accepted or generated, returned), access log, metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route, took = route_of(scope), time.perf_counter() - started
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route, str(status)).observe(took)
            log.info(
                "request",
                extra={
                    "fields": {
                        "request_id": rid,
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "ms": round(took * 1000, 2),
                    }
                },
            )


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A whole JSON response, written straight to the ASGI channel."""
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class BodyLimit:
    """ASGI middleware: refuse bodies over `limit` bytes with 413 before they are parsed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await send_json(
            send,
            413,
            {
                "code": "body_too_large",
                "message": f"request body over {self.limit} bytes",
                "errors": [],
                "limit": {"name": "max_body_bytes", "value": self.limit},
            },
        )


class _TooLarge(Exception):
    pass


class InFlightLimit:
    """ASGI middleware: past `limit` requests in progress on the scoring routes, refuse new
    ones at once with 503 and Retry-After, so latency stays bounded under overload."""

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics) -> None:
        self.app, self.limit, self.metrics = app, limit, metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.metrics.shed.inc()
            await send_json(
                send,
                503,
                {
                    "code": "overloaded",
                    "errors": [],
                    "message": "the service is at capacity; retry shortly",
                },
                [(b"retry-after", b"1")],
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
