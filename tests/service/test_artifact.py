"""A broken model directory is refused with a clear reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.artifact import ModelArtifact, ModelDirError


def copy_model(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def test_shipped_model_describes_itself(shipped_model_dir: Path) -> None:
    a = ModelArtifact.load(shipped_model_dir)
    assert a.labels == ("health", "religion", "politics")
    cfg = a.config
    for key in ("base_model", "data_hash", "code_version", "max_length", "thresholds"):
        assert cfg[key], key
    metrics = json.loads((shipped_model_dir / "metrics.json").read_text())
    assert set(metrics["test"]["labels"]) == set(a.labels)
    assert (shipped_model_dir / "README.md").read_text().startswith("# ")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="does not exist"):
        ModelArtifact.load(tmp_path / "nope")


def test_missing_file(shipped_model_dir: Path, tmp_path: Path) -> None:
    d = copy_model(shipped_model_dir, tmp_path)
    (d / "tokenizer.json").unlink()
    with pytest.raises(ModelDirError, match="tokenizer.json"):
        ModelArtifact.load(d)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("labels"), "incomplete"),
        (lambda c: c.update(thresholds={"health": 0.5}), "thresholds"),
        (lambda c: c.update(thresholds={k: 1.5 for k in c["labels"]}), r"\(0, 1\)"),
    ],
)
def test_inconsistent_config(shipped_model_dir: Path, tmp_path: Path, change, message) -> None:
    d = copy_model(shipped_model_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    change(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelDirError, match=message):
        ModelArtifact.load(d)


def test_not_json(shipped_model_dir: Path, tmp_path: Path) -> None:
    d = copy_model(shipped_model_dir, tmp_path)
    (d / "config.json").write_text("{")
    with pytest.raises(ModelDirError, match="not valid JSON"):
        ModelArtifact.load(d)


def test_shipped_model_fits_in_60_mb(shipped_model_dir: Path) -> None:
    size = sum(f.stat().st_size for f in shipped_model_dir.iterdir())
    assert size <= 60_000_000, size


def test_a_str_path_loads_and_the_weights_digest_is_checked(
    shipped_model_dir: Path, tmp_path: Path
) -> None:
    import hashlib
    import json
    import shutil

    d = tmp_path / "m"
    shutil.copytree(shipped_model_dir, d)
    config = json.loads((d / "config.json").read_text())
    config["model_sha256"] = hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest()
    (d / "config.json").write_text(json.dumps(config))
    assert ModelArtifact.load(str(d)).name == config["name"]  # a str works like a Path
    data = (d / "model.onnx").read_bytes()
    (d / "model.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped
    with pytest.raises(ModelDirError, match="sha256"):
        ModelArtifact.load(d)
