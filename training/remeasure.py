"""Score a model directory again, as the service's scoring core runs it now, and rewrite what
depends on that: the int8 test report (per language, robustness, comparisons), the real test,
the languages the model supports, the real check (added when the data has it), the runtime the
figures hold for, the model card.

Weights, thresholds and temperatures stay as exported; so do the export-time checks (fp32
against PyTorch, int8 against fp32, smoothing), which need the run's checkpoint. Use it when
the runtime changes how a shipped graph runs (an onnxruntime upgrade, a fusion turned off):
dynamic int8 rounds a little differently and a few decisions move.

    python -m training.remeasure --config training/configs/e5-multi.json
"""

from __future__ import annotations

import json
import logging
from typing import Any

from training import realeval
from training.card import write_card
from training.config import TrainConfig, cli, resolve
from training.data import load_splits
from training.export import real_check_summary, real_test_summary, runtime, supported_languages
from training.report import full_report
from training.train import select

log = logging.getLogger(__name__)


def remeasure(cfg: TrainConfig) -> dict[str, Any]:
    out = cfg.model_dir
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    splits = load_splits(resolve(cfg.splits_dir))
    test_ds = select(splits["test"], cfg.languages)
    val_ds = select(splits["validation"], cfg.languages)
    compare = {k: resolve(v) for k, v in cfg.compare_with.items()}
    full = full_report(out, val_ds, test_ds, cfg.labels, compare, cfg.empath_baseline)
    before = {"test": metrics["test"]["macro_f1"]}
    metrics.update(full)
    metrics["export"]["int8_macro_f1"] = full["test"]["macro_f1"]
    if "real_test" in metrics:  # rewritten where the export measured it, never added
        before["real_test"] = metrics["real_test"]["macro_f1"]
        metrics["real_test"] = real_test_summary(
            realeval.evaluate(out, "real_test", resolve(cfg.splits_dir))
        )
        config.update(supported_languages(metrics["real_test"]))
    if (resolve(cfg.splits_dir) / "real_check.parquet").exists():  # a check the data gained
        metrics["real_check"] = real_check_summary(
            realeval.evaluate(out, "real_check", resolve(cfg.splits_dir))
        )
    metrics["runtime"] = runtime()
    if cfg.ablations:
        metrics["ablations"] = json.loads(resolve(cfg.ablations).read_text(encoding="utf-8"))
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_card(out, config, metrics)
    log.info(
        "remeasured %s: test %.4f -> %.4f, real test %s -> %s",
        out,
        before["test"],
        metrics["test"]["macro_f1"],
        before.get("real_test"),
        metrics.get("real_test", {}).get("macro_f1"),
    )
    return metrics


def main() -> None:
    cli(remeasure, "Score a model directory again as the engine runs it now; rewrite its figures.")


if __name__ == "__main__":
    main()
