"""API keys, bounds, batch requests, context and errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

BODY = {"messages": [{"role": "user", "content": "Which party should I vote for?"}]}


@pytest.fixture(scope="module")
def authed(
    shipped_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(
        "\ufeff# keys of the ad pipeline\nfile-key-1-0123456789\n\n  file-key-2-0123456789  \n",
        encoding="utf-8",
    )
    settings = Settings(
        model_dir=shipped_model_dir,
        api_keys="env-key-0123456789ab",
        api_keys_file=keys,
        max_body_bytes=5_000,
        max_transcripts=3,
        max_message_chars=2_000,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_keys_are_required_by_default(shipped_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="API keys are required"):
        Settings(model_dir=shipped_model_dir)


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong", "Basic env-key-0123456789ab", "Bearer ", "env-key-0123456789ab"],
)
def test_missing_or_wrong_key_is_401(authed: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    for path, method in (("/v1/classify", "post"), ("/v1/screen", "post"), ("/v1/model", "get")):
        r = authed.request(method.upper(), path, json=BODY, headers=headers)
        assert r.status_code == 401, (path, header)
        assert r.json()["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "key", ["env-key-0123456789ab", "file-key-1-0123456789", "file-key-2-0123456789"]
)
def test_keys_from_env_and_file(authed: TestClient, key: str) -> None:
    r = authed.post("/v1/classify", json=BODY, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200


def test_health_needs_no_key(authed: TestClient) -> None:
    assert authed.get("/healthz").status_code == 200
    assert authed.get("/readyz").status_code == 200


def test_body_over_cap_is_413_before_parsing(authed: TestClient) -> None:
    big = {"messages": [{"role": "user", "content": "a" * 6_000}]}
    r = authed.post(
        "/v1/classify", json=big, headers={"Authorization": "Bearer env-key-0123456789ab"}
    )
    assert r.status_code == 413
    assert r.json()["limit"] == {"name": "max_body_bytes", "value": 5_000}
    assert "aaaa" not in r.text


def test_message_over_cap_is_413_naming_the_bound(authed: TestClient) -> None:
    body = {"messages": [{"role": "user", "content": "b " * 1_500}]}
    r = authed.post(
        "/v1/classify", json=body, headers={"Authorization": "Bearer env-key-0123456789ab"}
    )
    assert r.status_code == 413
    assert r.json()["limit"] == {"name": "max_message_chars", "value": 2_000}


def test_too_many_transcripts_is_422(authed: TestClient) -> None:
    body = {"transcripts": [BODY] * 4}
    r = authed.post(
        "/v1/classify", json=body, headers={"Authorization": "Bearer env-key-0123456789ab"}
    )
    assert r.status_code == 422
    assert r.json()["limit"] == {"name": "max_transcripts", "value": 3}


def test_batch_echoes_ids_in_order(client: TestClient) -> None:
    body = {
        "transcripts": [
            {
                "id": "a",
                "messages": [
                    {"role": "user", "content": "We fast during Ramadan and pray at the mosque"}
                ],
            },
            {"messages": [{"role": "user", "content": "Recommend hiking boots for rocky trails"}]},
            {
                "id": "c",
                "messages": [
                    {"role": "user", "content": "Which party should I vote for in the election?"}
                ],
            },
        ]
    }
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["id"] for x in results] == ["a", None, "c"]
    assert results[0]["transcript"]["flags"]["religion"] is True
    assert results[1]["transcript"]["sensitive"] is False
    assert results[2]["transcript"]["flags"]["politics"] is True


STORY = (
    "Quick update from my side. Work has been busy since the new manager started, and we moved "
    "the whole team to another floor last Tuesday. My sister came to stay for the weekend, so we "
    "cooked a lot, watched two old films and walked by the river on Sunday morning. The car "
    "needed new tyres as well, which took most of Saturday at the garage. I also finally sorted "
    "out the spare room and gave three bags of clothes away. On Monday the internet went down "
    "for half the day, so I worked from the library, which was quieter than I expected. The "
    "neighbours are building an extension and the noise starts at eight every morning. We are "
    "still planning the summer trip: maybe the coast again, maybe the mountains if the prices "
    "drop. The kids want a dog, and I keep saying we need a bigger garden first. "
)


@pytest.mark.parametrize(
    "filler",
    [
        # e5-multi 1.5.0 missed this one (0.55); 1.4.0, 1.6.0 and 1.7.0 score it 0.99-1.00.
        pytest.param(
            "We talked about the weather, the traffic and the new coffee place. " * 40,
            id="repeated",
        ),
        pytest.param(STORY, id="story"),
    ],
)
def test_evidence_names_label_message_and_window(client: TestClient, filler: str) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Recommend hiking boots for rocky trails"},
            {
                "role": "user",
                "content": filler + "I was diagnosed with type 2 diabetes last month.",
            },
        ]
    }
    out = client.post("/v1/classify", json=body).json()
    ev = [e for e in out["transcript"]["evidence"] if e["label"] == "health"]
    assert ev and ev[0]["message_index"] == 1
    assert ev[0]["window"] == out["messages"][1]["windows"] - 1  # the last window holds it


def test_refused_key_costs_no_model_time(authed: TestClient) -> None:
    engine = authed.app.state.engine  # type: ignore[attr-defined]
    before = engine.batcher.stats.windows
    for _ in range(5):
        assert authed.post("/v1/classify", json=BODY).status_code == 401
    assert engine.batcher.stats.windows == before
