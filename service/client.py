"""A small typed client for the service, sync and async, over httpx, that fails closed.

    from service.client import Client

    with Client("http://127.0.0.1:8000", api_key="...") as st:
        allowed = st.screen(messages, signals, region="US")   # a set of signal ids

`screen` returns the ids of the signals that may be used, and the empty set on any error: a
connection refused, a timeout, a non-2xx answer, an answer that is not the service's JSON.
A 503 (overloaded, not ready) is retried after its `Retry-After` (capped), a refused or broken
connection after a short backoff, both within the overall `deadline`; nothing else is retried.
`classify` returns the parsed answer, or raises `ServiceUnavailable`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

Message = Mapping[str, Any]
Signal = Mapping[str, Any]


class ServiceUnavailable(Exception):
    """No usable answer from the service (after the retries that were allowed)."""


class _Policy:
    """When to retry and how long to wait: shared by the sync and async clients."""

    def __init__(self, retries: int, backoff: float, max_wait: float, deadline: float) -> None:
        self.retries, self.backoff, self.max_wait, self.deadline = (
            retries,
            backoff,
            max_wait,
            deadline,
        )

    def wait(self, attempt: int, response: httpx.Response | None, started: float) -> float | None:
        """Seconds to wait before the next attempt, or None when there is none."""
        if attempt >= self.retries:
            return None
        if response is not None:
            if response.status_code != 503:
                return None
            try:
                delay = float(response.headers.get("retry-after", self.backoff))
            except ValueError:
                delay = self.backoff
        else:
            delay = self.backoff * (2**attempt)
        delay = min(delay, self.max_wait)
        if time.monotonic() - started + delay > self.deadline:
            return None
        return delay


def _allowed(answer: Any) -> set[str]:
    return {str(d["id"]) for d in answer["decisions"] if d["decision"] == "allowed"}


def _screen_body(
    messages: Sequence[Message], signals: Sequence[Signal], region: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": list(messages), "signals": list(signals)}
    if region is not None:
        body["region"] = region
    return body


class Client:
    """Synchronous client. Use it as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 2.0,
        retries: int = 2,
        backoff: float = 0.1,
        max_wait: float = 1.0,
        deadline: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._policy = _Policy(retries, backoff, max_wait, deadline)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        started, attempt = time.monotonic(), 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.post(path, json=body)
                if response.status_code == 200:
                    return response.json()
            except (httpx.TransportError, ValueError):
                response = None
            delay = self._policy.wait(attempt, response, started)
            if delay is None:
                status = response.status_code if response is not None else "no answer"
                raise ServiceUnavailable(f"{path}: {status}")
            time.sleep(delay)
            attempt += 1

    def classify(self, messages: Sequence[Message]) -> Any:
        """The service's answer for one transcript; ServiceUnavailable if there is none."""
        return self._post("/v1/classify", {"messages": list(messages)})

    def screen(
        self, messages: Sequence[Message], signals: Sequence[Signal], region: str | None
    ) -> set[str]:
        """The ids of the signals that may be used; empty on any error (fail closed)."""
        try:
            return _allowed(self._post("/v1/screen", _screen_body(messages, signals, region)))
        except (ServiceUnavailable, KeyError, TypeError, ValueError):
            return set()


class AsyncClient:
    """Asynchronous client, the same contract as `Client`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 2.0,
        retries: int = 2,
        backoff: float = 0.1,
        max_wait: float = 1.0,
        deadline: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._policy = _Policy(retries, backoff, max_wait, deadline)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        started, attempt = time.monotonic(), 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._http.post(path, json=body)
                if response.status_code == 200:
                    return response.json()
            except (httpx.TransportError, ValueError):
                response = None
            delay = self._policy.wait(attempt, response, started)
            if delay is None:
                status = response.status_code if response is not None else "no answer"
                raise ServiceUnavailable(f"{path}: {status}")
            await asyncio.sleep(delay)
            attempt += 1

    async def classify(self, messages: Sequence[Message]) -> Any:
        return await self._post("/v1/classify", {"messages": list(messages)})

    async def screen(
        self, messages: Sequence[Message], signals: Sequence[Signal], region: str | None
    ) -> set[str]:
        try:
            answer = await self._post("/v1/screen", _screen_body(messages, signals, region))
            return _allowed(answer)
        except (ServiceUnavailable, KeyError, TypeError, ValueError):
            return set()
