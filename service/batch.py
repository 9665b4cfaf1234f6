"""Batch scoring of whole datasets with the same scoring core as the API.

Reads JSONL, JSON, CSV or Parquet files, a folder of them, or a dataset saved with the
`datasets` library, in chunks (memory stays bounded), and writes every input column plus one
score and one flag column per label and `sensitive`. Each chunk is written atomically as a part
file, so an interrupted run resumes after its last complete chunk; the output file is assembled
at the end and renamed into place. Rows that cannot be scored go to an errors file with their
row number and reason; none is dropped silently.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from service.classifier import Classifier
from service.text import normalize

FORMATS = (".jsonl", ".json", ".csv", ".parquet")
Row = dict[str, Any]


@dataclass
class Totals:
    read: int = 0
    written: int = 0
    errors: int = 0


def input_files(path: Path) -> list[Path]:
    """The files behind an input: one file, a folder of files, or a saved dataset."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or folder")
    if (path / "state.json").exists() and (path / "dataset_info.json").exists():
        return sorted(path.glob("*.arrow"))  # saved with `datasets`: its metadata is not data
    files = sorted(p for p in path.rglob("*") if p.suffix in (*FORMATS, ".arrow"))
    if not files:
        raise ValueError(f"{path}: no JSONL, JSON, CSV, Parquet or Arrow files")
    return files


def read_rows(path: Path, chunk: int) -> Iterator[list[Row]]:
    """Lists of about `chunk` rows from one file, never the whole file at once (but JSON)."""
    if path.suffix == ".parquet":
        for b in pq.ParquetFile(path).iter_batches(batch_size=chunk):
            yield b.to_pylist()
    elif path.suffix == ".arrow":
        with path.open("rb") as f:
            for b in ipc.open_stream(f):
                yield b.to_pylist()
    elif path.suffix == ".csv":
        opts = pacsv.ConvertOptions(strings_can_be_null=False)
        for b in pacsv.open_csv(path, convert_options=opts):
            for i in range(0, b.num_rows, chunk):
                yield b.slice(i, chunk).to_pylist()
    elif path.suffix == ".jsonl":
        rows: list[Row] = []
        with path.open(encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        value = json.loads(line)
                    except json.JSONDecodeError:
                        value = None
                    rows.append(
                        value
                        if isinstance(value, dict)
                        else {"__error__": f"line {n} is not a JSON object"}
                    )
                if len(rows) >= chunk:
                    yield rows
                    rows = []
        if rows:
            yield rows
    elif path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))  # a JSON array is read whole
        items = data if isinstance(data, list) else [data]
        for i in range(0, len(items), chunk):
            yield [
                r if isinstance(r, dict) else {"__error__": "row is not a JSON object"}
                for r in items[i : i + chunk]
            ]
    else:
        raise ValueError(f"{path}: unsupported format {path.suffix}")


def chunks(paths: list[Path], size: int) -> Iterator[list[Row]]:
    for p in paths:
        yield from (rows for rows in read_rows(p, size) if rows)


def _messages(value: Any) -> list[tuple[str, str]]:
    """(role, content) of each message of a transcript column, or ValueError saying what is
    wrong."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError("messages is not a list") from exc
    if not isinstance(value, list) or not value:
        raise ValueError("messages is not a non-empty list")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} has no text content")
        if m.get("role") not in ("user", "assistant", "system"):
            raise ValueError(f"message {i} has an unknown role")
        out.append((m["role"], m["content"]))
    return out


class Scorer:
    """Adds score and flag columns to rows; the classifier is the API's own."""

    def __init__(self, clf: Classifier, text_column: str | None, messages_column: str | None):
        if (text_column is None) == (messages_column is None):
            raise ValueError("give exactly one of --text-column and --messages-column")
        self.clf, self.text_column, self.messages_column = clf, text_column, messages_column

    def score(self, rows: list[Row], first_row: int) -> tuple[list[Row], list[Row]]:
        """(scored rows, error rows) for one chunk; row numbers count from 0 over the input."""
        good, errors, items = [], [], []
        for k, row in enumerate(rows):
            n = first_row + k
            try:
                if "__error__" in row:
                    raise ValueError(row["__error__"])
                if self.text_column is not None:
                    value = row.get(self.text_column, None)
                    if self.text_column not in row:
                        raise ValueError(f"missing column {self.text_column}")
                    if not isinstance(value, str):
                        raise ValueError(f"column {self.text_column} is not text")
                    items.append((k, [("user", value)]))
                else:
                    assert self.messages_column is not None
                    if self.messages_column not in row:
                        raise ValueError(f"missing column {self.messages_column}")
                    items.append((k, _messages(row[self.messages_column])))
            except ValueError as exc:
                errors.append({"row": n, "reason": str(exc)})
        flat = [normalize(t) for _, ms in items for _, t in ms]
        contexts = [
            c
            for _, ms in items
            for c in self.clf.transcript_contexts([t for _, t in ms], [r for r, _ in ms])
        ]
        scores = self.clf.score_texts(flat, contexts) if flat else []
        pos = 0
        for k, ms in items:
            result = self.clf.aggregate(scores[pos : pos + len(ms)])
            pos += len(ms)
            out = {key: v for key, v in rows[k].items()}
            for lab in self.clf.labels:
                out[f"score_{lab}"] = result.scores[lab]
            for lab in self.clf.labels:
                out[f"flag_{lab}"] = result.flags[lab]
            out["sensitive"] = result.sensitive
            good.append(out)
        return good, errors


