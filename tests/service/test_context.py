"""How a message is read after the turns before it: the context a model directory asks for."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from service.artifact import ModelArtifact, ModelDirError
from service.classifier import Classifier, TextEncoder, render_context
from service.engine import ScoringEngine
from service.settings import DEFAULT_MODEL_DIR as MODEL_DIR

TURNS = [
    ("user", "I was diagnosed with type 2 diabetes last month"),
    ("assistant", "I'm sorry to hear that. How can I help?"),
    ("user", "yeah any planner app?"),
]


def test_an_older_model_reads_the_tail_of_the_previous_message() -> None:
    assert render_context(TURNS[:2], 0, 10) == TURNS[1][1][-10:]
    assert render_context(TURNS[:2], 0, 0) == ""
    assert render_context([], 0, 200) == ""


def test_a_turns_model_reads_the_last_turns_with_their_roles() -> None:
    assert render_context(TURNS[:2], 3, 600) == f"user: {TURNS[0][1]} assistant: {TURNS[1][1]}"
    # only the last `context_turns` turns
    assert render_context(TURNS, 2, 600) == f"assistant: {TURNS[1][1]} user: {TURNS[2][1]}"
    # each turn keeps its beginning (where it names its subject) within its share of the budget
    long_reply = ("assistant", "Here is a long list of planner apps. " * 20)
    out = render_context([TURNS[0], long_reply], 2, 100)
    assert out.startswith("user: I was diagnosed with type 2 diabetes")
    assert len(out) <= 100 + len("user: ") + len(" assistant: ")


def encoder(turns: int, max_length: int = 32) -> TextEncoder:
    tokenizer = (MODEL_DIR / "tokenizer.json").read_text(encoding="utf-8")
    return TextEncoder(tokenizer, max_length, context_chars=600, context_turns=turns)


def test_the_most_recent_context_tokens_are_kept() -> None:
    enc = encoder(3)
    text = "any planner app?"
    context = "user: " + "old words " * 40 + "assistant: LASTWORD"
    ids = enc.encode(text, context)[0]
    last = enc.single.encode("LASTWORD", add_special_tokens=False).ids
    first = enc.single.encode("user:", add_special_tokens=False).ids
    assert len(ids) == 32
    assert ids[-1 - len(last) : -1] == last  # the end of the context survives the cut
    assert ids[: len(first) + 1][1:] != first  # the beginning does not
    # the message itself is never cut for its context
    alone = enc.encode(text)[0]
    assert ids[: len(alone) - 1] == alone[:-1]


def test_contexts_of_a_transcript_follow_roles() -> None:
    enc = encoder(2)
    texts = [t for _, t in TURNS]
    assert enc.contexts(texts, [r for r, _ in TURNS]) == [
        "",
        f"user: {TURNS[0][1]}",
        f"user: {TURNS[0][1]} assistant: {TURNS[1][1]}",
    ]
    # without roles a transcript alternates, starting with the user
    assert enc.contexts(texts) == enc.contexts(texts, ["user", "assistant", "user"])
    legacy = TextEncoder(enc.single.to_str(), 32, context_chars=200)
    assert legacy.contexts(texts) == ["", TURNS[0][1], TURNS[1][1]]


@pytest.fixture()
def turns_model(tmp_path: Path) -> Path:
    """The shipped model directory, described as a model that reads three turns, calibrated."""
    out = tmp_path / "turns-model"
    shutil.copytree(MODEL_DIR, out)
    config = json.loads((out / "config.json").read_text())
    config["context_turns"] = 3
    config["context_chars"] = 450
    config["calibration"] = {"temperature": {lab: 2.0 for lab in config["labels"]}}
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_the_engine_reads_each_message_after_its_turns(turns_model: Path) -> None:
    clf = Classifier(ModelArtifact.load(turns_model))
    texts, roles = [t for _, t in TURNS], [r for r, _ in TURNS]
    direct = clf.score_texts(texts, clf.transcript_contexts(texts, roles))
    assert clf.score_transcript(texts, roles).messages == direct

    async def run() -> list[dict[str, float]]:
        engine = ScoringEngine(clf)
        engine.start()
        try:
            result = await engine.transcript(texts, roles)
        finally:
            await engine.stop()
        return [m.scores for m in result.messages]

    assert asyncio.run(run()) == [m.scores for m in direct]
    # the roles matter: the same words as another side's turns are another context
    swapped = clf.score_texts(texts, clf.transcript_contexts(texts, ["assistant", "user", "user"]))
    assert [m.scores for m in swapped] != [m.scores for m in direct]


def test_temperatures_soften_scores(turns_model: Path) -> None:
    calibrated = Classifier(ModelArtifact.load(turns_model))
    config = json.loads((turns_model / "config.json").read_text())
    del config["calibration"]
    (turns_model / "config.json").write_text(json.dumps(config))
    raw = Classifier(ModelArtifact.load(turns_model))
    text = ["I was diagnosed with type 2 diabetes last month"]
    p_raw = raw.score_texts(text)[0].scores["health"]
    p_cal = calibrated.score_texts(text)[0].scores["health"]
    assert p_raw > 0.5 and 0.5 < p_cal < p_raw  # logit / 2: same side, closer to 0.5


def test_a_bad_temperature_is_refused(turns_model: Path) -> None:
    config = json.loads((turns_model / "config.json").read_text())
    config["calibration"] = {"temperature": {"health": 0}}
    (turns_model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="temperature"):
        ModelArtifact.load(turns_model)
