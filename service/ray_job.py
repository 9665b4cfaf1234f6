"""The distributed batch job: the same scorer, run by Ray Data over an actor pool.

Each actor loads the model directory once and holds one onnxruntime session; Ray Data reads the
input, streams batches through the pool with `map_batches`, and writes Parquet. Rows that
cannot be scored are kept, with their reason in an `error` column, empty scores and an empty
text (or messages) value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from service.artifact import ModelArtifact
from service.batch import Scorer
from service.classifier import Classifier


class ScoringActor:
    """One model per actor; called with Arrow batches."""

    def __init__(self, model_dir: str, text_column: str | None, messages_column: str | None):
        clf = Classifier(ModelArtifact.load(Path(model_dir)), threads=1)
        self.scorer = Scorer(clf, text_column, messages_column)
        self.labels = clf.labels
        self.column = text_column or messages_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        good, errors = self.scorer.score(rows, 0)
        bad = {e["row"]: e["reason"] for e in errors}
        out: list[dict[str, Any]] = []
        it = iter(good)
        for i, row in enumerate(rows):
            if i in bad:
                empty = {f"score_{lab}": None for lab in self.labels}
                empty |= {f"flag_{lab}": None for lab in self.labels}
                # the unscorable value may not fit the column's type (a number among
                # texts): the row keeps its other columns and says why it has no scores
                kept = {**row, self.column: None} if self.column in row else row
                out.append({**kept, **empty, "sensitive": None, "error": bad[i]})
            else:
                out.append({**next(it), "error": None})
        return pa.Table.from_pylist(out)


def read(source: Path) -> Any:
    """A Ray dataset over a file or a folder of one format."""
    import ray.data

    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    kinds = {p.suffix for p in files} - {".json"} if source.is_dir() else {source.suffix}
    paths = [str(p) for p in files]
    if kinds == {".parquet"}:
        return ray.data.read_parquet(paths)
    if kinds == {".csv"}:
        return ray.data.read_csv(paths)
    if kinds == {".jsonl"}:
        return ray.data.read_json(paths, lines=True)
    if kinds == {".arrow"}:  # a dataset saved with `datasets`
        return ray.data.from_arrow(pa.ipc.open_stream(files[0].open("rb")).read_all())
    raise ValueError(f"{source}: the ray engine reads Parquet, CSV or JSONL of one kind")


def score_with_ray(
    model_dir: Path,
    source: Path,
    output: Path,
    text_column: str | None,
    messages_column: str | None,
    actors: int = 2,
    batch_rows: int = 1024,
    address: str | None = None,
    cpus_per_actor: float = 1.0,
) -> int:
    """Score `source` into a folder of Parquet files; returns the number of rows written."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    ds = read(source).map_batches(
        ScoringActor,
        fn_constructor_args=(str(model_dir.resolve()), text_column, messages_column),
        batch_size=batch_rows,
        batch_format="pyarrow",
        concurrency=actors,
        num_cpus=cpus_per_actor,
    )
    ds.write_parquet(str(output))
    return sum(int(pq.read_metadata(p).num_rows) for p in output.glob("*.parquet"))
