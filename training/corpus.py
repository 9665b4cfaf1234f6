"""Corpus checks and counts: the floors the corpus must meet, script per language, duplicates.

Used by the tests and by `python -m training.corpus`, which refreshes the counts in the data
card (training/data/README.md).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from training import realcounts
from training.config import LABELS, resolve
from training.data import all_records, assign_splits, text_key

CORE = ("en", "ar", "fr")
SECOND_TIER = ("fa", "tr", "he", "es", "de")
FLOORS_CORE = {"per_label": 500, "multi": 300, "negatives": 1500, "hard": 500, "transcripts": 400}
FLOORS_SECOND = {"per_label": 100, "negatives": 300}

_ARABIC = re.compile(r"[\u0600-\u06FF\u0750-\u077F\uFB50-\uFDFF\uFE70-\uFEFF]")
_HEBREW = re.compile(r"[\u0590-\u05FF]")
_LATIN = re.compile(r"[A-Za-z\u00C0-\u024F]")
_CYRILLIC = re.compile(r"[\u0400-\u04FF]")


def script_matches(lang: str, text: str, variety: str = "") -> bool:
    """Does the text's script fit its language tag? Arabic may be Arabizi or mixed."""
    if lang == "ar":
        return bool(_ARABIC.search(text)) or (
            variety in ("arabizi", "mixed") and bool(_LATIN.search(text))
        )
    if lang == "fa":
        return bool(_ARABIC.search(text))
    if lang == "he":
        return bool(_HEBREW.search(text))
    return bool(_LATIN.search(text)) and not _ARABIC.search(text) and not _HEBREW.search(text)


def is_single(r: dict[str, Any]) -> bool:
    return len(r["messages"]) == 1 and r["kind"] != "transcript"


def labels_of(r: dict[str, Any]) -> set[str]:
    return {lab for m in r["messages"] for lab in m["labels"]}


