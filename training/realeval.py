"""A shipped model judged on the held-out real text, through the service's own scoring core.

    python -m training.realeval --model-dir models/e5-multi [--split real_test] [--out f.json]
        [--context-turns N --context-chars M]

Each message is scored after the turns before it, as the API reads a transcript, at the
thresholds stored in the model directory. Reports macro-F1, per-label precision/recall/F1,
the share of not-sensitive items that get a flag, confident errors (score >= 0.9 on the wrong
side), expected calibration error, and the same by language and by source. Real chat is also
judged whole, conversation by conversation, as `/v1/screen` decides for a signal given without
source messages: a conversation carries the union of its messages' labels and is flagged on a
label when any of its messages is.

`--context-turns/--context-chars` read a wider (or narrower) context than the model was made
with, at its own thresholds: what reading more turns would give before anyone retrains for it
(the splits keep up to four turns before each message).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from service.artifact import ModelArtifact
from service.classifier import Classifier
from training.config import resolve
from training.metrics import macro_f1_interval, multi_hot, report

SPLITS_DIR = "training/data/splits"


def score(clf: Classifier, rows: list[dict[str, Any]]) -> np.ndarray:
    ctx = [
        clf.encoder.context([(a, b) for a, b in r["history"]]) if "history" in r else r["context"]
        for r in rows
    ]
    res = clf.score_texts([r["text"] for r in rows], ctx)
    return np.array([[s.scores[lab] for lab in clf.labels] for s in res], np.float32)


def judge(
    y: np.ndarray,
    p: np.ndarray,
    labels: tuple[str, ...],
    thr: dict[str, float],
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Report plus the false-flag rate on not-sensitive items and confident errors; with
    `groups`, the 95% group bootstrap interval of macro-F1 too (how far a slice's figure can
    be trusted: a language with a handful of positives gets a wide one)."""
    rep = report(y, p, labels, thr)
    if groups is not None and len(y):
        t = np.array([thr[lab] for lab in labels], np.float32)
        rep["macro_f1_interval"] = list(macro_f1_interval(y, p >= t, groups))
        rep["macro_f1_present_interval"] = list(
            macro_f1_interval(y, p >= t, groups, present_only=True)
        )
    present = [m["f1"] for m in rep["labels"].values() if m["support"] > 0]
    # macro-F1 over the labels that have positives in the slice (a small slice without, say,
    # any politics item would otherwise count a 0 for it)
    rep["macro_f1_present"] = float(np.mean(present)) if present else 0.0
    t = np.array([thr[lab] for lab in labels], np.float32)
    flagged = (p >= t).any(axis=1)
    neg = y.sum(axis=1) == 0
    # per label, the share of the items without it that get it (false flags, label by label)
    rep["false_flag_rate"] = {
        lab: float((p[:, j] >= t[j])[y[:, j] == 0].mean()) if (y[:, j] == 0).any() else 0.0
        for j, lab in enumerate(labels)
    }
    rep["not_sensitive"] = int(neg.sum())
    rep["not_sensitive_flagged"] = float(flagged[neg].mean()) if neg.any() else 0.0
    rep["confident_false_positives"] = int(((p >= 0.9) & (y == 0)).sum())
    rep["confident_false_negatives"] = int(((p <= 0.1) & (y == 1)).sum())
    return rep


def by_transcript(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One row per conversation: the union of its messages' labels, and per label the highest
    message score (the transcript score the service flags on)."""
    keys, index = np.unique(groups, return_inverse=True)
    yt = np.zeros((len(keys), y.shape[1]), y.dtype)
    pt = np.zeros((len(keys), p.shape[1]), p.dtype)
    np.maximum.at(yt, index, y)
    np.maximum.at(pt, index, p)
    return yt, pt


def evaluate(
    model_dir: Path, split: str, splits_dir: Path, context: tuple[int, int] | None = None
) -> dict[str, Any]:
    """The model's report on a split; `context` (turns, characters) overrides the context the
    model reads (its thresholds and temperatures stay as shipped)."""
    clf = Classifier(ModelArtifact.load(model_dir))
    made_with = {"turns": clf.encoder.context_turns, "chars": clf.encoder.context_chars}
    if context is not None:
        clf.encoder.context_turns, clf.encoder.context_chars = context
    rows = pq.read_table(splits_dir / f"{split}.parquet").to_pylist()
    labels = clf.labels
    y = multi_hot([r["labels"] for r in rows], labels)
    p = score(clf, rows)
    thr = clf.artifact.thresholds
    # conversations and documents (a row without one stands alone)
    groups = np.array([str(r.get("group", f"row-{i}")) for i, r in enumerate(rows)])
    out: dict[str, Any] = {
        "model": {"name": clf.artifact.name, "version": clf.artifact.version},
        "split": split,
        "thresholds": thr,
        "context": {"turns": clf.encoder.context_turns, "chars": clf.encoder.context_chars},
        "context_made_with": made_with,
        "all": judge(y, p, labels, thr, groups),
    }
    chat = np.array([r.get("variety") == "chat" for r in rows], bool)
    if chat.any():  # whole conversations, as the gate reads a transcript
        yt, pt = by_transcript(y[chat], p[chat], groups[chat])
        out["transcripts"] = judge(yt, pt, labels, thr, np.arange(len(yt)))
    known = np.array([r["lang"] in clf.artifact.languages for r in rows])
    out["model_languages"] = judge(y[known], p[known], labels, thr, groups[known])
    for column in ("lang", "source"):
        values = np.array([r[column] for r in rows])
        out[f"by_{column}"] = {
            str(v): judge(y[v == values], p[v == values], labels, thr, groups[v == values])
            for v in sorted(set(values))
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    """Tables for the data card: overall, per language, per source."""
    labels = list(result["thresholds"])

    def row(name: str, r: dict[str, Any]) -> str:
        f1 = " | ".join(f"{r['labels'][lab]['f1']:.3f}" for lab in labels)
        return (
            f"| {name} | {r['n']} | {r['macro_f1']:.3f} | {f1} | "
            f"{r['not_sensitive_flagged']:.3f} ({r['not_sensitive']}) | "
            f"{r['confident_false_positives']} | {r['ece']:.3f} |"
        )

    head = (
        f"| slice | n | macro-F1 | {' | '.join(f'F1 {lab}' for lab in labels)} | "
        "not-sensitive flagged (n) | false positives at >= 0.9 | ECE |\n"
        "|" + "---|" * (7 + len(labels) - 1)
    )
    lines = [head, row("all", result["all"]), row("model's languages", result["model_languages"])]
    if "transcripts" in result:
        lines.append(row("chat, whole conversations", result["transcripts"]))
    lines += [row(f"lang {k}", v) for k, v in result["by_lang"].items()]
    lines += [row(f"source {k}", v) for k, v in result["by_source"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="models/e5-multi")
    parser.add_argument("--split", default="real_test")
    parser.add_argument("--splits-dir", default=SPLITS_DIR)
    parser.add_argument("--out", default="")
    parser.add_argument("--context-turns", type=int, default=None, help="turns read before")
    parser.add_argument("--context-chars", type=int, default=None, help="their character budget")
    args = parser.parse_args()
    context = None
    if args.context_turns is not None or args.context_chars is not None:
        if args.context_turns is None or args.context_chars is None:
            parser.error("--context-turns and --context-chars go together")
        context = (args.context_turns, args.context_chars)
    result = evaluate(resolve(args.model_dir), args.split, resolve(args.splits_dir), context)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(markdown(result))  # noqa: T201 - a command-line report


if __name__ == "__main__":
    main()
