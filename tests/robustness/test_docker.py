"""The container, built and run (`make docker-test`; needs a Docker engine, minutes)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from bench.http_load import free_port

pytestmark = [pytest.mark.slow, pytest.mark.docker]
ROOT = Path(__file__).resolve().parents[2]
IMAGE = "sensitive-topics:test"
KEY = "docker-key-0123456789ab"


def docker(*args: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def image() -> str:
    try:
        if docker("info", timeout=20).returncode != 0:
            pytest.skip("no Docker engine answers")
    except (FileNotFoundError, subprocess.TimeoutExpired):
        pytest.skip("no Docker client or engine")
    built = subprocess.run(
        ["docker", "build", "--network", "host", "-t", IMAGE, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    return IMAGE


def test_the_image_serves_with_keys_on_a_non_default_port(image: str) -> None:
    port, inner = free_port(), "8123"
    name = f"st-test-{port}"
    run = docker(
        "run", "-d", "--name", name, "--network", "host",
        "-e", f"ST_API_KEYS={KEY}", "-e", f"ST_PORT={inner}", image,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    url = f"http://127.0.0.1:{inner}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        body = {"messages": [{"role": "user", "content": "I was diagnosed with diabetes"}]}
        assert httpx.post(f"{url}/v1/classify", json=body, timeout=30).status_code == 401
        r = httpx.post(
            f"{url}/v1/classify",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["transcript"]["flags"]["health"]
        assert docker("exec", name, "id", "-u").stdout.strip() != "0"
        # the HEALTHCHECK polls the port the service really listens on
        deadline = time.monotonic() + 120
        health = ""
        while time.monotonic() < deadline and health != "healthy":
            state = json.loads(docker("inspect", name).stdout)[0]["State"]
            health = state.get("Health", {}).get("Status", "")
            time.sleep(2)
        assert health == "healthy"
        stop = docker("stop", name, timeout=60)
        assert stop.returncode == 0
        code = json.loads(docker("inspect", name).stdout)[0]["State"]["ExitCode"]
        assert code == 0
    finally:
        docker("rm", "-f", name)


def test_the_image_holds_what_the_service_needs_only(image: str) -> None:
    """No torch, no pyarrow (the batch extra), no pip; the one model it serves; its size said."""
    probe = docker(
        "run", "--rm", "--entrypoint", "python", image, "-c",
        "import importlib.util as u, os; "
        "print([m for m in ('torch', 'pyarrow', 'pip', 'transformers') if u.find_spec(m)]); "
        "print(sorted(os.listdir('/app/models')))",
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split("\n")[:2] == ["[]", "['e5-multi']"]
    size = int(docker("image", "inspect", image, "--format", "{{.Size}}").stdout.strip())
    print(f"image size {size / 1e6:.0f} MB")
