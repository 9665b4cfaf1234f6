"""The README's API examples, run as written against a live server, so that they cannot rot."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.robustness.test_process import start

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)


def block(lang: str, contains: str) -> str:
    found = [code for kind, code in BLOCKS if kind == lang and contains in code]
    assert len(found) == 1, (lang, contains, len(found))
    return found[0]


def test_the_curl_example_and_its_shown_output(shipped_model_dir: Path) -> None:
    curl = block("bash", "curl -s http://127.0.0.1:8000/v1/classify")
    shown = json.loads(block("json", '"transcript"'))
    proc, url = start(shipped_model_dir)
    try:
        command = curl.replace("http://127.0.0.1:8000", url)
        out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    finally:
        proc.terminate()
        proc.wait(40)
    got = json.loads(out.stdout)
    assert got["model"] == shown["model"]
    assert got["transcript"]["flags"] == shown["transcript"]["flags"]
    assert got["transcript"]["sensitive"] == shown["transcript"]["sensitive"]
    for label, score in shown["transcript"]["scores"].items():  # shown rounded to 2 places
        assert abs(got["transcript"]["scores"][label] - score) < 0.01, label
    shown_evidence = [
        {k: e[k] for k in ("label", "message_index")} for e in shown["transcript"]["evidence"]
    ]
    got_evidence = [
        {k: e[k] for k in ("label", "message_index")} for e in got["transcript"]["evidence"]
    ]
    assert got_evidence == shown_evidence
    first = {k: v for k, v in shown["messages"][0].items() if k != "..."}
    assert {k: got["messages"][0][k] for k in first} == first


def test_the_python_examples(shipped_model_dir: Path) -> None:
    client_example = block("python", "from service.client import Client")
    in_process = block("python", "from service.classifier import Classifier")
    key = "readme-key-0123456789"
    proc, url = start(shipped_model_dir, ST_AUTH_REQUIRED="true", ST_API_KEYS=key)
    try:
        scope: dict[str, object] = {}
        code = client_example.replace("http://127.0.0.1:8000", url).replace("<key>", key)
        exec(code, scope)  # noqa: S102 - the README's own code
        assert scope["allowed"] == {"s1"}
    finally:
        proc.kill()
        proc.wait(10)
    scope = {}
    exec(in_process.replace('"models/e5-multi"', repr(str(shipped_model_dir))), scope)  # noqa: S102
    result = scope["result"]
    assert result.flags["health"]  # type: ignore[attr-defined]
