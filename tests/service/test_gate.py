"""The signal gate through /v1/screen: each reason, and allowed when there is none."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

MESSAGES = [
    {"role": "user", "content": "Recommend hiking boots for rocky trails"},
    {"role": "assistant", "content": "Sure, here are three sturdy options."},
    {"role": "user", "content": "I was diagnosed with type 2 diabetes last month"},
]


def screen(
    client: TestClient,
    signals: list[dict],
    region: str | None = "US",
    messages: list[dict] = MESSAGES,
) -> dict:
    body: dict = {"messages": messages, "signals": signals}
    if region is not None:
        body["region"] = region
    r = client.post("/v1/screen", json=body)
    assert r.status_code == 200, r.text
    return {d["id"]: d for d in r.json()["decisions"]}


def test_clean_signal_from_clean_source_is_allowed(client: TestClient) -> None:
    out = screen(client, [{"id": "boots", "text": "hiking boots", "source_messages": [0]}], "US")
    assert out["boots"] == {"id": "boots", "decision": "allowed", "reasons": []}


def test_sensitive_source_blocks(client: TestClient) -> None:
    out = screen(client, [{"id": "gluco", "text": "kitchen scales", "source_messages": [2]}])
    assert out["gluco"]["decision"] == "blocked"
    assert {"type": "source", "label": "health", "message_index": 2, "language": None} in out[
        "gluco"
    ]["reasons"]


def test_sensitive_signal_text_blocks(client: TestClient) -> None:
    out = screen(
        client,
        [
            {"id": "pumps", "text": "insulin pumps for diabetics", "source_messages": [0]},
            {
                "id": "retreat",
                "text": "church retreats and prayer weekends",
                "source_messages": [0],
            },
        ],
    )
    assert {"type": "signal", "label": "health", "message_index": None, "language": None} in out[
        "pumps"
    ]["reasons"]
    assert any(
        r["type"] == "signal" and r["label"] == "religion" for r in out["retreat"]["reasons"]
    )


def test_no_source_and_flagged_transcript_blocks(client: TestClient) -> None:
    out = screen(client, [{"id": "gear", "text": "outdoor gear"}])
    assert out["gear"]["decision"] == "blocked"
    assert out["gear"]["reasons"] == [
        {"type": "transcript", "label": "health", "message_index": None, "language": None}
    ]


def test_no_source_and_clean_transcript_is_allowed(client: TestClient) -> None:
    out = screen(client, [{"id": "gear", "text": "outdoor gear"}], messages=MESSAGES[:2])
    assert out["gear"]["decision"] == "allowed"


def test_blocked_jurisdiction(client: TestClient) -> None:
    for region in ("de", "FR", "GB", "KR", "NO"):
        out = screen(
            client, [{"id": "boots", "text": "hiking boots", "source_messages": [0]}], region
        )
        assert out["boots"]["decision"] == "blocked"
        assert out["boots"]["reasons"] == [
            {"type": "jurisdiction", "label": None, "message_index": None, "language": None}
        ]


def test_bad_source_index_is_422_fail_closed(client: TestClient) -> None:
    r = client.post(
        "/v1/screen",
        json={
            "messages": MESSAGES,
            "signals": [{"id": "x", "text": "boots", "source_messages": [7]}],
        },
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"


def test_bad_region_is_422(client: TestClient) -> None:
    for region in ("Germany", "EU", "XX", "U1", ""):
        r = client.post(
            "/v1/screen",
            json={
                "messages": MESSAGES,
                "region": region,
                "signals": [{"id": "x", "text": "boots"}],
            },
        )
        assert r.status_code == 422, region
        assert r.json()["errors"][0]["field"] == "region"


def test_region_aliases_are_read_as_iso_codes(client: TestClient) -> None:
    for region in ("UK", "uk", "EL"):  # GB and GR, both blocked by default
        out = screen(client, [{"id": "b", "text": "hiking boots", "source_messages": [0]}], region)
        assert out["b"]["reasons"][0]["type"] == "jurisdiction", region


def test_a_missing_region_is_blocked_unless_allowed(client: TestClient) -> None:
    signal = [{"id": "boots", "text": "hiking boots", "source_messages": [0]}]
    out = screen(client, signal, region=None)
    assert out["boots"]["decision"] == "blocked"
    assert [r["type"] for r in out["boots"]["reasons"]] == ["jurisdiction"]


def test_region_optional_setting(judged_model_dir: Path) -> None:
    settings = Settings(model_dir=judged_model_dir, auth_required=False, region_required=False)
    with TestClient(create_app(settings)) as c:
        out = screen(c, [{"id": "boots", "text": "hiking boots", "source_messages": [0]}], None)
    assert out["boots"]["decision"] == "allowed"


def test_blocked_regions_must_be_iso_codes(shipped_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="ST_BLOCKED_REGIONS"):
        Settings(model_dir=shipped_model_dir, auth_required=False, blocked_regions="DE,EU")


def test_duplicate_signal_ids_are_422_without_echoing_them(client: TestClient) -> None:
    r = client.post(
        "/v1/screen",
        json={
            "messages": MESSAGES,
            "region": "US",
            "signals": [
                {"id": "same-id-42", "text": "glucose monitor", "source_messages": [2]},
                {"id": "same-id-42", "text": "hiking boots", "source_messages": [0]},
            ],
        },
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"
    assert "signals[1].id" in r.json()["message"]
    assert "same-id-42" not in r.text
