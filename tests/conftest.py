"""Shared fixtures: the shipped model behind FastAPI's TestClient."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import DEFAULT_MODEL_DIR, Settings


@pytest.fixture(scope="session")
def shipped_model_dir() -> Path:
    assert (DEFAULT_MODEL_DIR / "model.onnx").exists(), "the shipped model is missing"
    return DEFAULT_MODEL_DIR


def with_supported_languages(model_dir: Path, out: Path, languages: list[str]) -> Path:
    """A model directory that is `model_dir` in everything (the same ONNX file and tokenizer,
    linked) except the languages it declares supported."""
    out.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():
        if f.name != "config.json" and not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config["supported_languages"] = sorted(languages)
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def judged_model_dir(shipped_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model with every language it was trained on declared supported. Tests of
    the gate's other rules (labels, sources, regions) use it so that they judge what they are
    about whatever languages a shipped model earns on real text; the language rule itself is
    tested with the shipped declaration and with pinned ones in test_language.py."""
    config = json.loads((shipped_model_dir / "config.json").read_text(encoding="utf-8"))
    out = tmp_path_factory.mktemp("judged") / shipped_model_dir.name
    return with_supported_languages(shipped_model_dir, out, list(config["languages"]))


@pytest.fixture(scope="session")
def client(judged_model_dir: Path) -> Iterator[TestClient]:
    app = create_app(Settings(model_dir=judged_model_dir, max_messages=50, auth_required=False))
    with TestClient(app) as c:
        yield c