def counts(records: Iterable[dict[str, Any]]) -> dict[str, Counter[str]]:
    """Per language: positives per label, multi, negatives, hard negatives, transcripts."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        c = out[r["lang"]]
        labs = labels_of(r)
        if not is_single(r):
            n_flagged = sum(bool(m["labels"]) for m in r["messages"])
            if 3 <= len(r["messages"]) <= 12 and 1 <= n_flagged <= 2:
                c["transcripts"] += 1
            else:
                c["transcripts_other"] += 1
            continue
        for lab in labs:
            c[f"label:{lab}"] += 1
        if len(labs) >= 2:
            c["multi"] += 1
        if not labs:
            c["negatives"] += 1
            if r["kind"] == "hard_negative":
                c["hard"] += 1
        if r["lang"] == "ar" and r.get("variety") in ("arabizi", "mixed"):
            c["arabizi_or_mixed"] += 1
        c["singles"] += 1
        c["template"] += bool(r.get("template"))
    return out


def floor_failures(records: list[dict[str, Any]]) -> list[str]:
    """Every count floor of the corpus that is not met, as readable lines."""
    c = counts(records)
    fails = []
    for lang in CORE:
        for lab in LABELS:
            if c[lang][f"label:{lab}"] < FLOORS_CORE["per_label"]:
                fails.append(f"{lang} {lab}: {c[lang][f'label:{lab}']} < 500")
        for key in ("multi", "negatives", "hard", "transcripts"):
            if c[lang][key] < FLOORS_CORE[key]:
                fails.append(f"{lang} {key}: {c[lang][key]} < {FLOORS_CORE[key]}")
    ar = c["ar"]
    if ar["singles"] and ar["arabizi_or_mixed"] < 0.10 * ar["singles"]:
        fails.append(f"ar arabizi/mixed: {ar['arabizi_or_mixed']} < 10% of {ar['singles']}")
    for lang in SECOND_TIER:
        for lab in LABELS:
            if c[lang][f"label:{lab}"] < FLOORS_SECOND["per_label"]:
                fails.append(f"{lang} {lab}: {c[lang][f'label:{lab}']} < 100")
        if c[lang]["negatives"] < FLOORS_SECOND["negatives"]:
            fails.append(f"{lang} negatives: {c[lang]['negatives']} < 300")
    return fails


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text_key(text))
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def near_duplicate_share(records: list[dict[str, Any]], threshold: float = 0.8) -> float:
    """Share of hand-written authored messages with a word-5-gram Jaccard >= threshold to
    another one. Template records (composed on purpose from the corpus's own texts, flagged
    `template`, their share bounded apart) are left out."""
    texts = [
        m["content"]
        for r in records
        if r["source"] == "authored" and not r.get("template")
        for m in r["messages"]
        if m["role"] == "user" and len(m["content"].split()) >= 5
    ]
    sh = [shingles(t) for t in texts]
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, s in enumerate(sh):
        for g in s:
            index[g].append(i)
    dup = set()
    for i, s in enumerate(sh):
        cand: Counter[int] = Counter(j for g in s for j in index[g] if j != i)
        for j, inter in cand.items():
            if inter / len(s | sh[j]) >= threshold:
                dup.add(i)
                break
    return len(dup) / max(1, len(texts))


def table(records: list[dict[str, Any]]) -> str:
    """Markdown counts: messages per label x language x source x split (a record's fixed
    `split` where it has one, as `make data` assigns them)."""
    splits = assign_splits([r for r in records if "split" not in r])
    rows: Counter[tuple[str, str, str, str]] = Counter()
    for r in records:
        for m in r["messages"]:
            for lab in m["labels"] or ["none"]:
                rows[(r["lang"], r["source"], lab, r.get("split") or splits[r["id"]])] += 1
    keys = sorted({k[:3] for k in rows})
    lines = [
        "| language | source | label | train | validation | test | total |",
        "|---|---|---|---|---|---|---|",
    ]
    for lang, src, lab in keys:
        n = [rows[(lang, src, lab, s)] for s in ("train", "validation", "test")]
        lines.append(f"| {lang} | {src} | {lab} | {n[0]} | {n[1]} | {n[2]} | {sum(n)} |")
    return "\n".join(lines)


def summary(records: list[dict[str, Any]]) -> str:
    c = counts(records)
    keys = [
        "label:health",
        "label:religion",
        "label:politics",
        "multi",
        "negatives",
        "hard",
        "transcripts",
        "arabizi_or_mixed",
        "template",
        "singles",
    ]
    lines = [
        "| language | " + " | ".join(k.replace("label:", "") for k in keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for lang in sorted(c):
        lines.append(f"| {lang} | " + " | ".join(str(c[lang][k]) for k in keys) + " |")
    return "\n".join(lines)


BEGIN, END = "<!-- counts:begin -->", "<!-- counts:end -->"
REAL_BEGIN, REAL_END = "<!-- real:begin -->", "<!-- real:end -->"


def _replace(text: str, begin: str, end: str, block: str) -> str:
    start, stop = text.index(begin), text.index(end) + len(end)
    return text[:start] + block + text[stop:]


def main() -> None:
    parser = argparse.ArgumentParser(description="Corpus counts and checks.")
    parser.add_argument("--write-card", action="store_true", help="refresh the data card counts")
    args = parser.parse_args()
    records = all_records()
    fails = floor_failures(records)
    nd = near_duplicate_share(records)
    singles = [r for r in records if is_single(r) and r["source"] == "authored"]
    tpl = sum(bool(r.get("template")) for r in singles) / max(1, len(singles))
    block = "\n\n".join(
        [
            BEGIN,
            "### Per language (single messages; transcripts counted separately)",
            summary(records),
            f"Near-duplicate share (word 5-gram Jaccard >= 0.8, hand-written authored user "
            f"messages): {nd:.4f}. "
            f"Template share of authored single messages: {tpl:.4f}. "
            f"Floors not met: {'; '.join(fails) if fails else 'none'}.",
            "### Messages per language x source x label x split",
            table(records),
            END,
        ]
    )
    real_fails = realcounts.floor_failures()
    real_block = "\n\n".join([REAL_BEGIN, realcounts.tables(), REAL_END])
    if args.write_card:
        card = resolve("training/data/README.md")
        text = card.read_text(encoding="utf-8")
        text = _replace(text, BEGIN, END, block)
        card.write_text(_replace(text, REAL_BEGIN, REAL_END, real_block), encoding="utf-8")
    print(block)  # noqa: T201 - a command-line report
    print(real_block)  # noqa: T201
    if fails or real_fails:
        raise SystemExit(f"floors not met: {'; '.join(fails + real_fails)}")


if __name__ == "__main__":
    main()
