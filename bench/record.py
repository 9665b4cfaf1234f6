"""Where each benchmark of `make bench` leaves its figures, for `bench/report.py` to render.

Every benchmark prints its rows and ratios as it always did; given `--record DIR` it also
writes them to DIR/<name>.json (figures only: no text is ever recorded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save(folder: str | None, name: str, figures: dict[str, Any]) -> None:
    """Write `figures` as DIR/<name>.json when a folder was given; nothing otherwise."""
    if not folder:
        return
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


def load(folder: str | Path, name: str) -> dict[str, Any] | None:
    path = Path(folder) / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
