"""Thresholds and metrics for multi-label decisions."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score


def multi_hot(labels: list[list[str]], label_names: tuple[str, ...]) -> np.ndarray:
    y = np.zeros((len(labels), len(label_names)), np.float32)
    for i, labs in enumerate(labels):
        for lab in labs:
            if lab in label_names:
                y[i, label_names.index(lab)] = 1.0
    return y


def prf(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tp = float((pred & (y > 0)).sum())
    fp = float((pred & (y == 0)).sum())
    fn = float((~pred & (y > 0)).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "support": float((y > 0).sum())}


def macro_f1_interval(
    y: np.ndarray,
    pred: np.ndarray,
    groups: np.ndarray,
    rounds: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    present_only: bool = False,
) -> tuple[float, float]:
    """Group bootstrap interval of macro-F1: whole groups (conversations, documents) are drawn
    with replacement, since the messages of one conversation are not independent draws.
    F1 is 0 for a label without a true positive in a draw, as `prf` counts it; with
    `present_only`, each draw averages over the labels that have positives in it (the
    "labels present" macro-F1 of a small slice)."""
    keys, index = np.unique(groups, return_inverse=True)
    pos, hit = y > 0, pred.astype(bool)
    tp = np.zeros((len(keys), y.shape[1]))
    positives = np.zeros((len(keys), y.shape[1]))
    wrong = np.zeros((len(keys), y.shape[1]))  # false positives + false negatives
    for j in range(y.shape[1]):
        tp[:, j] = np.bincount(index, (hit[:, j] & pos[:, j]).astype(float), len(keys))
        wrong[:, j] = np.bincount(index, (hit[:, j] != pos[:, j]).astype(float), len(keys))
        positives[:, j] = np.bincount(index, pos[:, j].astype(float), len(keys))
    draws = (
        np.random.default_rng(seed)
        .multinomial(len(keys), np.full(len(keys), 1 / len(keys)), size=rounds)
        .astype(float)
    )
    tps, wrongs = draws @ tp, draws @ wrong
    f1 = np.divide(2 * tps, 2 * tps + wrongs, out=np.zeros_like(tps), where=tps > 0)
    if present_only:
        present = (draws @ positives) > 0
        kept = present.any(axis=1)
        macro = (f1 * present).sum(axis=1)[kept] / present.sum(axis=1)[kept]
    else:
        macro = f1.mean(axis=1)
    if not len(macro):  # no positives in the slice at all
        return 0.0, 0.0
    tail = (1 - level) / 2 * 100
    return float(np.percentile(macro, tail)), float(np.percentile(macro, 100 - tail))


def choose_threshold(
    y: np.ndarray,
    p: np.ndarray,
    min_recall: float,
    max_false_flags: float = 1.0,
    unlabelled: np.ndarray | None = None,
) -> float:
    """The threshold with the best F1 among those keeping recall >= min_recall and flagging at
    most `max_false_flags` of the `unlabelled` items (those with no label at all).

    If no threshold keeps that recall (tiny validation sets), the best-F1 threshold within the
    false-flag bound is used; if none keeps the bound, the one that flags fewest.
    """
    candidates = np.unique(np.clip(np.round(p, 4), 0.01, 0.99))
    if unlabelled is not None and unlabelled.any() and max_false_flags < 1.0:
        flagged = np.array([(p[unlabelled] >= t).mean() for t in candidates])
        within = flagged <= max_false_flags
        if not within.any():
            return float(candidates[int(np.argmin(flagged))])
        candidates = candidates[within]
    best, best_any = (-1.0, 0.5), (-1.0, 0.5)
    for t in candidates:
        m = prf(y, p >= t)
        if m["f1"] > best_any[0]:
            best_any = (m["f1"], float(t))
        if m["recall"] >= min_recall and m["f1"] > best[0]:
            best = (m["f1"], float(t))
    return best[1] if best[0] >= 0 else best_any[1]


def choose_thresholds(
    y: np.ndarray,
    p: np.ndarray,
    labels: tuple[str, ...],
    min_recall: float,
    max_false_flags: float = 1.0,
) -> dict[str, float]:
    """One threshold per label (see choose_threshold); the false-flag bound counts the items
    of `y` that carry no label at all."""
    unlabelled = ~(y > 0).any(axis=1)
    return {
        lab: choose_threshold(y[:, j], p[:, j], min_recall, max_false_flags, unlabelled)
        for j, lab in enumerate(labels)
    }


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE over all label decisions, equal-width bins."""
    y, p = y.ravel(), p.ravel()
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (p >= lo) & ((p < hi) | (hi == 1.0))
        if m.any():
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(ece)


def report(
    y: np.ndarray, p: np.ndarray, labels: tuple[str, ...], thresholds: dict[str, float]
) -> dict[str, Any]:
    """Per-label precision/recall/F1/PR-AUC, macro-F1 and ECE at the given thresholds."""
    out: dict[str, Any] = {"labels": {}, "n": len(y)}
    for j, lab in enumerate(labels):
        m = prf(y[:, j], p[:, j] >= thresholds[lab])
        if 0 < y[:, j].sum() < len(y):
            m["pr_auc"] = float(average_precision_score(y[:, j], p[:, j]))
        out["labels"][lab] = m
    out["macro_f1"] = float(np.mean([out["labels"][lab]["f1"] for lab in labels]))
    out["ece"] = expected_calibration_error(y, p)
    return out
