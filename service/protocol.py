"""uvicorn's HTTP protocol with a bound on the time a request's headers may take.

uvicorn times out idle keep-alive connections but not a client that sends its headers a byte
at a time: each such socket would stay open for as long as the client likes. This protocol
starts a timer when a connection opens (and again when a response completes, for the next
request on it); if the headers are not complete when it fires, the client gets a 408 JSON
answer and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.h11_impl import H11Protocol

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


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol whose requests must complete their headers within the settings'
    `header_timeout_s` (read in each worker process from its own settings)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._timeout = get_settings().header_timeout_s
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self._timeout, self._expired)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(_RESPONSE)
            self.transport.close()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a request's headers are complete
            self._disarm()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection has the same bound
        super().on_response_complete()  # may start a pipelined request (and disarm)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
