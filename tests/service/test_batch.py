"""`sensitive-topics score`: every input kind, errors file, row counts, resume, API parity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from service import batch
from service.artifact import ModelArtifact
from service.classifier import Classifier

TEXTS = [
    "I was diagnosed with type 2 diabetes last month",
    "Which party should I vote for in the election?",
    "We fast during Ramadan and pray at the mosque",
    "Recommend hiking boots for rocky trails",
] * 5
ROWS = [{"id": i, "text": t} for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def clf(shipped_model_dir: Path) -> Classifier:
    return Classifier(ModelArtifact.load(shipped_model_dir))


def write_input(kind: str, folder: Path) -> Path:
    if kind == "jsonl":
        p = folder / "in.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif kind == "json":
        p = folder / "in.json"
        p.write_text(json.dumps(ROWS))
    elif kind == "csv":
        p = folder / "in.csv"
        pacsv.write_csv(pa.Table.from_pylist(ROWS), p)
    elif kind == "parquet":
        p = folder / "in.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), p)
    elif kind == "folder":
        p = folder / "parts"
        p.mkdir()
        pq.write_table(pa.Table.from_pylist(ROWS[:7]), p / "a.parquet")
        (p / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[7:]))
    else:  # a dataset saved with the datasets library
        from datasets import Dataset

        p = folder / "saved"
        Dataset.from_list(ROWS).save_to_disk(str(p))
    return p


def read_output(p: Path) -> list[dict]:
    if p.suffix == ".parquet":
        return pq.read_table(p).to_pylist()
    if p.suffix == ".csv":
        return pacsv.read_csv(p).to_pylist()
    if p.suffix == ".json":
        return json.loads(p.read_text())
    return [json.loads(x) for x in p.read_text().splitlines()]


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet", "folder", "saved"])
@pytest.mark.parametrize("out_ext", [".parquet", ".jsonl", ".csv", ".json"])
def test_every_input_and_output_kind(
    clf: Classifier, tmp_path: Path, kind: str, out_ext: str
) -> None:
    out = tmp_path / f"out{out_ext}"
    totals = batch.score_dataset(clf, write_input(kind, tmp_path), out, "text", None, chunk_rows=6)
    assert (totals.read, totals.written, totals.errors) == (20, 20, 0)
    rows = read_output(out)
    assert [r["id"] for r in rows] == list(range(20))
    assert [r["text"] for r in rows] == TEXTS  # every input column is kept
    flagged = [r for r in rows if r["sensitive"] in (True, "true")]
    assert len(flagged) == 15
    assert {"score_health", "flag_religion", "flag_politics"} <= set(rows[0])
    assert not (tmp_path / f"out{out_ext}.parts").exists()


def test_same_scores_as_the_api(clf: Classifier, client: TestClient, tmp_path: Path) -> None:
    transcripts = [
        [
            {"role": "user", "content": "My dad was just diagnosed with diabetes."},
            {"role": "user", "content": "yes, I have it too"},
        ],
        [{"role": "user", "content": "Recommend hiking boots for rocky trails"}],
    ]
    src = tmp_path / "t.jsonl"
    src.write_text("".join(json.dumps({"conv": t}) + "\n" for t in transcripts))
    out = tmp_path / "t.parquet"
    batch.score_dataset(clf, src, out, None, "conv")
    rows = read_output(out)
    for row, t in zip(rows, transcripts, strict=True):
        api = client.post("/v1/classify", json={"messages": t}).json()["transcript"]
        for lab in ("health", "religion", "politics"):
            # int8 dynamic quantisation scales activations per model run, so the same text
            # batched with different neighbours can move by a few thousandths
            assert row[f"score_{lab}"] == pytest.approx(api["scores"][lab], abs=1e-2)
            assert row[f"flag_{lab}"] == api["flags"][lab]


def test_bad_rows_go_to_the_errors_file_with_row_and_reason(
    clf: Classifier, tmp_path: Path
) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text(
        json.dumps({"conv": [{"role": "user", "content": "hello there"}]})
        + "\n"
        + "{not json\n"
        + json.dumps({"other": 1})
        + "\n"
        + json.dumps({"conv": [{"role": "pirate", "content": "my secret illness"}]})
        + "\n"
        + json.dumps({"conv": "not a list"})
        + "\n"
        + json.dumps({"conv": []})
        + "\n"
    )
    out = tmp_path / "bad.jsonl.out.jsonl"
    totals = batch.score_dataset(clf, src, out, None, "conv")
    assert (totals.read, totals.written, totals.errors) == (6, 1, 5)
    errors = read_output(tmp_path / "bad.jsonl.out.jsonl.errors.jsonl")
    assert [e["row"] for e in errors] == [1, 2, 3, 4, 5]
    assert "missing column conv" in errors[1]["reason"]
    assert "unknown role" in errors[2]["reason"]
    assert "secret illness" not in json.dumps(errors)  # reasons never carry text


def test_resume_after_interruption(
    clf: Classifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_input("jsonl", tmp_path)
    full = tmp_path / "full.parquet"
    batch.score_dataset(clf, src, full, "text", None, chunk_rows=4)
    out = tmp_path / "out.parquet"
    real = batch.Scorer.score
    calls = {"n": 0}

    def dies_on_third_chunk(self: batch.Scorer, rows: list, first: int) -> tuple:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the run is killed mid-way
        return real(self, rows, first)

    monkeypatch.setattr(batch.Scorer, "score", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        batch.score_dataset(clf, src, out, "text", None, chunk_rows=4)
    assert not out.exists()  # no half-written output
    assert len(list((tmp_path / "out.parquet.parts").glob("*.parquet"))) == 2
    monkeypatch.setattr(batch.Scorer, "score", real)
    calls["n"] = 0
    counted = {"n": 0}

    def counting(self: batch.Scorer, rows: list, first: int) -> tuple:
        counted["n"] += 1
        return real(self, rows, first)

    monkeypatch.setattr(batch.Scorer, "score", counting)
    totals = batch.score_dataset(clf, src, out, "text", None, chunk_rows=4, resume=True)
    assert counted["n"] == 3  # only the chunks not done before
    assert totals.read == 20 and totals.written == 20
    assert read_output(out) == read_output(full)  # no duplicated, no missing rows


def test_cli_counts_and_exit_codes(shipped_model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "hello"}) + "\n" + json.dumps({"text": 3}) + "\n")
    cmd = [
        sys.executable,
        "-m",
        "service",
        "score",
        str(src),
        "--output",
        str(tmp_path / "o.csv"),
        "--text-column",
        "text",
        "--model-dir",
        str(shipped_model_dir),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "rows read 2 = rows written 1 + rows in errors 1" in r.stderr
    r = subprocess.run([*cmd, "--allow-errors"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
