"""The evaluation report of a shipped model directory, scored through the service's own core:
per label and language, calibration, PR curves, baselines side by side, robustness rows."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from service.artifact import ModelArtifact
from service.classifier import Classifier, render_context
from training.baselines import EmpathBaseline
from training.metrics import choose_thresholds, multi_hot, report
from training.robustness import PERTURBATIONS, perturb

log = logging.getLogger(__name__)


def model_scores(
    model_dir: Path, texts: list[str], contexts: list[str], labels: tuple[str, ...]
) -> np.ndarray:
    """Scores through the service's core; each text is read after its context (the previous
    turn) when the model uses context."""
    clf = Classifier(ModelArtifact.load(model_dir), batch_size=64)
    res = clf.score_texts(texts, contexts)
    return np.array([[r.scores.get(lab, 0.0) for lab in labels] for r in res], np.float32)


def contexts_for(model_dir: Path, ds: Any) -> list[str]:
    """The context each item of a split is read after, as this model directory reads context
    (the turns before it, or the tail of the previous message)."""
    config = ModelArtifact.load(model_dir).config
    if "history" not in ds.column_names:
        return list(ds["context"])
    turns, chars = int(config.get("context_turns", 0)), int(config.get("context_chars", 0))
    return [render_context([(r, t) for r, t in h], turns, chars) for h in ds["history"]]


def by_language(
    y: np.ndarray,
    p: np.ndarray,
    langs: np.ndarray,
    labels: tuple[str, ...],
    thresholds: dict[str, float],
) -> dict[str, Any]:
    return {
        str(lg): report(y[langs == lg], p[langs == lg], labels, thresholds)
        for lg in sorted(set(langs.tolist()))
    }


def plots(out: Path, y: np.ndarray, p: np.ndarray, labels: tuple[str, ...]) -> list[str]:
    """PR curve per label and a reliability diagram, as PNG files in the model directory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    names = []
    fig, ax = plt.subplots(figsize=(5, 4))
    for j, lab in enumerate(labels):
        if 0 < y[:, j].sum() < len(y):
            prec, rec, _ = precision_recall_curve(y[:, j], p[:, j])
            ax.plot(rec, prec, label=lab)
    ax.set(
        xlabel="recall", ylabel="precision", title="PR curves (test)", xlim=(0, 1), ylim=(0, 1.02)
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "pr_curves.png", dpi=80)
    names.append("pr_curves.png")
    plt.close(fig)

    edges = np.linspace(0, 1, 11)
    flat_y, flat_p = y.ravel(), p.ravel()
    centers, accs = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (flat_p >= lo) & ((flat_p < hi) | (hi == 1.0))
        if m.any():
            centers.append(flat_p[m].mean())
            accs.append(flat_y[m].mean())
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.plot(centers, accs, "o-")
    ax.set(xlabel="mean predicted score", ylabel="share positive", title="Reliability (test)")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=80)
    names.append("reliability.png")
    plt.close(fig)
    return names


def full_report(
    model_dir: Path,
    val: Any,
    test: Any,
    labels: tuple[str, ...],
    compare_dirs: dict[str, Path] | None = None,
    with_empath: bool = True,
) -> dict[str, Any]:
    """Everything the model card shows about a model directory."""
    artifact = ModelArtifact.load(model_dir)
    thresholds = artifact.thresholds
    texts, langs = list(test["text"]), np.array(test["lang"])
    ctx = contexts_for(model_dir, test)
    y = multi_hot(list(test["labels"]), labels)
    p = model_scores(model_dir, texts, ctx, labels)
    out: dict[str, Any] = {
        "test": report(y, p, labels, thresholds),
        "test_by_language": by_language(y, p, langs, labels, thresholds),
        "plots": plots(model_dir, y, p, labels),
    }
    # Robustness: the same test items, perturbed; F1 through the service's normalisation.
    rows = {}
    for name in PERTURBATIONS:
        if name.startswith("arabic"):
            mask = langs == "ar"
            if not mask.any():
                continue
            clean = report(y[mask], p[mask], labels, thresholds)["macro_f1"]
            idx = np.flatnonzero(mask)
            pt = model_scores(
                model_dir, perturb([texts[i] for i in idx], name), [ctx[i] for i in idx], labels
            )
            noisy = report(y[mask], pt, labels, thresholds)["macro_f1"]
        else:
            clean = out["test"]["macro_f1"]
            noisy = report(
                y, model_scores(model_dir, perturb(texts, name), ctx, labels), labels, thresholds
            )["macro_f1"]
        rows[name] = {"clean_macro_f1": clean, "perturbed_macro_f1": noisy, "drop": clean - noisy}
    out["robustness"] = rows
    # Baselines on the same test split, thresholds chosen on validation by the same rule.
    comparison: dict[str, Any] = {}
    y_val = multi_hot(list(val["labels"]), labels)
    for name, d in (compare_dirs or {}).items():
        if (d / "model.onnx").exists():
            other = ModelArtifact.load(d)
            ps = model_scores(d, texts, contexts_for(d, test), labels)
            thr = {lab: other.thresholds.get(lab, 0.5) for lab in labels}
            comparison[name] = {
                "test": report(y, ps, labels, thr),
                "test_by_language": by_language(y, ps, langs, labels, thr),
            }
    if with_empath:
        emp = EmpathBaseline(labels)
        thr = choose_thresholds(y_val, emp.scores(list(val["text"])), labels, 0.0)
        pe = emp.scores(texts)
        comparison["empath keywords"] = {
            "test": report(y, pe, labels, thr),
            "test_by_language": by_language(y, pe, langs, labels, thr),
        }
    out["comparison"] = comparison
    return out
