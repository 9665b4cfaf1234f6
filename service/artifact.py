"""A model directory that describes itself: weights, tokenizer, labels, thresholds, metrics."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REQUIRED_FILES = ("model.onnx", "tokenizer.json", "config.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class ModelDirError(RuntimeError):
    """The model directory is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class ModelArtifact:
    """What the service needs to know about a model, read from its directory."""

    path: Path
    name: str
    version: str
    labels: tuple[str, ...]
    thresholds: dict[str, float]
    max_length: int
    base_model: str
    languages: tuple[str, ...]
    config: dict[str, Any]

    @property
    def supported_languages(self) -> frozenset[str]:
        """Languages whose judgement is known to hold: `supported_languages` of the config
        (from 1.2.0: real-test macro-F1 >= 0.80, written by the export), else the languages
        the model was trained and tested on (models made before the real test existed)."""
        listed = self.config.get("supported_languages")
        return frozenset(str(x) for x in (self.languages if listed is None else listed))

    @property
    def onnx_path(self) -> Path:
        return self.path / "model.onnx"

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"

    @classmethod
    def load(cls, path: str | Path) -> ModelArtifact:
        """Read and check `config.json` (and, when it records one, the sha256 of `model.onnx`);
        raise ModelDirError with a clear reason otherwise."""
        path = Path(path)
        if not path.is_dir():
            raise ModelDirError(f"model directory {path} does not exist")
        missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
        if missing:
            raise ModelDirError(f"model directory {path} lacks {', '.join(missing)}")
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelDirError(f"{path}/config.json is not valid JSON: {exc}") from exc
        try:
            labels = tuple(str(x) for x in config["labels"])
            thresholds = {str(k): float(v) for k, v in config["thresholds"].items()}
            artifact = cls(
                path=path,
                name=str(config["name"]),
                version=str(config["version"]),
                labels=labels,
                thresholds=thresholds,
                max_length=int(config["max_length"]),
                base_model=str(config.get("base_model", "")),
                languages=tuple(str(x) for x in config.get("languages", [])),
                config=config,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelDirError(f"{path}/config.json is incomplete: {exc!r}") from exc
        if not labels or set(thresholds) != set(labels):
            raise ModelDirError(f"{path}/config.json: thresholds must name exactly the labels")
        if not all(0.0 < t < 1.0 for t in thresholds.values()):
            raise ModelDirError(f"{path}/config.json: thresholds must lie in (0, 1)")
        temps = (config.get("calibration") or {}).get("temperature") or {}
        if not isinstance(temps, dict) or not all(
            isinstance(v, (int, float)) and v > 0 for v in temps.values()
        ):
            raise ModelDirError(f"{path}/config.json: calibration temperatures must be > 0")
        expected = config.get("model_sha256")
        if expected is not None and _sha256(path / "model.onnx") != expected:
            raise ModelDirError(
                f"{path}/model.onnx does not match the sha256 in config.json "
                "(truncated, replaced or corrupted)"
            )
        if artifact.max_length < 8:
            raise ModelDirError(f"{path}/config.json: max_length {artifact.max_length} too small")
        return artifact
