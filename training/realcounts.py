"""Counts and floors of the real labelled text, from the labels files alone (no text needed).

Floors (issue 11): at least 8,000 real items; 3,000 chat messages from chitchat-dataset; 1,500
in languages other than English; 300 hand translations in each of ar, fr, fa, tr, he, es, de;
a real test split of 2,000 and a validation split of 1,000, both from the uniform sample only;
a second reading of at least 10% of the items.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from training.config import LABELS, resolve
from training.realdata import label_rows, translated_records

FLOORS = {"items": 8000, "chitchat": 3000, "non_english": 1500, "test": 2000, "validation": 1000}
TRANSLATION_LANGS = ("ar", "fr", "fa", "tr", "he", "es", "de")
TRANSLATION_FLOOR = 300
SECOND_READING = "training/data/real/second-reading.jsonl"


def second_reading() -> list[dict[str, Any]]:
    path = resolve(SECOND_READING)
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def translated_messages() -> Counter[str]:
    c: Counter[str] = Counter()
    for r in translated_records():
        c[r["lang"]] += len(r["messages"])
    return c


def floor_failures(rows: list[dict[str, Any]] | None = None) -> list[str]:
    rows = label_rows() if rows is None else rows
    have = {
        "items": len(rows),
        "chitchat": sum(r["source"] == "chitchat" for r in rows),
        "non_english": sum(r["lang"] != "en" for r in rows),
        "test": sum(r["split"] == "test" and r["selection"] == "uniform" for r in rows),
        "validation": sum(r["split"] == "validation" and r["selection"] == "uniform" for r in rows),
    }
    fails = [f"real {k}: {have[k]} < {n}" for k, n in FLOORS.items() if have[k] < n]
    tr = translated_messages()
    fails += [
        f"translated {g}: {tr[g]} < {TRANSLATION_FLOOR}"
        for g in TRANSLATION_LANGS
        if tr[g] < TRANSLATION_FLOOR
    ]
    n2 = len(second_reading())
    if n2 < 0.10 * len(rows):
        fails.append(f"second reading: {n2} < 10% of {len(rows)}")
    return fails


def _md(header: list[str], body: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in body]
    return "\n".join(lines)


def tables(rows: list[dict[str, Any]] | None = None) -> str:
    """Markdown: items per source x language x split with label counts; per selection method;
    per language; agreement of the second reading."""
    rows = label_rows() if rows is None else rows
    by: dict[tuple[str, str, str], Counter[str]] = {}
    for r in rows:
        c = by.setdefault((r["source"], r["lang"], r["split"]), Counter())
        c["items"] += 1
        for lab in r["labels"] or ["none"]:
            c[lab] += 1
    head = ["source", "language", "split", "items", *LABELS, "none"]
    body = [[*k, c["items"], *(c[x] for x in LABELS), c["none"]] for k, c in sorted(by.items())]
    out = ["#### Real items per source, language and split", _md(head, body)]

    sel: dict[tuple[str, str], Counter[str]] = {}
    for r in rows:
        c = sel.setdefault((r["selection"], r["split"]), Counter())
        c["items"] += 1
        for lab in r["labels"] or ["none"]:
            c[lab] += 1
    body = [[*k, c["items"], *(c[x] for x in LABELS), c["none"]] for k, c in sorted(sel.items())]
    out += [
        "#### Per selection method",
        _md(["selection", "split", "items", *LABELS, "none"], body),
    ]

    lang: dict[str, Counter[str]] = {}
    for r in rows:
        c = lang.setdefault(r["lang"], Counter())
        c["items"] += 1
        c[r["split"]] += 1
        for lab in r["labels"] or ["none"]:
            c[lab] += 1
    tr = translated_messages()
    body = [
        [g, c["items"], c["train"], c["validation"], c["test"], c["check"], *(c[x] for x in LABELS),
         c["none"], tr.get(g, 0)]
        for g, c in sorted(lang.items())
    ]  # fmt: skip
    head = ["language", "items", "train", "validation", "test", "check", *LABELS, "none",
            "translated"]  # fmt: skip
    out += ["#### Per language (real items; hand translations in the last column)", _md(head, body)]
    out.append(agreement())
    fails = floor_failures(rows)
    out.append(f"Real-text floors not met: {'; '.join(fails) if fails else 'none'}.")
    return "\n\n".join(out)


def agreement() -> str:
    """Per label: agreement of the two readings, Cohen's kappa, and the corrections made."""
    pairs = second_reading()
    if not pairs:
        return "Second reading: none recorded."
    body = []
    for lab in LABELS:
        a = [lab in p["first"] for p in pairs]
        b = [lab in p["second"] for p in pairs]
        n = len(pairs)
        agree = sum(x == y for x, y in zip(a, b, strict=True)) / n
        pa, pb = sum(a) / n, sum(b) / n
        pe = pa * pb + (1 - pa) * (1 - pb)
        kappa = (agree - pe) / (1 - pe) if pe < 1 else 1.0
        changed = sum(lab in p["first"] and lab not in p["final"] for p in pairs)
        added = sum(lab not in p["first"] and lab in p["final"] for p in pairs)
        body.append([lab, f"{agree:.3f}", f"{kappa:.3f}", sum(a), sum(b), changed, added])
    exact = sum(set(p["first"]) == set(p["second"]) for p in pairs)
    head = ["label", "agreement", "kappa", "first", "second", "removed", "added"]
    return "\n\n".join(
        [
            f"#### Second reading ({len(pairs)} items; exact agreement on the label set "
            f"{exact}/{len(pairs)} = {exact / len(pairs):.3f})",
            _md(head, body),
        ]
    )