def _write(rows: list[Row], path: Path) -> None:
    """One part or the final file, in the format of its extension, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fmt = path.suffix
    if fmt == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    elif fmt == ".csv":
        pacsv.write_csv(pa.Table.from_pylist(rows), tmp)
    elif fmt == ".json":
        tmp.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        tmp.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    os.replace(tmp, path)


def _assemble(parts: list[Path], output: Path) -> None:
    """Concatenate part files into the output, streaming, then rename into place."""
    tmp = output.with_name(output.name + ".tmp")
    if output.suffix == ".parquet":
        # schemas first (footers only), then one part in memory at a time
        full = [p for p in parts if pq.read_metadata(p).num_rows]
        schema = pa.unify_schemas([pq.read_schema(p) for p in full]) if full else pa.schema([])
        with pq.ParquetWriter(tmp, schema) as w:
            for p in full:
                t = pq.read_table(p)
                w.write_table(t.cast(schema) if t.schema != schema else t)
    elif output.suffix == ".json":
        with tmp.open("w", encoding="utf-8") as f:
            f.write("[")
            first = True
            for p in parts:
                for r in json.loads(p.read_text(encoding="utf-8")):
                    f.write(("" if first else ",") + json.dumps(r, ensure_ascii=False))
                    first = False
            f.write("]")
    else:
        with tmp.open("wb") as f:
            for i, p in enumerate(parts):
                if not p.stat().st_size:
                    continue
                with p.open("rb") as src:
                    if output.suffix == ".csv" and i > 0:
                        src.readline()  # one header only
                    shutil.copyfileobj(src, f)
    os.replace(tmp, output)


def score_dataset(
    clf: Classifier,
    source: Path,
    output: Path,
    text_column: str | None,
    messages_column: str | None,
    chunk_rows: int = 2048,
    resume: bool = False,
    progress: Callable[[Totals, float], None] | None = None,
) -> Totals:
    """Score a whole input into `output` (+ `output.errors.jsonl`); resumable by chunk."""
    if output.suffix not in FORMATS:
        raise ValueError(f"output must end in one of {', '.join(FORMATS)}")
    scorer = Scorer(clf, text_column, messages_column)
    parts_dir = output.with_name(output.name + ".parts")
    if parts_dir.exists() and not resume:
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    totals, started, first_row = Totals(), time.monotonic(), 0
    good_parts: list[Path] = []
    error_parts: list[Path] = []
    for i, rows in enumerate(chunks(input_files(source), chunk_rows)):
        part = parts_dir / f"{i:07d}{output.suffix}"
        errs = parts_dir / f"{i:07d}.errors.jsonl"
        if resume and part.exists() and errs.exists():  # done before the interruption
            errors = [json.loads(x) for x in errs.read_text(encoding="utf-8").splitlines()]
        else:
            good, errors = scorer.score(rows, first_row)
            _write(good, part)
            _write(errors, errs)
        good_parts.append(part)
        error_parts.append(errs)
        totals.read += len(rows)
        totals.errors += len(errors)
        totals.written += len(rows) - len(errors)
        first_row += len(rows)
        rate = totals.read / max(1e-9, time.monotonic() - started)
        if progress:
            progress(totals, rate)
    _assemble(good_parts, output)
    _assemble(error_parts, output.with_name(output.name + ".errors.jsonl"))
    shutil.rmtree(parts_dir)
    return totals
