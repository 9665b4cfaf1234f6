"""One version everywhere, a CLI that names its variables, Prometheus and OpenAPI conventions."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

from fastapi.testclient import TestClient

from service import __version__
from service.settings import Settings


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ST_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_one_version_in_the_package_the_api_and_the_cli(client: TestClient) -> None:
    assert __version__ == version("sensitive-topics")
    assert client.get("/openapi.json").json()["info"]["version"] == __version__
    assert cli("--version").stdout.strip() == f"sensitive-topics {__version__}"


def test_serve_help_lists_flags_and_every_variable() -> None:
    out = cli("serve", "--help").stdout
    for flag in ("--host", "--port", "--model-dir", "--workers", "--log-level"):
        assert flag in out
    for name in Settings.model_fields:
        assert f"ST_{name.upper()}" in out


def test_a_bad_value_names_its_variable() -> None:
    r = cli("serve", env={"ST_PORT": "abc", "ST_AUTH_REQUIRED": "false"})
    assert r.returncode == 2
    assert "ST_PORT: " in r.stderr


def test_a_flag_overrides_its_variable() -> None:
    r = cli("serve", "--port", "abc", env={"ST_PORT": "8000", "ST_AUTH_REQUIRED": "false"})
    assert r.returncode == 2 and "ST_PORT: " in r.stderr


def test_prometheus_conventions(client: TestClient) -> None:
    client.post("/v1/classify", json={"messages": [{"role": "user", "content": "hi there"}]})
    text = client.get("/metrics").text
    assert "# TYPE st_cache_hits_total counter" in text
    assert "# TYPE st_cache_misses_total counter" in text
    assert 'st_model_info{name="e5-multi"' in text
    assert "process_resident_memory_bytes" in text or sys.platform != "linux"
    assert "st_requests_total{" in text


def test_openapi_declares_the_bearer_scheme(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert doc["paths"]["/v1/screen"]["post"]["security"] == [{"apiKey": []}]


def test_docs_load_their_assets_from_the_service(client: TestClient) -> None:
    """No CDN: every script and stylesheet of /docs and /redoc is served by the service."""
    import re

    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
        assert assets, page
        for url in assets:
            assert not url.startswith("http"), (page, url)
            assert client.get(url).status_code == 200, (page, url)


def test_each_route_lives_in_the_module_of_its_area(client: TestClient) -> None:
    """A reader finds a route by its file name: service/routes/<area>.py."""
    from fastapi.routing import APIRoute

    area = {
        "/v1/classify": "classify",
        "/v1/screen": "screen",
        "/v1/model": "operations",
        "/healthz": "operations",
        "/readyz": "operations",
        "/metrics": "operations",
    }
    found = {}
    for r in client.app.routes:  # type: ignore[attr-defined]
        # FastAPI keeps an included router as one entry holding the router's own routes
        inner = getattr(getattr(r, "original_router", None), "routes", [r])
        for route in inner:
            if isinstance(route, APIRoute) and not route.path.startswith(("/docs", "/redoc")):
                found[route.path] = route.endpoint.__module__
    assert found == {path: f"service.routes.{name}" for path, name in area.items()}
