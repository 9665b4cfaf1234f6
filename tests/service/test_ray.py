"""`--engine ray`: the same scorer on a local Ray instance (2 CPUs) gives the local engine's output.

Both runs go through the console script in a subprocess, as a user runs them; a time limit turns
a scheduling deadlock into a failure instead of a hung suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("ray.data", reason="ray[data] is a dev dependency (pip install 'ray[data]')")

TEXTS = [
    "I was diagnosed with type 2 diabetes last month",
    "Which party should I vote for in the election?",
    "We fast during Ramadan and pray at the mosque",
    "Recommend hiking boots for rocky trails",
    "عندي سكري من سنتين وآخذ الأنسولين كل يوم",
    "On va voter dimanche pour les municipales",
    "",
]
ROWS = [
    {"id": i, "text": TEXTS[i % len(TEXTS)] + ("" if i % 7 == 6 else f" ({i})")} for i in range(60)
]
ROWS[13]["text"] = 42  # not text: an error row in both engines


def cli(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "service", "score", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_ray_output_equals_local_output(tmp_path: Path, shipped_model_dir: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS))
    common = ["--text-column", "text", "--model-dir", str(shipped_model_dir)]

    local = cli(
        str(src),
        "--output",
        str(tmp_path / "local.parquet"),
        *common,
        "--allow-errors",
        timeout=300,
    )
    assert local.returncode == 0, local.stderr[-2000:]
    ray = cli(
        str(src),
        "--output",
        str(tmp_path / "ray"),
        *common,
        "--engine",
        "ray",
        "--actors",
        "2",
        "--cpus-per-actor",
        "0.5",
        timeout=600,
    )
    assert ray.returncode == 0, ray.stderr[-2000:]

    want = {r["id"]: r for r in pq.read_table(tmp_path / "local.parquet").to_pylist()}
    errors = [
        json.loads(x) for x in (tmp_path / "local.parquet.errors.jsonl").read_text().splitlines()
    ]
    got = {r["id"]: r for r in pq.read_table(tmp_path / "ray").to_pylist()}

    assert len(got) == len(ROWS)  # every row comes back, the unscorable one with its reason
    assert [e["row"] for e in errors] == [13]
    assert got[13]["error"] == "column text is not text" and got[13]["sensitive"] is None
    assert set(want) == set(got) - {13}
    labels = ("health", "religion", "politics")
    for i, row in want.items():
        assert got[i]["error"] is None
        assert got[i]["text"] == row["text"]
        for lab in labels:
            # int8 dynamic quantisation scales activations per model run, so batches of
            # different make-up give scores a hair apart; decisions are the same
            assert abs(got[i][f"score_{lab}"] - row[f"score_{lab}"]) < 0.01, (i, lab)
            assert got[i][f"flag_{lab}"] == row[f"flag_{lab}"], (i, lab)
        assert got[i]["sensitive"] == row["sensitive"]
    assert sum(r["sensitive"] for r in want.values()) >= 30  # the texts are really scored
