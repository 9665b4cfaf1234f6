"""Shared fixtures: the shipped model behind FastAPI's TestClient."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def client(shipped_model_dir: Path) -> Iterator[TestClient]:
    app = create_app(Settings(model_dir=shipped_model_dir, max_messages=50, auth_required=False))
    with TestClient(app) as c:
        yield c
