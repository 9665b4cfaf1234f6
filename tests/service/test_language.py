"""Language per message, and a gate that fails closed where the model's judgement ends."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.language import UNKNOWN, LanguageDetector
from service.settings import Settings

RU_DIABETES = "Мне на прошлой неделе поставили диагноз диабет второго типа"
ZH_DIABETES = "我上个月被诊断出患有二型糖尿病，现在每天都要打胰岛素"


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector()


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("I was diagnosed with type 2 diabetes last month", "en"),
        ("Je suis diabétique depuis 2019, je dois surveiller ma glycémie", "fr"),
        ("عندي مرض السكري من سنة وباخد انسولين كل يوم", "ar"),
        ("ana 3ayan awi w el doctor 2al 3andi sokkar", "ar"),  # Arabizi
        ("من دیروز سرماخوردگی دارم و سرم خیلی درد میکنه", "fa"),
        (RU_DIABETES, "ru"),
        (ZH_DIABETES, "zh"),
    ],
)
def test_detects_the_language_of_a_message(
    detector: LanguageDetector, text: str, lang: str
) -> None:
    assert detector.guess(text).language == lang


def test_a_short_message_takes_the_transcript_language(detector: LanguageDetector) -> None:
    assert detector.guess("lol").language == UNKNOWN
    langs = detector.transcript(
        ["I was diagnosed with type 2 diabetes last month, it has been hard", "yes me too"],
        frozenset({"en"}),
    )
    assert [g.language for g in langs.messages] == ["en", "en"]
    assert langs.messages[1].source == "transcript"
    assert langs.unsupported() == []


def _screen(client: TestClient, messages: list[str], sources: list[int] | None = None) -> dict:
    r = client.post(
        "/v1/screen",
        json={
            "messages": [{"role": "user", "content": m} for m in messages],
            "signals": [{"id": "s1", "text": "planner apps", "source_messages": sources}],
            "region": "US",
        },
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_classify_reports_language_per_message(client: TestClient) -> None:
    r = client.post(
        "/v1/classify",
        json={
            "messages": [
                {"role": "user", "content": "Can you recommend hiking boots for rocky trails?"},
                {"role": "user", "content": RU_DIABETES},
            ]
        },
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert [(m["language"], m["language_supported"]) for m in out["messages"]] == [
        ("en", True),
        ("ru", False),
    ]
    assert out["language"] in ("en", "ru")


@pytest.mark.parametrize(("text", "lang"), [(RU_DIABETES, "ru"), (ZH_DIABETES, "zh")])
def test_screen_blocks_signals_from_an_unsupported_language(
    client: TestClient, text: str, lang: str
) -> None:
    out = _screen(client, [text, "Any good planner app?"])
    (d,) = out["decisions"]
    assert d["decision"] == "blocked"
    reason = {"type": "unsupported_language", "label": None, "message_index": 0, "language": lang}
    assert reason in d["reasons"]


def test_the_language_of_the_source_message_decides(client: TestClient) -> None:
    messages = ["Can you recommend a good weekly planner app for work?", RU_DIABETES]
    allowed = _screen(client, messages, sources=[0])["decisions"][0]
    assert not [r for r in allowed["reasons"] if r["type"] == "unsupported_language"]
    blocked = _screen(client, messages, sources=[1])["decisions"][0]
    assert blocked["decision"] == "blocked"
    assert [r["type"] for r in blocked["reasons"]].count("unsupported_language") == 1


def test_score_mode_judges_unsupported_languages_anyway(shipped_model_dir: Path) -> None:
    settings = Settings(
        model_dir=shipped_model_dir, auth_required=False, unsupported_language="score"
    )
    with TestClient(create_app(settings)) as client:
        out = _screen(client, [ZH_DIABETES, "Any good planner app?"])
    reasons = out["decisions"][0]["reasons"]
    assert not [r for r in reasons if r["type"] == "unsupported_language"]


def test_model_info_names_its_supported_languages(client: TestClient) -> None:
    info = client.get("/v1/model").json()
    assert set(info["supported_languages"]) <= set(info["languages"]) | {"ru", "it", "pl", "pt"}
    assert "en" in info["languages"]
