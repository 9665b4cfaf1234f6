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
        [  # chat-completions roles: read as the API reads them (developer and tool as system)
            {"role": "developer", "content": "Answer briefly."},
            {"role": "user", "content": "I inject insulin twice a day now. Pen cases?"},
            {"role": "tool", "content": "3 results: pen cases, cooling pouches, belt bags"},
        ],
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
    parts = (tmp_path / "out.parquet.parts").glob("*.jsonl")
    assert len([p for p in parts if not p.name.endswith(".errors.jsonl")]) == 2
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


# -- never lose or corrupt a row (each case was a silent loss or corruption before) ----------
def test_resume_with_another_chunk_size_refuses(
    clf: Classifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_input("jsonl", tmp_path)
    out = tmp_path / "out.jsonl"
    real = batch.Scorer.score
    calls = {"n": 0}

    def dies(self: batch.Scorer, rows: list, first: int) -> tuple:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, rows, first)

    monkeypatch.setattr(batch.Scorer, "score", dies)
    with pytest.raises(KeyboardInterrupt):
        batch.score_dataset(clf, src, out, "text", None, chunk_rows=4)
    monkeypatch.setattr(batch.Scorer, "score", real)
    with pytest.raises(ValueError, match="chunk_rows 4 -> 2048"):
        batch.score_dataset(clf, src, out, "text", None, chunk_rows=2048, resume=True)
    totals = batch.score_dataset(clf, src, out, "text", None, chunk_rows=4, resume=True)
    assert (totals.read, totals.written) == (20, 20)
    assert [r["id"] for r in read_output(out)] == list(range(20))


def test_a_changed_input_refuses_resume(clf: Classifier, tmp_path: Path) -> None:
    src = write_input("jsonl", tmp_path)
    out = tmp_path / "out.jsonl"
    parts = tmp_path / "out.jsonl.parts"
    parts.mkdir()
    manifest = batch.manifest_of([src], clf, "text", None, 4, out)
    (parts / "manifest.json").write_text(json.dumps(manifest))
    src.write_text(src.read_text() + json.dumps({"id": 99, "text": "one more"}) + "\n")
    with pytest.raises(ValueError, match="input files"):
        batch.score_dataset(clf, src, out, "text", None, chunk_rows=4, resume=True)


@pytest.mark.parametrize("out_ext", [".csv", ".parquet"])
def test_a_column_that_appears_late_widens_the_schema(
    clf: Classifier, tmp_path: Path, out_ext: str
) -> None:
    rows = [{"id": i, "text": t} for i, t in enumerate(TEXTS[:6])]
    for r in rows[3:]:
        r["x"] = "late"
    rows[4]["id"] = 4.5  # an int column widened to float
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / f"out{out_ext}"
    totals = batch.score_dataset(clf, src, out, "text", None, chunk_rows=3)
    assert (totals.written, totals.errors) == (6, 0)
    table = pq.read_table(out) if out_ext == ".parquet" else pacsv.read_csv(out)
    assert table.column_names[:3] == ["id", "text", "x"]
    empty = None if out_ext == ".parquet" else ""  # CSV writes a null as an empty field
    assert table.column("x").to_pylist() == [empty] * 3 + ["late"] * 3
    assert table.column("id").to_pylist() == [0, 1, 2, 3, 4.5, 5]
    if out_ext == ".csv":  # every line has exactly as many fields as the header
        widths = {len(line.split(",")) for line in out.read_text().splitlines()}
        assert widths == {table.num_columns}


def test_an_incompatible_value_goes_to_the_errors_file(clf: Classifier, tmp_path: Path) -> None:
    rows = [{"id": i, "text": t} for i, t in enumerate(TEXTS[:4])]
    rows[2]["id"] = "not-a-number"
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.parquet"
    totals = batch.score_dataset(clf, src, out, "text", None, chunk_rows=2)
    assert (totals.read, totals.written, totals.errors) == (4, 3, 1)
    errors = read_output(tmp_path / "out.parquet.errors.jsonl")
    assert errors == [{"row": 2, "reason": "column 'id': a str value in a column of int values"}]
    assert pq.read_table(out).column("id").to_pylist() == [0, 1, 3]


def test_a_csv_whose_first_chunk_is_all_errors_has_its_header(
    clf: Classifier, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    rows = [{"id": 0, "text": 5}, {"id": 1, "text": 6}, {"id": 2, "text": "hiking boots"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.csv"
    batch.score_dataset(clf, src, out, "text", None, chunk_rows=2)
    table = pacsv.read_csv(out)
    assert table.column_names[:2] == ["id", "text"] and table.num_rows == 1
    only_errors = tmp_path / "none.jsonl"
    only_errors.write_text(json.dumps({"id": 0, "text": 5}) + "\n")
    batch.score_dataset(clf, only_errors, tmp_path / "none.csv", "text", None)
    assert (tmp_path / "none.csv").read_text().startswith('"id","text"')


def test_the_output_inside_the_input_folder_is_never_read(clf: Classifier, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = folder / "scored.jsonl"
    for _ in range(3):
        totals = batch.score_dataset(clf, folder, out, "text", None)
        assert (totals.read, totals.written) == (20, 20)
    assert len(read_output(out)) == 20


def test_bad_csv_rows_never_reach_a_message(
    clf: Classifier, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.csv"
    secret = "my secret diagnosis"
    src.write_text(
        "id,text\n0,hiking boots\n1,a,b,"
        + secret
        + "\n2,recommend a tent\n"
        + "".join(f"{i},text {i}\n" for i in range(3, 5000))
        + f"oops,{secret} again\n"  # a value that does not fit the id column inferred first
    )
    out = tmp_path / "out.jsonl"
    totals = batch.score_dataset(clf, src, out, "text", None)
    assert totals.errors == 1 and totals.written == 5000
    errors = (tmp_path / "out.jsonl.errors.jsonl").read_text()
    assert "wrong number of fields" in errors and secret not in errors
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err


def test_progress_lines_say_total_rate_and_time_left() -> None:
    import io

    stream = io.StringIO()
    show = batch.ProgressLine(stream, every=0.0)
    show(batch.Progress(0, 5001, 0, 0.0))
    show(batch.Progress(1000, 5001, 2, 100.0))
    show(batch.Progress(42, None, 0, 21.0))
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("rows 0 of 5,001 (0%)")
    assert lines[1] == "rows 1,000 of 5,001 (20%)  100 rows/s  errors 2  time left 0m40s"
    assert lines[2] == "rows 42  21 rows/s  errors 0"
