"""Named hostile inputs: each gets a clear 4xx or a correct answer, never a 5xx or a hang."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient


def post(client: TestClient, content: bytes | str, path: str = "/v1/classify"):
    data = content.encode() if isinstance(content, str) else content
    return client.post(path, content=data, headers={"content-type": "application/json"})


def one(text: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": text}]})


def flags(client: TestClient, text: str) -> set[str]:
    r = post(client, one(text))
    assert r.status_code == 200, r.text
    return {k for k, v in r.json()["transcript"]["flags"].items() if v}


def test_five_megabyte_message_is_413(client: TestClient) -> None:
    r = post(client, one("a" * 5_000_000))
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"


def test_ten_thousand_messages_is_a_clear_4xx(client: TestClient) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}] * 10_000})
    r = post(client, body)
    assert r.status_code in (413, 422)
    assert r.json()["code"] in ("body_too_large", "limit_exceeded")


def test_deeply_nested_json_is_422(client: TestClient) -> None:
    r = post(client, '{"messages": ' + "[" * 5_000 + "]" * 5_000 + "}")
    assert 400 <= r.status_code < 500


def test_invalid_utf8_is_4xx(client: TestClient) -> None:
    r = post(client, b'{"messages": [{"role": "user", "content": "\xff\xfe bad"}]}')
    assert 400 <= r.status_code < 500
    assert "code" in r.json()


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\u200b\u200b", "🙂🙂🔥"])
def test_empty_whitespace_and_emoji_only_are_not_sensitive(client: TestClient, text: str) -> None:
    assert flags(client, text) == set()


def test_html_and_markdown(client: TestClient) -> None:
    assert flags(
        client, "<p>I was <b>diagnosed</b> with <i>type 2 diabetes</i> last month</p>"
    ) == {"health"}
    assert flags(client, "**Which party** should I _vote_ for in the `election`?") == {"politics"}


def test_mixed_right_to_left_and_left_to_right(client: TestClient) -> None:
    r = post(client, one("\u202eI was diagnosed with type 2 diabetes\u202c مرحبا hello"))
    assert r.status_code == 200
    assert r.json()["transcript"]["flags"]["health"] is True


def test_zero_width_inside_keywords(client: TestClient) -> None:
    assert flags(client, "I was diagnosed with dia\u200bbetes last month") == {"health"}


def test_lookalike_letters(client: TestClient) -> None:
    # Cyrillic "о" and "с" inside Latin words
    assert flags(client, "We go to \u0441hur\u0441h every Sunday to pray") == {"religion"}
    assert flags(client, "I was diagnosed with diab\u0435tes last m\u043enth") == {"health"}


def test_digit_and_symbol_lookalikes(client: TestClient) -> None:
    r = post(client, one("I was diagnosed with d1abetes last month"))
    assert r.status_code == 200
    message = r.json()["messages"][0]
    assert message["flags"]["health"] is True
    assert message["windows"] == 2  # the text and its de-obfuscated reading
    assert flags(client, "We go to the m0sque every Friday to pr@y") == {"religion"}
    # Arabizi keeps its digits and is read as written
    assert flags(client, "3ndi sokkar mn sana w ba5od insulin kol yom") == {"health"}
