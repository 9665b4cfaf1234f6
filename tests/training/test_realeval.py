"""The shipped model judged on a held-out split, and with a context it was not made with."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from training.realeval import evaluate

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
