"""The Dockerfile runs the same install and serve commands as the Makefile (and so CI)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith(f"{target}:"))
    out = []
    for x in lines[start + 1 :]:
        if not x.startswith("\t"):
            break
        out.append(x.strip())
    return out


def test_dockerfile_installs_with_make_install() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN make install\b", docker, re.M)
    assert not re.search(r"^RUN .*torch", docker, re.M)  # runtime dependencies only


def test_dockerfile_serves_with_the_makefile_command() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r'^CMD \["([^"]+)", "([^"]+)"\]', docker, re.M)
    assert cmd, "CMD missing"
    serve = " ".join(recipe("serve"))
    assert f"{cmd.group(1)} {cmd.group(2)}" in serve.replace("$(BIN)/", "")


def test_container_is_non_root_with_model_and_healthcheck() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\w+", docker, re.M)
    assert "ARG MODEL=e5-multi" in docker and "COPY models/${MODEL}/ models/${MODEL}/" in docker
    assert "ST_MODEL_DIR=/app/models/${MODEL}" in docker
    assert re.search(r"^HEALTHCHECK .*readyz", docker, re.M | re.S)
    assert "ST_AUTH_REQUIRED=false" not in docker  # keys are required in the container
    assert docker.count("FROM ") >= 2  # multi-stage
