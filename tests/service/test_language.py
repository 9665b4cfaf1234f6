"""Language per message, and a gate that fails closed where the model's judgement ends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.artifact import ModelArtifact
from service.language import UNKNOWN, LanguageDetector
from service.settings import Settings
from tests.conftest import with_supported_languages

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


def test_a_message_seen_before_is_not_identified_again() -> None:
    """The cache holds what the identifier said, by digest (no text), per scope: a transcript
    re-sent with one new message asks the identifier about the new message and the whole."""
    det = LanguageDetector(cache_entries=100)
    calls: list[str] = []
    detect = det._detector.detect

    def counting(text: str, **kw: object) -> object:
        calls.append(text)
        return detect(text, **kw)

    det._detector.detect = counting
    convo = ["I was diagnosed with type 2 diabetes last month", "Sorry to hear that."]
    first = det.transcript(convo, frozenset({"en"}), scope="a")
    assert len(calls) == 3  # two messages and the whole
    again = det.transcript([*convo, "Je cherche un agenda papier"], frozenset({"en"}), scope="a")
    assert len(calls) == 5  # only the new message and the new whole
    assert again.messages[:2] == first.messages
    assert again.messages[2].language == "fr"
    det.transcript(convo, frozenset({"en"}), scope="b")  # another tenant: asked again
    assert len(calls) == 8
    assert all(isinstance(k, bytes) and len(k) == 16 for k in det.cache._data)
    assert LanguageDetector().transcript(convo).messages == first.messages  # no cache: same


def test_a_long_transcript_re_sent_is_not_identified_again_as_a_whole() -> None:
    """The identifier reads the first 1,000 characters of a transcript's messages together: a
    transcript longer than that, re-sent with a new message, asks only about the new one, and
    every answer is the one an uncached detector gives."""
    det = LanguageDetector(cache_entries=100)
    calls: list[str] = []
    detect = det._detector.detect

    def counting(text: str, **kw: object) -> object:
        calls.append(text)
        return detect(text, **kw)

    det._detector.detect = counting
    convo = [
        f"turn {i}: we are planning a long weekend walking in the mountains" for i in range(40)
    ]
    det.transcript(convo, frozenset({"en"}), scope="a")
    assert len(calls) == 41  # forty messages and the whole
    assert len(calls[-1]) == 1000  # what the identifier reads of the whole
    grown = [*convo, "Je cherche un agenda papier"]
    again = det.transcript(grown, frozenset({"en"}), scope="a")
    assert len(calls) == 42  # the new message only
    assert again == LanguageDetector().transcript(grown, frozenset({"en"}))
    short = ["ok", "yes"]  # too short alone: they take the transcript's language
    assert det.transcript(short, scope="a") == LanguageDetector().transcript(short)


@pytest.fixture(scope="module")
def pinned(
    shipped_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """The shipped model declaring ar, en and fr supported: the gate's language rule, tested
    apart from which languages a given model earns on real text."""
    model_dir = with_supported_languages(
        shipped_model_dir, tmp_path_factory.mktemp("pinned") / "m", ["ar", "en", "fr"]
    )
    with TestClient(create_app(Settings(model_dir=model_dir, auth_required=False))) as c:
        yield c


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


def test_classify_reports_language_per_message(pinned: TestClient) -> None:
    r = pinned.post(
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
    pinned: TestClient, text: str, lang: str
) -> None:
    out = _screen(pinned, [text, "Any good planner app?"])
    (d,) = out["decisions"]
    assert d["decision"] == "blocked"
    reason = {"type": "unsupported_language", "label": None, "message_index": 0, "language": lang}
    assert reason in d["reasons"]


def test_the_language_of_the_source_message_decides(pinned: TestClient) -> None:
    messages = ["Can you recommend a good weekly planner app for work?", RU_DIABETES]
    allowed = _screen(pinned, messages, sources=[0])["decisions"][0]
    assert not [r for r in allowed["reasons"] if r["type"] == "unsupported_language"]
    blocked = _screen(pinned, messages, sources=[1])["decisions"][0]
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


def test_model_info_names_its_supported_languages(pinned: TestClient) -> None:
    info = pinned.get("/v1/model").json()
    assert info["supported_languages"] == ["ar", "en", "fr"]
    assert "en" in info["languages"]


def test_the_shipped_declaration_follows_the_real_test(shipped_model_dir: Path) -> None:
    """A model with a real test declares supported exactly the languages whose real-test
    macro-F1 (over the labels with positives) reaches 0.80; one made before the real test
    existed falls back to the languages it was trained on."""
    artifact = ModelArtifact.load(shipped_model_dir)
    metrics = json.loads((shipped_model_dir / "metrics.json").read_text(encoding="utf-8"))
    if "real_test" not in metrics:
        assert artifact.supported_languages == frozenset(artifact.languages)
        return
    earned = {
        lang
        for lang, r in metrics["real_test"]["per_language"].items()
        if r["macro_f1_present"] >= 0.80
    }
    assert artifact.supported_languages == earned


def test_the_shipped_model_blocks_by_default_where_its_judgement_ends(
    shipped_model_dir: Path,
) -> None:
    """With the shipped declaration and default settings, a signal from an English message is
    judged if English is supported and blocked with `unsupported_language` otherwise."""
    supported = ModelArtifact.load(shipped_model_dir).supported_languages
    settings = Settings(model_dir=shipped_model_dir, auth_required=False)
    with TestClient(create_app(settings)) as c:
        out = _screen(c, ["Can you recommend a good weekly planner app for work?"], [0])
    reasons = [r for r in out["decisions"][0]["reasons"] if r["type"] == "unsupported_language"]
    assert bool(reasons) == ("en" not in supported)
