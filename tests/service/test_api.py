"""End-to-end through the API on the shipped model."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

CLEAR_CASES = [
    ("I was diagnosed with type 2 diabetes last month", {"health"}),
    ("Which party should I vote for in the election?", {"politics"}),
    ("We fast during Ramadan and pray at the mosque", {"religion"}),
    ("Recommend hiking boots for rocky trails", set()),
    ("my therapist upped my antidepressant dose and now i can't sleep", {"health"}),
    ("Can you help me write a letter to my MP opposing the new immigration bill?", {"politics"}),
    ("what does the bible say about forgiving someone who hurt you", {"religion"}),
    ("What's a good recipe for banana bread without nuts?", set()),
    ("How do I reverse a linked list in Python?", set()),
]


def classify(client: TestClient, *contents: str) -> dict:
    body = {"messages": [{"role": "user", "content": c} for c in contents]}
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize(("text", "expected"), CLEAR_CASES)
def test_clear_cases(client: TestClient, text: str, expected: set[str]) -> None:
    out = classify(client, text)
    flagged = {lab for lab, f in out["transcript"]["flags"].items() if f}
    assert flagged == expected, out["transcript"]["scores"]
    assert out["transcript"]["sensitive"] == bool(expected)


def test_response_shape_and_transcript_union(client: TestClient) -> None:
    out = classify(
        client,
        "Recommend hiking boots for rocky trails",
        "I was diagnosed with type 2 diabetes last month",
    )
    assert out["model"]["name"] and out["model"]["version"]
    assert [m["index"] for m in out["messages"]] == [0, 1]
    assert out["messages"][0]["sensitive"] is False
    assert out["messages"][1]["flags"]["health"] is True
    assert out["transcript"]["flags"]["health"] is True
    for m in out["messages"]:
        assert set(m["scores"]) == {"health", "religion", "politics"}
        assert all(0.0 <= s <= 1.0 for s in m["scores"].values())
        assert m["windows"] == 1
    # the transcript score per label is the highest message score
    for lab in ("health", "religion", "politics"):
        assert out["transcript"]["scores"][lab] == max(m["scores"][lab] for m in out["messages"])


def test_long_message_is_scored_in_windows(client: TestClient) -> None:
    filler = "We talked about the weather, the traffic and the new coffee place. " * 60
    out = classify(client, filler + "I was diagnosed with type 2 diabetes last month.")
    msg = out["messages"][0]
    assert msg["windows"] > 1
    assert msg["flags"]["health"] is True  # the sensitive end is not truncated away


def test_zero_width_characters_do_not_hide_a_topic(client: TestClient) -> None:
    plain = classify(client, "I was diagnosed with type 2 diabetes last month")
    hidden = classify(client, "I was diag\u200bnosed with type 2 dia\u200cbe\u200dtes last month")
    assert hidden["messages"][0]["scores"] == plain["messages"][0]["scores"]


def test_whitespace_only_message_is_not_sensitive(client: TestClient) -> None:
    out = classify(client, "   \n\t ")
    assert out["transcript"]["sensitive"] is False
    assert out["messages"][0]["windows"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": []}, "messages"),
        ({}, "body"),
        ({"messages": [{"role": "user", "content": "x"}], "transcripts": []}, "transcripts"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
        ({"messages": [{"role": "pirate", "content": "I have diabetes"}]}, "messages[0].role"),
        ({"messages": "I have diabetes"}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ],
)
def test_invalid_input_is_422_and_names_the_field(
    client: TestClient, body: dict, field: str
) -> None:
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 422
    err = r.json()
    assert err["code"] == "invalid_request"
    assert err["message"].startswith(field)
    assert "diabetes" not in r.text  # the offending value is never echoed


def test_too_many_messages_is_422(client: TestClient) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}] * 51}
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 422
    assert r.json()["code"] == "limit_exceeded"
    assert r.json()["limit"] == {"name": "max_messages", "value": 50}


def test_health_ready_and_model(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    info = client.get("/v1/model").json()
    assert info["labels"] == ["health", "religion", "politics"]
    assert set(info["thresholds"]) == set(info["labels"])
    assert info["max_length"] >= 64


def test_openapi_has_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/classify" in spec["paths"]
    assert spec["components"]["schemas"]["ClassifyRequest"]["examples"]


def test_chat_completions_message_shapes_are_accepted(client: TestClient) -> None:
    """Tool and developer turns, content parts, names, tool calls with null content: the text
    parts are scored, the rest skipped and counted; indices stay the request's."""
    messages = [
        {"role": "developer", "content": "You are a helpful shopping assistant."},
        {
            "role": "user",
            "name": "amira",
            "content": [
                {"type": "text", "text": "I was diagnosed with type 2 diabetes last month"},
                {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "3 results: walking shoes, socks, bag"},
    ]
    r = client.post("/v1/classify", json={"messages": messages})
    assert r.status_code == 200, r.text
    out = r.json()["messages"]
    assert [m["index"] for m in out] == [0, 1, 2, 3]
    assert [m["role"] for m in out] == ["developer", "user", "assistant", "tool"]
    assert [m["skipped_parts"] for m in out] == [0, 1, 1, 0]
    assert out[1]["flags"]["health"]  # the text part was read
    assert out[2]["windows"] == 0 and not out[2]["sensitive"]  # nothing to read
    plain = client.post(
        "/v1/classify",
        json={"messages": [{"role": "user", "content": messages[1]["content"][0]["text"]}]},
    ).json()["messages"][0]
    assert out[1]["scores"]["health"] == pytest.approx(plain["scores"]["health"], abs=0.05)
