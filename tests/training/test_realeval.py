"""The shipped model judged on a held-out split, and with a context it was not made with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.realeval import by_transcript, evaluate, judge

# A disclosure and a generic reply, then a "me too" that is health only through the turns
# before it, and a question that is health on its own words. Written for this test.
TURNS = [
    ["user", "My dad was just diagnosed with type 2 diabetes."],
    ["assistant", "I'm sorry to hear that. How can I help?"],
]
ROWS = [
    {"text": "me too, since 2019", "history": TURNS},
    {"text": "Which foods raise blood sugar the fastest for a diabetic?", "history": []},
]


def _split(tmp_path: Path) -> Path:
    rows = [{**r, "labels": ["health"], "lang": "en", "source": "fixture"} for r in ROWS]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "real_validation.parquet")
    return tmp_path


def _at_half(model_dir: Path, out: Path) -> Path:
    """The shipped model (its files linked) with a health threshold of 0.5: the test is about
    what the model reads, not about where the shipped threshold sits."""
    out.mkdir()
    for f in model_dir.iterdir():
        if f.name != "config.json":
            (out / f.name).symlink_to(f.resolve())
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config["thresholds"]["health"] = 0.5
    (out / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return out


def test_realeval_reads_the_models_context_or_the_one_asked_for(
    shipped_model_dir: Path, tmp_path: Path
) -> None:
    splits = _split(tmp_path)
    model = _at_half(shipped_model_dir, tmp_path / "model")
    shipped = evaluate(model, "real_validation", splits)
    made = shipped["context_made_with"]
    assert made["turns"] >= 1 and shipped["context"] == made
    # read after the father's diagnosis, "me too" is the user's own diabetes
    assert shipped["all"]["labels"]["health"]["recall"] == 1.0
    # read with no context at all, it is nothing
    alone = evaluate(model, "real_validation", splits, context=(0, 0))
    assert alone["context"] == {"turns": 0, "chars": 0}
    assert alone["context_made_with"] == made
    assert alone["all"]["labels"]["health"]["recall"] == 0.5


def test_by_transcript_takes_the_union_of_labels_and_the_highest_score() -> None:
    y = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0]])
    p = np.array([[0.9, 0.1, 0.2], [0.3, 0.6, 0.1], [0.1, 0.1, 0.4], [0.2, 0.0, 0.5]])
    yt, pt = by_transcript(y, p, np.array(["b", "b", "a", "a"]))
    assert yt.tolist() == [[0, 0, 1], [1, 0, 0]]  # conversations in key order: a, b
    assert np.allclose(pt, [[0.2, 0.1, 0.5], [0.9, 0.6, 0.2]])


def test_real_chat_is_also_judged_whole_conversation_by_conversation(
    shipped_model_dir: Path, tmp_path: Path
) -> None:
    # Two chat conversations written for this test (one discloses a condition in its first
    # message only) and a proverb that is not chat: two conversations are judged.
    disclosure = "My dad was just diagnosed with type 2 diabetes."
    reply = "I'm sorry to hear that. How can I help?"
    chat = [
        ("a", disclosure, [], ["health"]),
        ("a", reply, [["user", disclosure]], []),
        ("b", "Any good pizza places near the station?", [], []),
        ("b", "Thanks, I'll try the one by the park.", [["user", "Any good pizza?"]], []),
    ]
    rows = [
        {"text": t, "history": h, "labels": lab, "group": g, "variety": "chat"}
        for g, t, h, lab in chat
    ]
    rows.append(
        {
            "text": "Slow and steady wins the race.",
            "history": [],
            "labels": [],
            "group": "proverbs",
            "variety": "proverb",
        }
    )
    rows = [{**r, "lang": "en", "source": "fixture"} for r in rows]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "real_validation.parquet")
    result = evaluate(_at_half(shipped_model_dir, tmp_path / "model"), "real_validation", tmp_path)
    whole = result["transcripts"]
    assert result["all"]["n"] == 5 and whole["n"] == 2
    assert whole["labels"]["health"]["support"] == 1  # the union: conversation a
    assert whole["labels"]["health"]["f1"] == 1.0  # a is flagged through its first message
    assert whole["not_sensitive"] == 1 and whole["not_sensitive_flagged"] == 0.0


def test_judge_gives_each_labels_false_flags_among_the_items_without_it() -> None:
    y = np.array([[1, 0], [0, 1], [0, 0], [0, 0]], np.float32)
    p = np.array([[0.9, 0.8], [0.7, 0.9], [0.2, 0.95], [0.1, 0.1]], np.float32)
    rep = judge(y, p, ("health", "religion"), {"health": 0.5, "religion": 0.5})
    # health: 1 of the 3 items without it flagged; religion: 2 of 3
    assert rep["false_flag_rate"] == pytest.approx({"health": 1 / 3, "religion": 2 / 3})
    assert rep["not_sensitive_flagged"] == pytest.approx(0.5)  # item 3 flagged, item 4 not
