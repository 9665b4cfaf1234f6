"""Admission in front of the routes, cheapest refusal first, before a request costs anything.

1. Framing: a request with both `Content-Length` and `Transfer-Encoding` is refused (400): a
   proxy and this server could read two different bodies from it (request smuggling).
2. The API key, on the protected paths, from the headers alone: a caller without a valid key
   never takes an in-flight slot, and its body is never read (401).
3. An in-flight slot on the scoring routes (503 with Retry-After when all are taken).
4. The body, read whole within `max_body_bytes` (413, declared or chunked) and within
   `body_timeout_s` (408: a slow body holds a slot no longer than that).
5. While the route runs, the client is watched: when it disconnects, the route is cancelled,
   and the work it had queued for the model is dropped before it runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("service.access")


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


def error_body(code: str, message: str, limit: tuple[str, float] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"code": code, "message": message, "errors": []}
    if limit is not None:
        out["limit"] = {"name": limit[0], "value": limit[1]}
    return out


def tenant_of(key: bytes) -> str:
    """A short digest naming an API key's holder (the key itself is never kept or logged)."""
    return hashlib.blake2b(key, digest_size=8).hexdigest()


class _TooLarge(Exception):
    pass


class Admission:
    """ASGI middleware: the checks of the module docstring, in that order."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: Sequence[bytes] | None,
        protected: Callable[[str], bool],
        scoring: Callable[[str], bool],
        max_body_bytes: int,
        body_timeout_s: float,
        max_inflight: int,
        on_shed: Callable[[], None] | None = None,
        on_gone: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.keys = list(keys) if keys is not None else None  # None: keys are off
        self.protected, self.scoring = protected, scoring
        self.limit, self.timeout = max_body_bytes, body_timeout_s
        self.max_inflight, self.in_flight = max_inflight, 0
        self.on_shed, self.on_gone = on_shed, on_gone

    def authenticate(self, headers: dict[bytes, bytes]) -> str | None:
        """The caller's tenant digest if its bearer key is valid, else None (constant time
        against every accepted key)."""
        assert self.keys is not None
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        given = token.strip()
        ok = False
        for key in self.keys:
            ok |= hmac.compare_digest(given, key)
        if scheme.lower() != b"bearer" or not given or not ok:
            return None
        return tenant_of(given)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        headers = dict(scope.get("headers", []))
        if b"content-length" in headers and b"transfer-encoding" in headers:
            await send_json(
                send,
                400,
                error_body(
                    "invalid_body", "both Content-Length and Transfer-Encoding: send one of them"
                ),
            )
            return
        state = scope.setdefault("state", {})
        state["tenant"] = ""
        if self.keys is not None and self.protected(path):
            tenant = self.authenticate(headers)
            if tenant is None:
                await send_json(
                    send,
                    401,
                    error_body("unauthorized", "a valid bearer API key is required"),
                    [(b"www-authenticate", b"Bearer")],
                )
                return
            state["tenant"] = tenant
        if not self.scoring(path):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_inflight:
            if self.on_shed:
                self.on_shed()
            await send_json(
                send,
                503,
                error_body("overloaded", "the service is at capacity; retry shortly"),
                [(b"retry-after", b"1")],
            )
            return
        self.in_flight += 1
        try:
            await self._admitted(scope, receive, send, headers)
        finally:
            self.in_flight -= 1

    async def _admitted(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes]
    ) -> None:
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(send)
            return
        try:
            async with asyncio.timeout(self.timeout):  # no task of its own, unlike wait_for
                body = await self._read(receive)
        except _TooLarge:
            await self._too_large(send)
            return
        except TimeoutError:
            await send_json(
                send,
                408,
                error_body(
                    "body_timeout",
                    f"the request body did not arrive within {self.timeout:g} s",
                    ("body_timeout_s", self.timeout),
                ),
                [(b"connection", b"close")],
            )
            return
        if body is None:  # the client left before its body was complete
            return
        gone = asyncio.Event()
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        route = asyncio.ensure_future(self.app(scope, replay, send))
        watch = asyncio.ensure_future(self._disconnect(receive))
        try:
            await asyncio.wait({route, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done() and not route.done():
                gone.set()
                route.cancel()  # the engine's queued windows are dropped with it
                if self.on_gone:
                    self.on_gone()
            try:
                await route
            except asyncio.CancelledError:
                if not watch.done():  # we ourselves are being cancelled: pass it on
                    raise
        finally:
            watch.cancel()
            route.cancel()

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _disconnect(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _too_large(self, send: Send) -> None:
        await send_json(
            send,
            413,
            error_body(
                "body_too_large",
                f"request body over {self.limit} bytes",
                ("max_body_bytes", self.limit),
            ),
            [(b"connection", b"close")],
        )
