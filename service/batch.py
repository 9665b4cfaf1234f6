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
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from service.classifier import ROLES, Classifier, model_role

FORMATS = (".jsonl", ".json", ".csv", ".parquet")
Row = dict[str, Any]


@dataclass
class Totals:
    read: int = 0
    written: int = 0
    errors: int = 0


def input_files(path: Path, exclude: tuple[Path, ...] = ()) -> list[Path]:
    """The files behind an input: one file, a folder of files, or a saved dataset. Anything
    at or under an `exclude` path (the run's own output, parts and errors file) is never
    read, even when the output was put inside the input folder."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or folder")
    if (path / "state.json").exists() and (path / "dataset_info.json").exists():
        return sorted(path.glob("*.arrow"))  # saved with `datasets`: its metadata is not data
    skip = [e.resolve() for e in exclude]

    def ours(p: Path) -> bool:
        r = p.resolve()
        return any(r == e or e in r.parents for e in skip)

    files = sorted(
        p
        for p in path.rglob("*")
        if p.suffix in (*FORMATS, ".arrow") and p.is_file() and not ours(p)
    )
    if not files:
        raise ValueError(f"{path}: no JSONL, JSON, CSV, Parquet or Arrow files")
    return files


def count_rows(path: Path) -> int | None:
    """Rows in a file, where that is cheap to know: Parquet and Arrow metadata, or a count
    of line ends for JSONL and CSV (an estimate if fields hold line breaks)."""
    if path.suffix == ".parquet":
        return int(pq.read_metadata(path).num_rows)
    if path.suffix in (".jsonl", ".csv"):
        n, last = 0, b"\n"
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                n += block.count(b"\n")
                last = block[-1:]
        n += last != b"\n"
        return n - (path.suffix == ".csv")  # the header
    return None


class _CsvRows:
    """A CSV file read in Arrow's streaming reader. Malformed rows (a wrong number of fields)
    are skipped and reported by number; when a value does not fit the type Arrow inferred from
    the first block, the whole file is read as text instead (never an error that quotes it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bad: list[int] = []
        self.column_types: dict[str, pa.DataType] | None = None
        try:  # a first pass (C++ only, no Python rows) settles the column types
            for _ in self._reader(None):
                pass
        except pa.ArrowInvalid:
            with self.path.open("rb") as f:
                names = pacsv.open_csv(f, parse_options=self._parse()).schema.names
            self.column_types = {n: pa.string() for n in names}
        self.bad = []

    def _parse(self) -> pacsv.ParseOptions:
        def invalid(row: Any) -> str:
            self.bad.append(int(row.number) if row.number else 0)  # the file's line number
            return "skip"

        return pacsv.ParseOptions(invalid_row_handler=invalid)

    def _reader(self, types: dict[str, pa.DataType] | None) -> Any:
        opts = pacsv.ConvertOptions(strings_can_be_null=False, column_types=types or {})
        return pacsv.open_csv(self.path, parse_options=self._parse(), convert_options=opts)

    def batches(self) -> Iterator[pa.RecordBatch]:
        yield from self._reader(self.column_types)


def read_rows(path: Path, chunk: int) -> Iterator[list[Row]]:
    """Lists of about `chunk` rows from one file, never the whole file at once (but JSON).
    A row that cannot be read is a row `{"__error__": reason}` (its text is never kept)."""
    if path.suffix == ".parquet":
        for b in pq.ParquetFile(path).iter_batches(batch_size=chunk):
            yield b.to_pylist()
    elif path.suffix == ".arrow":
        with path.open("rb") as f:
            for b in ipc.open_stream(f):
                yield b.to_pylist()
    elif path.suffix == ".csv":
        csv = _CsvRows(path)
        reported = 0
        for b in csv.batches():
            block: list[Row] = b.to_pylist()
            # malformed rows become error rows after their block (with the parser's line)
            while reported < len(csv.bad):
                at = csv.bad[reported]
                block.append(
                    {"__error__": f"malformed CSV row (wrong number of fields), line {at}"}
                )
                reported += 1
            for i in range(0, len(block), chunk):
                yield block[i : i + chunk]
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
        if m.get("role") not in ROLES:
            raise ValueError(f"message {i} has an unknown role")
        out.append((model_role(m["role"]), m["content"]))
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
        results = self.clf.score_transcripts(
            [([t for _, t in ms], [r for r, _ in ms]) for _, ms in items]
        )
        for (k, _), result in zip(items, results, strict=True):
            out = {key: v for key, v in rows[k].items()}
            for lab in self.clf.labels:
                out[f"score_{lab}"] = result.scores[lab]
            for lab in self.clf.labels:
                out[f"flag_{lab}"] = result.flags[lab]
            out["sensitive"] = result.sensitive
            good.append(out)
        return good, errors


def _json_default(value: Any) -> Any:
    """Values JSON cannot hold (dates, decimals, bytes) are kept as their text."""
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _write_jsonl(rows: list[Row], path: Path) -> None:
    """One part file (JSON lines, whatever the output format), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows),
        encoding="utf-8",
    )
    os.replace(tmp, path)


def _read_jsonl(path: Path) -> list[Row]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "nested"


class Schema:
    """The output's columns, settled once over every part: the union of the columns seen, in
    order of first appearance (missing values are null); a column takes the kind of its first
    value, widened from integers to floats when floats follow; a value of another kind is not
    written into it (its row goes to the errors file with the column named)."""

    def __init__(self) -> None:
        self.kinds: dict[str, str | None] = {}
        self.samples: dict[str, Any] = {}

    def see(self, row: Row) -> None:
        for k, v in row.items():
            if k == ROW:
                continue
            kind = None if v is None else _kind(v)
            have = self.kinds.get(k)
            if have is None:
                self.kinds[k] = kind
                if kind == "nested":
                    self.samples[k] = v
            elif {have, kind} == {"int", "float"}:
                self.kinds[k] = "float"

    def problem(self, row: Row) -> str | None:
        for k, v in row.items():
            if k == ROW or v is None:
                continue
            have, kind = self.kinds.get(k), _kind(v)
            if kind == have or (have == "float" and kind == "int"):
                continue
            return f"column {k!r}: a {kind} value in a column of {have} values"
        return None

    def arrow(self) -> pa.Schema:
        types = {
            "bool": pa.bool_(),
            "int": pa.int64(),
            "float": pa.float64(),
            "str": pa.string(),
            None: pa.null(),
        }
        fields = []
        for k, kind in self.kinds.items():
            if kind == "nested":
                t = pa.infer_type([self.samples[k]])
            else:
                t = types[kind]
            fields.append(pa.field(k, t))
        return pa.schema(fields)


ROW = "__row__"  # the input row number, carried through the parts, never written out


def _assemble(
    parts: list[Path],
    output: Path,
    errors_out: Path,
    error_parts: list[Path],
    columns: list[str],
) -> int:
    """The output file from the parts, in its format, renamed into place; rows whose values do
    not fit the settled schema join the errors file. `columns` are every column of the input
    (of error rows too) and the score columns, in order: the output has them all, even when no
    row could be scored. Returns the rows written."""
    tmp = output.with_name(output.name + ".tmp")
    schema = Schema()
    for c in columns:
        schema.kinds[c] = None
    typed = output.suffix in (".parquet", ".csv")
    late_errors: list[Row] = []
    if typed:
        for p in parts:
            for r in _read_jsonl(p):
                schema.see(r)
    arrow = schema.arrow() if typed else None
    written = 0

    def kept(rows: list[Row]) -> list[Row]:
        out = []
        for r in rows:
            why = schema.problem(r) if typed else None
            if why is not None:
                late_errors.append({"row": r[ROW], "reason": why})
            else:
                out.append({k: v for k, v in r.items() if k != ROW})
        return out

    if output.suffix == ".parquet":
        assert arrow is not None
        with pq.ParquetWriter(tmp, arrow) as w:
            for p in parts:
                rows = kept(_read_jsonl(p))
                written += len(rows)
                w.write_table(pa.Table.from_pylist(rows, schema=arrow))
    elif output.suffix == ".csv":
        assert arrow is not None
        csv_schema = pa.schema(  # CSV cannot hold nested values: they are written as JSON
            [pa.field(f.name, pa.string()) if _nested(f.type) else f for f in arrow]
        )
        with tmp.open("wb") as fb, pacsv.CSVWriter(fb, csv_schema) as w:  # header always
            for p in parts:
                rows = kept(_read_jsonl(p))
                for r in rows:
                    for name in r:
                        if _nested(arrow.field(name).type) and r[name] is not None:
                            r[name] = json.dumps(r[name], ensure_ascii=False)
                written += len(rows)
                w.write_table(pa.Table.from_pylist(rows, schema=csv_schema))
    elif output.suffix == ".json":
        with tmp.open("w", encoding="utf-8") as f:
            f.write("[")
            for p in parts:
                for r in kept(_read_jsonl(p)):
                    f.write(("," if written else "") + json.dumps(r, ensure_ascii=False))
                    written += 1
            f.write("]")
    else:
        with tmp.open("w", encoding="utf-8") as f:
            for p in parts:
                for r in kept(_read_jsonl(p)):
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
                    written += 1
    errors = [e for p in error_parts for e in _read_jsonl(p)] + late_errors
    errors.sort(key=lambda e: int(e["row"]))
    _write_jsonl(errors, errors_out)
    os.replace(tmp, output)
    return written


def _nested(t: pa.DataType) -> bool:
    return bool(pa.types.is_nested(t))


@dataclass
class Progress:
    """What a progress display needs: rows done, rows in total (None: unknown), rate."""

    done: int
    total: int | None
    errors: int
    rate: float


def manifest_of(
    files: list[Path],
    clf: Classifier,
    text_column: str | None,
    messages_column: str | None,
    chunk_rows: int,
    output: Path,
) -> dict[str, Any]:
    """What decides which rows a part holds and how they are scored: a resumed run must match."""
    return {
        "inputs": [
            {"path": str(p.resolve()), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
            for p in files
        ],
        "text_column": text_column,
        "messages_column": messages_column,
        "chunk_rows": chunk_rows,
        "model": f"{clf.artifact.name}:{clf.artifact.version}",
        "output_format": output.suffix,
    }


def _differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out = []
    for k in now:
        if before.get(k) != now[k]:
            if k == "inputs":
                out.append("the input files (paths, sizes or modification times)")
            else:
                out.append(f"{k} {before.get(k)!r} -> {now[k]!r}")
    return out


def score_dataset(
    clf: Classifier,
    source: Path,
    output: Path,
    text_column: str | None,
    messages_column: str | None,
    chunk_rows: int = 2048,
    resume: bool = False,
    progress: Callable[[Progress], None] | None = None,
) -> Totals:
    """Score a whole input into `output` (+ `output.errors.jsonl`); resumable by chunk.

    Every part records its rows' numbers; the printed totals are counted from what was
    written, never from the arguments. `--resume` checks the run's manifest (inputs with
    sizes and modification times, columns, chunk size, model, output format) and refuses to
    mix parts of two different runs.
    """
    if output.suffix not in FORMATS:
        raise ValueError(f"output must end in one of {', '.join(FORMATS)}")
    if chunk_rows < 1:
        raise ValueError("chunk rows must be at least 1")
    scorer = Scorer(clf, text_column, messages_column)
    parts_dir = output.with_name(output.name + ".parts")
    errors_out = output.with_name(output.name + ".errors.jsonl")
    files = input_files(source, exclude=(output, parts_dir, errors_out))
    manifest = manifest_of(files, clf, text_column, messages_column, chunk_rows, output)
    saved = parts_dir / "manifest.json"
    if resume and saved.exists():
        before = json.loads(saved.read_text(encoding="utf-8"))
        diff = _differences(before, manifest)
        if diff:
            raise ValueError(
                "--resume with other settings than the interrupted run ("
                + "; ".join(diff)
                + "): rerun with the same ones, or without --resume to start again"
            )
    elif parts_dir.exists():
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    counts = [count_rows(p) for p in files]
    total = None if any(c is None for c in counts) else sum(c or 0 for c in counts)
    done, errors_seen, started = 0, 0, time.monotonic()
    good_parts: list[Path] = []
    error_parts: list[Path] = []

    if progress:  # a first line at once: how much there is to do
        progress(Progress(0, total, 0, 0.0))

    def tick() -> None:
        if progress:
            rate = done / max(1e-9, time.monotonic() - started)
            progress(Progress(done, total, errors_seen, rate))

    read = 0
    columns: dict[str, None] = {}  # every input column, in order of first appearance
    for i, rows in enumerate(chunks(files, chunk_rows)):
        for r in rows:
            columns.update(dict.fromkeys(k for k in r if k != "__error__"))
        part = parts_dir / f"{i:07d}.jsonl"
        errs = parts_dir / f"{i:07d}.errors.jsonl"
        if resume and part.exists() and errs.exists():  # done before the interruption
            errors = _read_jsonl(errs)
        else:
            good: list[Row] = []
            errors = []
            for k in range(0, len(rows), SUB_ROWS):  # small steps: progress every few seconds
                g, e = scorer.score(rows[k : k + SUB_ROWS], read + k)
                good += _numbered(g, e, read + k, len(rows[k : k + SUB_ROWS]))
                errors += e
                done += len(rows[k : k + SUB_ROWS])
                errors_seen += len(e)
                tick()
            _write_jsonl(good, part)
            _write_jsonl(errors, errs)
        good_parts.append(part)
        error_parts.append(errs)
        read += len(rows)
        if resume:
            done = read
            tick()
    labels = clf.labels
    scored = [*(f"score_{x}" for x in labels), *(f"flag_{x}" for x in labels), "sensitive"]
    columns_out = [*columns, *(c for c in scored if c not in columns)]
    written = _assemble(good_parts, output, errors_out, error_parts, columns_out)
    shutil.rmtree(parts_dir)
    n_errors = sum(1 for _ in errors_out.open(encoding="utf-8"))
    return Totals(read=read, written=written, errors=n_errors)


SUB_ROWS = 64


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class ProgressLine:
    """Progress on a stream at most every `every` seconds: rows done (of the total, when it can
    be known), rows per second, errors, and the time left. On a terminal one line rewritten in
    place; otherwise (a log file, CI) one plain line each time."""

    def __init__(self, stream: TextIO, every: float = 2.0) -> None:
        self.stream, self.every = stream, every
        self.tty = stream.isatty()
        self.last = -every

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        finished = p.total is not None and p.done >= p.total
        if now - self.last < self.every and not finished:
            return
        self.last = now
        if p.total:
            left = (p.total - p.done) / p.rate if p.rate > 0 else float("inf")
            eta = _duration(left) if left != float("inf") else "?"
            line = (
                f"rows {p.done:,} of {p.total:,} ({p.done / p.total:.0%})  {p.rate:,.0f} rows/s"
                f"  errors {p.errors:,}  time left {eta}"
            )
        else:
            line = f"rows {p.done:,}  {p.rate:,.0f} rows/s  errors {p.errors:,}"
        self.stream.write(f"\r{line}\033[K" if self.tty else line + "\n")
        self.stream.flush()


def _numbered(good: list[Row], errors: list[Row], first: int, n: int) -> list[Row]:
    """Give each scored row its input row number: the rows of the slice that are not errors,
    in order."""
    bad = {int(e["row"]) for e in errors}
    numbers = [first + j for j in range(n) if first + j not in bad]
    for r, number in zip(good, numbers, strict=True):
        r[ROW] = number
    return good
