"""uvicorn's HTTP protocol with a bound on the time a request's headers may take.

uvicorn times out idle keep-alive connections but not a client that sends its headers a byte
at a time: each such socket would stay open for as long as the client likes. This protocol
starts a timer when a connection opens (and again when a response completes, for the next
request on it); if the headers are not complete when it fires, the client gets a 408 JSON
answer and the connection is closed.

It is uvicorn's httptools protocol (a C parser; its pure-Python h11 one costs measurably more
per request: bench/http_load.py), with the timer added.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import get_settings

_BODY = json.dumps(
    {
        "code": "header_timeout",
        "message": "the request headers did not arrive in time",
        "errors": [],
    }
).encode()
_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose requests must complete their headers within the
    settings' `header_timeout_s` (read in each worker process from its own settings)."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timeout = get_settings().header_timeout_s
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self._timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(_RESPONSE)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # a pipelined request (its headers already read) starts now: it needs no bound
        if not self.transport.is_closing() and not self.pipeline:
            self._arm()  # the next request on this connection has the same bound
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
