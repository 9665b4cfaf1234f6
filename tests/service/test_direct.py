"""The direct routes (`service/routes/direct.py`) answer every request exactly as the FastAPI
routes do: the same requests, sent to an app with them and to one without, get the same
status, JSON body and headers; and they do serve the scoring routes themselves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from service.app import create_app, load_classifier
from service.classifier import Classifier
from service.routes.direct import Route
from service.settings import Settings

KEY = "direct-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {**AUTH, "content-type": "application/json"}
SIGNAL = {"id": "s", "text": "running shoes"}
ONE = {"messages": [{"role": "user", "content": "I was diagnosed with diabetes last week."}]}

# (name, path, body, headers): valid and invalid requests of every kind the routes take
REQUESTS: list[tuple[str, str, Any, dict[str, str]]] = [
    ("classify one", "/v1/classify", ONE, AUTH),
    (
        "classify batch",
        "/v1/classify",
        {
            "transcripts": [
                {"id": "a", "messages": [{"role": "user", "content": "Which party wins?"}]},
                {
                    "id": "b",
                    "messages": [
                        {"role": "user", "content": "We pray at the mosque on Fridays."},
                        {"role": "assistant", "content": "That sounds peaceful."},
                        {"role": "user", "content": "Any good running shoes?"},
                    ],
                },
            ]
        },
        AUTH,
    ),
    (
        "classify content parts",
        "/v1/classify",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "My therapist says I have anxiety."},
                        {"type": "image_url", "image_url": {"url": "https://x.example/a.png"}},
                    ],
                }
            ]
        },
        AUTH,
    ),
    (
        "screen",
        "/v1/screen",
        {
            "messages": [
                {"role": "user", "content": "I have diabetes, what snacks are fine?"},
                {"role": "user", "content": "Also looking for a new laptop."},
            ],
            "signals": [
                {"id": "snacks", "text": "low sugar snacks", "source_messages": [0]},
                {"id": "laptops", "text": "laptops", "source_messages": [1]},
            ],
            "region": "FR",
        },
        AUTH,
    ),
    ("invalid JSON", "/v1/classify", b'{"messages": [', JSON),
    ("empty body", "/v1/classify", b"", JSON),
    ("not UTF-8", "/v1/screen", b'{"messages": "\xff\xfe"}', JSON),
    (
        "lone surrogate",
        "/v1/classify",
        b'{"messages": [{"role": "user", "content": "a \\ud800"}]}',
        JSON,
    ),
    ("nested too deep", "/v1/classify", b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", JSON),
    ("a list, not an object", "/v1/classify", [1, 2], AUTH),
    ("unknown field", "/v1/classify", {**ONE, "made_up_field_7x": 1}, AUTH),
    ("neither messages nor transcripts", "/v1/classify", {}, AUTH),
    ("bad role", "/v1/classify", {"messages": [{"role": "robot", "content": "hi"}]}, AUTH),
    (
        "too many messages",
        "/v1/classify",
        {"messages": [{"role": "user", "content": "hi"}] * 6},
        AUTH,
    ),
    (
        "message too long",
        "/v1/classify",
        {"messages": [{"role": "user", "content": "a" * 900}]},
        AUTH,
    ),
    (
        "too many transcripts",
        "/v1/classify",
        {"transcripts": [{"messages": [{"role": "user", "content": "hi"}]}] * 4},
        AUTH,
    ),
    (
        "bad source index",
        "/v1/screen",
        {**ONE, "signals": [{"id": "s", "text": "shoes", "source_messages": [3]}]},
        AUTH,
    ),
    ("bad region", "/v1/screen", {**ONE, "signals": [SIGNAL], "region": "Mars"}, AUTH),
    ("no key", "/v1/classify", ONE, {}),
    ("form body", "/v1/classify", b"messages=hi", {**AUTH, "content-type": "text/plain"}),
    ("JSON suffix type", "/v1/classify", ONE, {**AUTH, "content-type": "application/vnd+json"}),
]


def settings(model_dir: Path, direct: bool) -> Settings:
    return Settings(
        model_dir=model_dir,
        api_keys=KEY,
        max_messages=5,
        max_message_chars=800,
        max_transcripts=3,
        cache_entries=0,
        direct_routes=direct,
    )


@pytest.fixture(scope="module")
def classifier(judged_model_dir: Path) -> Classifier:
    return load_classifier(Settings(model_dir=judged_model_dir, auth_required=False))


@pytest.fixture(scope="module")
def both(judged_model_dir: Path, classifier: Classifier) -> Iterator[tuple[TestClient, TestClient]]:
    direct = create_app(settings(judged_model_dir, True), classifier)
    plain = create_app(settings(judged_model_dir, False), classifier)
    with TestClient(direct) as d, TestClient(plain) as p:
        yield d, p


def send(client: TestClient, path: str, body: Any, headers: dict[str, str]) -> Any:
    if isinstance(body, bytes):
        return client.post(path, content=body, headers=headers)
    return client.post(path, json=body, headers=headers)


@pytest.mark.parametrize("name, path, body, headers", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_the_same_answer_as_fastapi(
    both: tuple[TestClient, TestClient],
    name: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> None:
    direct, plain = (send(c, path, body, headers) for c in both)
    assert direct.status_code == plain.status_code, (name, direct.text, plain.text)
    assert direct.json() == plain.json(), name
    for h in ("content-type", "content-length", "www-authenticate", "retry-after"):
        assert direct.headers.get(h) == plain.headers.get(h), (name, h)


def test_errors_name_fields_and_never_echo_the_body(both: tuple[TestClient, TestClient]) -> None:
    direct, _ = both
    r = send(direct, "/v1/classify", b'{"messages": [{"role": "user", "content": "secret-9', JSON)
    assert r.status_code == 422 and "secret-9" not in r.text
    assert r.json()["errors"][0]["field"] == "body"
    assert r.json()["errors"][0]["problem"].startswith("invalid JSON at character ")
    [surrogate] = [r[1:] for r in REQUESTS if r[0] == "lone surrogate"]
    r = send(direct, *surrogate)
    assert r.json()["errors"][0]["field"] == "messages[0].content"


def test_they_serve_the_scoring_routes_themselves(
    judged_model_dir: Path, classifier: Classifier
) -> None:
    """Which route answered a request is in its ASGI scope once it is answered (the request
    context reads it for its metrics): the direct path's own route with them, FastAPI's route
    without them; so what answered in the tests above was the direct path."""
    answered: dict[bool, list[Any]] = {True: [], False: []}
    for direct in (True, False):
        app = create_app(settings(judged_model_dir, direct), classifier)

        class Spy:
            def __init__(self, inner: ASGIApp, seen: list[Any] = answered[direct]) -> None:
                self.inner, self.seen = inner, seen

            async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
                await self.inner(scope, receive, send)
                if scope["type"] == "http":
                    self.seen.append(scope.get("route"))

        app.add_middleware(Spy)
        with TestClient(app) as c:
            for path, body in (("/v1/classify", ONE), ("/v1/screen", {**ONE, "signals": [SIGNAL]})):
                assert c.post(path, json=body, headers=AUTH).status_code == 200
            assert (
                c.post(
                    "/v1/classify", content=b"x", headers={**AUTH, "content-type": "text/plain"}
                ).status_code
                == 422
            )
    assert [type(r) for r in answered[True]] == [Route, Route, APIRoute]
    assert [r.path for r in answered[True]] == ["/v1/classify", "/v1/screen", "/v1/classify"]
    assert [type(r) for r in answered[False]] == [APIRoute] * 3


def test_not_ready_is_the_same_503(judged_model_dir: Path, classifier: Classifier) -> None:
    """Before the lifespan has loaded the model (no `with`: no lifespan), both answer 503."""
    answers = []
    for direct in (True, False):
        c = TestClient(create_app(settings(judged_model_dir, direct), classifier))
        r = c.post("/v1/classify", json=ONE, headers=AUTH)
        answers.append((r.status_code, r.json()))
    assert answers[0] == answers[1] and answers[0][0] == 503
    assert answers[0][1]["code"] == "not_ready"
