"""`make train` reads the earlier model a config starts from or learns from back out of git
history first, and only when the config names it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _dry_run(config: Path, stage: Path) -> str:
    out = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "train", f"CONFIG={config}", f"STAGE1={stage}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def _rev() -> str:
    found = re.search(r"^STAGE1_REV := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert found, "Makefile has no STAGE1_REV"
    return found.group(1)


def test_train_reads_the_named_stage_back_first(tmp_path: Path) -> None:
    stage = tmp_path / "runs" / "earlier"
    config = tmp_path / "second-stage.json"
    config.write_text(json.dumps({"init_from": str(stage), "teacher": str(stage)}))
    plan = _dry_run(config, stage)
    lines = plan.splitlines()
    archive = next(i for i, s in enumerate(lines) if s.startswith(f"git archive {_rev()} "))
    back = next(i for i, s in enumerate(lines) if "training.from_onnx" in s and str(stage) in s)
    train = next(i for i, s in enumerate(lines) if "training.train" in s)
    assert archive < back < train


def test_train_without_a_stage_does_not_make_one(tmp_path: Path) -> None:
    config = tmp_path / "plain.json"
    config.write_text(json.dumps({"init_from": ""}))
    plan = _dry_run(config, tmp_path / "runs" / "earlier")
    assert "training.from_onnx" not in plan
    assert "training.train" in plan


def test_train_draws_the_named_teacher_pool_first_and_only_then(tmp_path: Path) -> None:
    pool = tmp_path / "pool" / "unlabelled.parquet"
    named = tmp_path / "pooled.json"
    named.write_text(json.dumps({"teacher": "x", "teacher_pool": str(pool)}))
    out = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "train", f"CONFIG={named}", f"POOL={pool}"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    draw = next(i for i, s in enumerate(out) if "training.pool" in s and str(pool) in s)
    train = next(i for i, s in enumerate(out) if "training.train" in s)
    assert draw < train
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"teacher": "x"}))
    assert "training.pool" not in _dry_run(plain, tmp_path / "runs" / "earlier")


def test_the_stage_revision_holds_a_model_directory() -> None:
    shallow = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--is-shallow-repository"],
        capture_output=True,
        text=True,
    )
    if shallow.returncode != 0 or shallow.stdout.strip() == "true":
        pytest.skip("not a full git clone")
    for name in ("model.onnx", "config.json", "tokenizer.json"):
        got = subprocess.run(
            ["git", "-C", str(ROOT), "cat-file", "-e", f"{_rev()}:models/e5-multi/{name}"],
            capture_output=True,
        )
        assert got.returncode == 0, f"{_rev()} has no models/e5-multi/{name}"
