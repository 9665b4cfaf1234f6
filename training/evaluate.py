"""`make evaluate`: thresholds chosen on validation, metrics on test, per label and language."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from training.config import TrainConfig, cli, resolve
from training.data import load_splits
from training.metrics import choose_thresholds, multi_hot, report
from training.model import MultiLabelClassifier
from training.train import evaluate_split, select

log = logging.getLogger(__name__)


def breakdown(
    ds: Any,
    y: np.ndarray,
    p: np.ndarray,
    cfg: TrainConfig,
    thresholds: dict[str, float],
    column: str,
) -> dict[str, Any]:
    """The same report for each value of a column (language, source...)."""
    values = np.array(ds[column])
    return {
        str(v): report(y[values == v], p[values == v], cfg.labels, thresholds)
        for v in sorted(set(values.tolist()))
    }


def evaluate(cfg: TrainConfig) -> dict[str, Any]:
    model, tok, meta = MultiLabelClassifier.load(cfg.run_dir / "checkpoint")
    ds = load_splits(resolve(cfg.splits_dir))
    val_ds = select(ds[cfg.select_on], cfg.languages)
    test_ds = select(ds["test"], cfg.languages)
    p_val = evaluate_split(model, tok, val_ds, cfg)
    p_test = evaluate_split(model, tok, test_ds, cfg)
    y_val = multi_hot(list(val_ds["labels"]), cfg.labels)
    y_test = multi_hot(list(test_ds["labels"]), cfg.labels)
    thresholds = choose_thresholds(y_val, p_val, cfg.labels, cfg.min_recall, cfg.max_false_flags)
    result = {
        "thresholds": thresholds,
        "min_recall": cfg.min_recall,
        "data_hash": meta["data_hash"],
        "validation": report(y_val, p_val, cfg.labels, thresholds),
        "test": report(y_test, p_test, cfg.labels, thresholds),
        "test_by_language": breakdown(test_ds, y_test, p_test, cfg, thresholds, "lang"),
        "test_by_source": breakdown(test_ds, y_test, p_test, cfg, thresholds, "source"),
    }
    result["thresholds_chosen_on"] = cfg.select_on
    if "real_test" in ds:  # the held-out real text, judged at the same thresholds
        real_ds = ds["real_test"]
        p_real = evaluate_split(model, tok, real_ds, cfg)
        y_real = multi_hot(list(real_ds["labels"]), cfg.labels)
        result["real_test"] = report(y_real, p_real, cfg.labels, thresholds)
        result["real_test_by_language"] = breakdown(
            real_ds, y_real, p_real, cfg, thresholds, "lang"
        )
        log.info("real test macro-F1 %.4f", result["real_test"]["macro_f1"])
    (cfg.run_dir / "evaluation.json").write_text(json.dumps(result, indent=2))
    log.info("test macro-F1 %.4f  thresholds %s", result["test"]["macro_f1"], thresholds)
    return result


def main() -> None:
    cli(evaluate, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
