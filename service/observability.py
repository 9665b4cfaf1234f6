"""Metrics, structured logs with a request id, and the body-size cap: never any text."""

from __future__ import annotations

import json
import logging
import random
import re
import secrets
import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
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
        self.cache = CacheCounters(registry=r)
        self.model = Info("st_model", "The served model", registry=r)
        ProcessCollector(registry=r)  # process_cpu_seconds_total, resident memory, open fds
        PlatformCollector(registry=r)
        self.flags = Counter("st_flags", "Flagged messages by label", ["label"], registry=r)
        self.shed = Counter("st_shed", "Requests refused because the queue was full", registry=r)
        self.gone = Counter(
            "st_client_gone", "Requests cancelled because the client disconnected", registry=r
        )


class CacheCounters(Collector):
    """Cache hits and misses as Prometheus counters (`st_cache_hits_total`, ...), read from the
    engine's own counts when scraped (the engine knows nothing of Prometheus)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.hits = self.misses = 0
        registry.register(self)

    def set_counts(self, hits: int, misses: int) -> None:
        self.hits, self.misses = hits, misses

    def collect(self) -> Any:
        yield CounterMetricFamily("st_cache_hits", "Message score cache hits", value=self.hits)
        yield CounterMetricFamily(
            "st_cache_misses", "Message score cache misses", value=self.misses
        )


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
        # generated ids: 128 random bits like a uuid4's, from a generator seeded once from the
        # OS's random source instead of a call to it on every request (a counter would be as
        # cheap and unique, but would tell callers how many requests the service has seen)
        self._ids = random.Random(secrets.randbits(128))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if REQUEST_ID.match(given) else f"{self._ids.getrandbits(128):032x}"
        scope.setdefault("state", {})["request_id"] = rid
        started, status, responded = time.perf_counter(), 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Any failure is the documented JSON error with the request id, logged with the
            # exception's type only: its message could quote the text being scored.
            log.error(
                "unhandled error",
                extra={"fields": {"request_id": rid, "exception": type(exc).__name__}},
            )
            if not responded:
                data = json.dumps(
                    {
                        "code": "internal_error",
                        "message": f"internal error; quote request id {rid}",
                        "errors": [],
                    }
                ).encode()
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": data})
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
