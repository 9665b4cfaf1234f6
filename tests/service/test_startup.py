"""Start-up fails loudly: bad settings or a broken model directory exit non-zero, clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import DEFAULT_MODEL_DIR


def run_serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ST_")}
    return subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_api_keys_stops_start_up() -> None:
    r = run_serve({})
    assert r.returncode == 2
    assert "API keys are required" in r.stderr


def test_missing_model_directory_stops_start_up(tmp_path: Path) -> None:
    r = run_serve({"ST_AUTH_REQUIRED": "false", "ST_MODEL_DIR": str(tmp_path / "none")})
    assert r.returncode == 2
    assert "does not exist" in r.stderr


def test_truncated_model_stops_start_up(shipped_model_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    for f in ("config.json", "tokenizer.json"):
        (d / f).write_bytes((shipped_model_dir / f).read_bytes())
    r = run_serve({"ST_AUTH_REQUIRED": "false", "ST_MODEL_DIR": str(d)})
    assert r.returncode == 2
    assert "model.onnx" in r.stderr


def test_onnxruntime_telemetry_writes_nothing(tmp_path: Path) -> None:
    """Loading the model through the service leaves nothing under $HOME (no device id)."""
    code = (
        "from service.artifact import ModelArtifact; from service.classifier import Classifier; "
        f"Classifier(ModelArtifact.load(__import__('pathlib').Path({str(DEFAULT_MODEL_DIR)!r})))"
    )
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env["HOME"] = str(tmp_path)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert [p.name for p in tmp_path.rglob("*")] == []


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_garbage_model_stops_start_up_in_every_worker_mode(
    shipped_model_dir: Path, tmp_path: Path, workers: str
) -> None:
    d = tmp_path / "m"
    d.mkdir()
    for f in ("config.json", "tokenizer.json"):
        (d / f).write_bytes((shipped_model_dir / f).read_bytes())
    (d / "model.onnx").write_bytes((shipped_model_dir / "model.onnx").read_bytes()[:100_000])
    r = run_serve({"ST_AUTH_REQUIRED": "false", "ST_MODEL_DIR": str(d), "ST_WORKERS": workers})
    assert r.returncode == 2, r.stderr[-500:]
    assert "cannot load the model" in r.stderr or "sha256" in r.stderr


def test_a_bad_blocked_region_stops_start_up() -> None:
    r = run_serve({"ST_AUTH_REQUIRED": "false", "ST_BLOCKED_REGIONS": "DE,EU"})
    assert r.returncode == 2
    assert "ST_BLOCKED_REGIONS" in r.stderr


def test_the_service_runs_without_pyarrow(tmp_path: Path) -> None:
    """The service's install (and image) goes without the batch extra: serving never imports
    pyarrow, and the score command says what to install instead of a traceback."""
    blocker = tmp_path / "sitecustomize.py"  # makes `import pyarrow` fail in the child
    blocker.write_text("import sys\nsys.modules['pyarrow'] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{Path.cwd()}"}
    app = subprocess.run(
        [sys.executable, "-c", "import service.app, service.engine, service.__main__"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert app.returncode == 0, app.stderr[-500:]
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "hello"}\n')
    score = subprocess.run(
        [sys.executable, "-m", "service", "score", str(src), "--output", str(tmp_path / "o.jsonl")]
        + ["--text-column", "text"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert score.returncode == 2
    assert "sensitive-topics[batch]" in score.stderr
    assert "Traceback" not in score.stderr


def test_the_drain_timeout_is_the_setting_uvicorn_is_given(
    shipped_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ST_SHUTDOWN_TIMEOUT_S` is how long a SIGTERM waits for requests in flight (uvicorn's
    graceful-shutdown timeout); the server itself is not started here."""
    import signal

    import uvicorn

    from service.__main__ import main
    from service.settings import get_settings

    given: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: given.update(kw))
    for key in [k for k in os.environ if k.startswith("ST_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("ST_AUTH_REQUIRED", "false")
    monkeypatch.setenv("ST_MODEL_DIR", str(shipped_model_dir))
    monkeypatch.setenv("ST_SHUTDOWN_TIMEOUT_S", "7.5")
    before = signal.getsignal(signal.SIGTERM)
    get_settings.cache_clear()
    try:
        assert main(["serve"]) == 0
    finally:
        signal.signal(signal.SIGTERM, before)
        get_settings.cache_clear()
    assert given["timeout_graceful_shutdown"] == 7.5


def test_a_drain_timeout_of_zero_stops_start_up() -> None:
    r = run_serve({"ST_AUTH_REQUIRED": "false", "ST_SHUTDOWN_TIMEOUT_S": "0"})
    assert r.returncode == 2
    assert "ST_SHUTDOWN_TIMEOUT_S" in r.stderr
