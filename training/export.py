"""`make export`: ONNX export, int8 dynamic quantization, parity checks, model directory.

The export proves itself: fp32 ONNX logits are compared with PyTorch's (largest difference
reported, failure above 1e-3); with `fuse_attention` the graph's attention, layer norms and
GELU are fused into onnxruntime's operators (checked against PyTorch the same way); MatMul
inputs are smoothed for int8 (training/smoothing.py; the
smoothed fp32 graph is checked against the original) and the int8 model is compared with fp32
on test decisions (failure below 99% agreement). The shipped directory is then loaded by the
service's own scoring core, which chooses its thresholds on validation and computes the metrics
it ships with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from service.classifier import SLOW_FUSIONS, TextEncoder, open_session
from training import realeval
from training.card import write_card
from training.config import REPO, TrainConfig, cli, resolve
from training.data import load_splits
from training.graph import streamline
from training.metrics import choose_thresholds, multi_hot, report
from training.model import MultiLabelClassifier, batch_tensors, encoder_of
from training.report import full_report, model_scores
from training.smoothing import smooth
from training.static_int8 import fix_model_file
from training.train import contexts_of, select
from training.vocab import select_ids, trim_model, trim_tokenizer

log = logging.getLogger(__name__)

MAX_LOGIT_DIFF = 1e-3


class ExportCheckError(RuntimeError):
    """An exported model does not match the model it came from."""


def code_version() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "service", "training"],
            cwd=REPO,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def export_onnx(
    model: MultiLabelClassifier, sample: tuple[torch.Tensor, torch.Tensor], path: Path
) -> None:
    model.eval()
    torch.onnx.export(
        model,
        sample,
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "logits": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )


def fuse(src: Path, dst: Path, encoder_config: Any) -> dict[str, int]:
    """onnxruntime's transformer fusions on the fp32 graph (attention, bias + GELU), graph-level
    only, so the file runs on any CPU onnxruntime; returns how many of each fused operator it
    made."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    # the embeddings stay a Gather + LayerNorm: int8 then quantizes the tables alone, where
    # the fused EmbedLayerNormalization would also take the layer norm's weights to 8 bits
    # (measured on e5-multi 1.7.0's weights: more int8 error and slower at batch 32)
    options.enable_embed_layer_norm = False
    # each residual Add and its layer norm stay apart: onnxruntime's SkipLayerNormalization is
    # the slower CPU kernel (see service.classifier.SLOW_FUSIONS); r35's fused int8 graph ran
    # 1.23x (one window per call) and 1.29x (up to 8) faster made this way, one thread
    options.enable_skip_layer_norm = False
    fused = optimizer.optimize_model(
        str(src),
        model_type="bert",
        num_heads=int(encoder_config.num_attention_heads),
        hidden_size=int(encoder_config.hidden_size),
        opt_level=0,
        optimization_options=options,
        use_gpu=False,
    )
    fused.save_model_to_file(str(dst))
    return {k: int(v) for k, v in fused.get_fused_operator_statistics().items() if v}


class Batches(list[tuple[torch.Tensor, torch.Tensor]]):
    """Test items as padded batches sorted by length (as the service batches them, so int8
    activation ranges are not stretched by padding); `order` maps rows back to items."""

    order: np.ndarray

    def restore(self, logits: np.ndarray) -> np.ndarray:
        out = np.empty_like(logits)
        out[self.order] = logits
        return out


def fit_temperatures(y: np.ndarray, p: np.ndarray, labels: tuple[str, ...]) -> dict[str, float]:
    """Per label, the temperature T (logit / T) that minimises the log-loss of the scores p
    against the labels y (a grid over 0.25..8, log-spaced: one parameter, no overfitting)."""
    eps = 1e-6
    logits = np.log(np.clip(p, eps, 1 - eps) / np.clip(1 - p, eps, 1 - eps))
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))
    out = {}
    for j, lab in enumerate(labels):
        z, t = logits[:, j], y[:, j]
        losses = []
        for temp in grid:
            q = np.clip(1 / (1 + np.exp(-z / temp)), eps, 1 - eps)
            losses.append(-np.mean(t * np.log(q) + (1 - t) * np.log(1 - q)))
        out[lab] = round(float(grid[int(np.argmin(losses))]), 4)
    return out


def batches(encoder: TextEncoder, texts: list[str], contexts: list[str], pad_id: int) -> Batches:
    lengths = [len(encoder.encode(t, c)[0]) for t, c in zip(texts, contexts, strict=True)]
    order = np.argsort(lengths, kind="stable")
    out = Batches(
        batch_tensors(
            encoder,
            [texts[i] for i in order[k : k + 32]],
            [contexts[i] for i in order[k : k + 32]],
            pad_id,
        )
        for k in range(0, len(texts), 32)
    )
    out.order = order
    return out


def onnx_logits(path: Path, inputs: Batches) -> np.ndarray:
    """Logits of an ONNX file on every core, run as the service's engine runs a graph."""
    sess = open_session(str(path), 0)
    out = [
        sess.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        for ids, mask in inputs
    ]
    return inputs.restore(np.concatenate(out))


def torch_logits(model: MultiLabelClassifier, inputs: Batches) -> np.ndarray:
    with torch.no_grad():
        return inputs.restore(np.concatenate([model(ids, mask).numpy() for ids, mask in inputs]))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def trim_vocabulary(
    model: MultiLabelClassifier,
    tokenizer_json: str,
    cfg: TrainConfig,
    thresholds: dict[str, float],
    splits: Any,
) -> tuple[str, dict[str, Any]]:
    """Trim the vocabulary in place and show, on the test split, what it changes."""
    train_ds = select(splits["train"], cfg.languages)
    keep = select_ids(
        tokenizer_json, list(train_ds["text"]) + list(train_ds["context"]), cfg.vocab_budget
    )
    test_ds = select(splits["test"], cfg.languages)
    texts, contexts = list(test_ds["text"]), contexts_of(test_ds, cfg)
    pad_id = int(model.encoder.config.pad_token_id or 0)
    full = encoder_of(tokenizer_json, cfg)
    before = torch_logits(model, batches(full, texts, contexts, pad_id))
    trimmed_json = trim_tokenizer(tokenizer_json, keep)
    trim_model(model, keep)
    small = encoder_of(trimmed_json, cfg)
    after = torch_logits(model, batches(small, texts, contexts, pad_id))
    same = np.array(
        [
            [keep[i] for i in small.encode(t, c)[0]] == full.encode(t, c)[0]
            for t, c in zip(texts, contexts, strict=True)
        ]
    )
    y = multi_hot(list(test_ds["labels"]), cfg.labels)
    result = {
        "tokens_before": len(json.loads(tokenizer_json)["model"]["vocab"]),
        "tokens_after": len(keep),
        "test_items_tokenized_identically": float(same.mean()),
        "max_logit_diff_on_identical": float(np.abs(before - after)[same].max(initial=0.0)),
        "macro_f1_before": report(y, _sigmoid(before), cfg.labels, thresholds)["macro_f1"],
        "macro_f1_after": report(y, _sigmoid(after), cfg.labels, thresholds)["macro_f1"],
        "by_language_after_minus_before": {
            lg: report(y[m], _sigmoid(after[m]), cfg.labels, thresholds)["macro_f1"]
            - report(y[m], _sigmoid(before[m]), cfg.labels, thresholds)["macro_f1"]
            for lg in sorted(set(test_ds["lang"]))
            for m in [np.array(test_ds["lang"]) == lg]
        },
    }
    log.info("vocabulary trimmed: %s", result)
    return trimmed_json, result


SUPPORTED_MACRO_F1 = 0.80


def supported_languages(real_test: dict[str, Any]) -> dict[str, Any]:
    """The languages a model supports, from its real-test summary, with the rule, as config.json
    keeps them."""
    return {
        "supported_languages": sorted(
            lang
            for lang, r in real_test["per_language"].items()
            if r["macro_f1_present"] >= SUPPORTED_MACRO_F1
        ),
        "supported_languages_rule": (
            f"real-test macro-F1 (labels with positives) >= {SUPPORTED_MACRO_F1}"
        ),
    }


def runtime() -> dict[str, Any]:
    """How the figures of metrics.json were scored: they hold for this runtime as the engine
    runs the graph (another onnxruntime, or other fusions, moves a few int8 decisions)."""
    return {"onnxruntime": ort.__version__, "fusions_off": list(SLOW_FUSIONS)}


def real_test_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The shipped int8 model on the real test split, in the shape metrics.json keeps."""

    def brief(r: dict[str, Any]) -> dict[str, Any]:
        return {
            "n": r["n"],
            "macro_f1": r["macro_f1"],
            "macro_f1_present": r["macro_f1_present"],
            "positives": {lab: int(m["support"]) for lab, m in r["labels"].items()},
            "fpr_unlabelled": r["not_sensitive_flagged"],
            **interval(r),
        }

    def interval(r: dict[str, Any]) -> dict[str, Any]:
        keys = ("macro_f1_interval", "macro_f1_present_interval")
        return {k: r[k] for k in keys if k in r}

    every = result["all"]
    whole = {}
    if "transcripts" in result:  # real chat judged conversation by conversation
        t = result["transcripts"]
        whole["transcripts"] = {**brief(t), "f1": {lab: m["f1"] for lab, m in t["labels"].items()}}
    return {
        "n": every["n"],
        "macro_f1": every["macro_f1"],
        **interval(every),
        "f1": {lab: m["f1"] for lab, m in every["labels"].items()},
        "fpr_unlabelled": every["not_sensitive_flagged"],
        "ece": every["ece"],
        "model_languages": brief(result["model_languages"]),
        "per_language": {k: brief(v) for k, v in result["by_lang"].items()},
        "per_source": {k: brief(v) for k, v in result["by_source"].items()},
        **whole,
    }


def real_check_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The shipped int8 model on the real check split (health keyword hits of the real test's
    groups in the supported languages), per language and label, in the shape metrics.json
    keeps: precision, recall and F1 of each label with positives, and the share of the items
    without the label that get it."""

    def brief(r: dict[str, Any]) -> dict[str, Any]:
        return {
            "n": r["n"],
            "labels": {
                lab: {
                    "positives": int(m["support"]),
                    "precision": m["precision"],
                    "recall": m["recall"],
                    "f1": m["f1"],
                    "false_flag_rate": r["false_flag_rate"][lab],
                }
                for lab, m in r["labels"].items()
                if m["support"] > 0
            },
        }

    return {
        **brief(result["all"]),
        "per_language": {k: brief(v) for k, v in result["by_lang"].items()},
    }


def export(cfg: TrainConfig) -> dict[str, Any]:
    run_dir = cfg.run_dir
    # plain attention when it is to be fused: the fusion recognises its graph, not SDPA's
    attn = "eager" if cfg.fuse_attention else None
    model, tok, meta = MultiLabelClassifier.load(run_dir / "checkpoint", attn)
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    thresholds: dict[str, float] = evaluation["thresholds"]
    splits = load_splits(resolve(cfg.splits_dir))  # read once: every step below uses them
    test_ds = select(splits["test"], cfg.languages)
    val_ds = select(splits["validation"], cfg.languages)
    pick_ds = select(splits[cfg.select_on], cfg.languages)  # thresholds of what ships
    texts = list(test_ds["text"])
    contexts = contexts_of(test_ds, cfg)
    pad_id = int(tok.pad_token_id or 0)
    tokenizer_json = tok.backend_tokenizer.to_str()
    trimming: dict[str, Any] = {}
    if cfg.vocab_budget:
        tokenizer_json, trimming = trim_vocabulary(model, tokenizer_json, cfg, thresholds, splits)
    encoder = encoder_of(tokenizer_json, cfg)
    inputs = batches(encoder, texts, contexts, pad_id)

    onnx_dir = run_dir / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = onnx_dir / "model-fp32.onnx", onnx_dir / "model-int8.onnx"
    export_onnx(model, inputs[0], fp32)
    rewrites = streamline(fp32, fp32)  # exact; the check against PyTorch below covers it

    ref = torch_logits(model, inputs)
    got = onnx_logits(fp32, inputs)
    max_diff = float(np.abs(ref - got).max())
    log.info("fp32 ONNX vs PyTorch: largest logit difference %.2e", max_diff)
    if max_diff > MAX_LOGIT_DIFF:
        raise ExportCheckError(f"fp32 ONNX differs from PyTorch by {max_diff:.2e} > 1e-3")
    plain, fused_ops, fused_diff = fp32, {}, None
    if cfg.fuse_attention:
        plain = onnx_dir / "model-fp32-fused.onnx"
        fused_ops = fuse(fp32, plain, model.encoder.config)
        fused_diff = float(np.abs(onnx_logits(plain, inputs) - ref).max())
        log.info("fused %s; fused fp32 vs PyTorch: %.2e", fused_ops, fused_diff)
        if fused_diff > MAX_LOGIT_DIFF:
            raise ExportCheckError(f"fused fp32 differs from PyTorch by {fused_diff:.2e} > 1e-3")

    # Smooth activation outliers into the weights (same fp32 function, far less int8 error),
    # calibrated on validation items, then quantize.
    val_cal = val_ds.shuffle(seed=cfg.seed).select(range(min(256, len(val_ds))))
    cal = batches(encoder, list(val_cal["text"]), contexts_of(val_cal, cfg), pad_id)
    smoothed = onnx_dir / "model-fp32-smoothed.onnx"
    changes = smooth(
        plain,
        smoothed,
        ({"input_ids": ids.numpy(), "attention_mask": mask.numpy()} for ids, mask in cal),
    )
    smooth_diff = float(np.abs(onnx_logits(smoothed, inputs) - onnx_logits(plain, inputs)).max())
    log.info("smoothed fp32 vs fp32: largest logit difference %.2e", smooth_diff)
    if smooth_diff > MAX_LOGIT_DIFF:
        raise ExportCheckError(f"smoothing changed fp32 logits by {smooth_diff:.2e} > 1e-3")
    quantize_dynamic(
        str(smoothed),
        str(int8),
        weight_type=QuantType.QInt8,
        per_channel=True,
        # shape inference cannot type the outputs of onnxruntime's fused operators
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    static: dict[str, Any] | None = None
    if cfg.static_activations:
        # fixed activation scales from validation windows of both kinds, each run alone
        cal_items = [
            (t, c) for t, c in zip(val_cal["text"], contexts_of(val_cal, cfg), strict=True)
        ]
        pick_cal = pick_ds.shuffle(seed=cfg.seed).select(range(min(256, len(pick_ds))))
        cal_items += list(zip(pick_cal["text"], contexts_of(pick_cal, cfg), strict=True))
        static = fix_model_file(int8, [w for t, c in cal_items for w in encoder.encode(t, c)])
        log.info("fixed activation scales: %s", static)
    q = onnx_logits(int8, inputs)
    thr = np.array([thresholds[lab] for lab in cfg.labels])
    dec_fp32 = 1 / (1 + np.exp(-got)) >= thr
    dec_int8 = 1 / (1 + np.exp(-q)) >= thr
    agreement = float((dec_fp32 == dec_int8).all(axis=1).mean())
    y_test = multi_hot(list(test_ds["labels"]), cfg.labels)
    fp32_f1 = report(y_test, 1 / (1 + np.exp(-got)), cfg.labels, thresholds)["macro_f1"]
    log.info("int8 vs fp32: %.4f of test items get the same decisions", agreement)
    if agreement < cfg.min_int8_agreement:
        raise ExportCheckError(
            f"int8 agrees with fp32 on {agreement:.4f} < {cfg.min_int8_agreement}"
        )

    # -- the model directory ------------------------------------------------------------------
    out = cfg.model_dir
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(int8, out / "model.onnx")
    (out / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    languages = sorted(set(test_ds["lang"]))
    config = {
        "name": cfg.name,
        "version": cfg.version,
        "labels": list(cfg.labels),
        "thresholds": thresholds,
        "max_length": cfg.max_length,
        "context_chars": cfg.context_chars,
        "context_turns": cfg.context_turns,
        "window_tokens": cfg.window_tokens,
        "pad_token_id": pad_id,
        "vocab_size": int(model.encoder.config.vocab_size),
        "base_model": cfg.base_model,
        "languages": languages,
        "data_hash": meta["data_hash"],
        "code_version": code_version(),
        "quantization": (
            "int8 (onnxruntime, per-channel weights), activations smoothed, activation scales "
            "fixed from validation windows"
            if static
            else "int8 dynamic (onnxruntime, per-channel weights), activations smoothed"
        ),
        "graph_rewrites": rewrites,
        **({"static_activations": static} if static else {}),
        "training": cfg.to_dict(),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))

    # Thresholds of what ships: chosen again on the selection split, by the training rule, from
    # the int8 model's own scores through the service's scoring core (never from a test split).
    pick_ctx = contexts_of(pick_ds, cfg)
    p_val = model_scores(out, list(pick_ds["text"]), pick_ctx, cfg.labels)
    y_val = multi_hot(list(pick_ds["labels"]), cfg.labels)
    if cfg.calibrate:
        # One temperature per label, fitted on the selection split's int8 scores, so that a
        # score means about the same share of positives on real text; thresholds are then
        # chosen on the calibrated scores (the order of scores, hence the F1, is unchanged).
        temps = fit_temperatures(y_val, p_val, cfg.labels)
        config["calibration"] = {"temperature": temps, "fitted_on": cfg.select_on}
        (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
        p_val = model_scores(out, list(pick_ds["text"]), pick_ctx, cfg.labels)
        log.info("temperatures on %s: %s", cfg.select_on, temps)
    config["thresholds"] = choose_thresholds(
        y_val, p_val, cfg.labels, cfg.min_recall, cfg.max_false_flags
    )
    config["thresholds_chosen_on"] = f"{cfg.select_on}, with the shipped int8 model"
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    log.info("thresholds: PyTorch %s -> shipped %s", thresholds, config["thresholds"])

    # Metrics of what ships: the int8 model through the service's own scoring core.
    compare = {k: resolve(v) for k, v in cfg.compare_with.items()}
    full = full_report(out, val_ds, test_ds, cfg.labels, compare, cfg.empath_baseline)
    metrics = {
        "split": "test",
        "model": f"{cfg.name} {cfg.version}",
        "data_hash": meta["data_hash"],
        **full,
        "pytorch_test": evaluation["test"],
        "validation": evaluation["validation"],
        "export": {
            "max_logit_diff_fp32_vs_pytorch": max_diff,
            "int8_fp32_decision_agreement": agreement,
            "fused_operators": fused_ops,
            "max_logit_diff_fused_fp32_vs_pytorch": fused_diff,
            "int8_macro_f1": full["test"]["macro_f1"],
            "fp32_macro_f1": fp32_f1,
            "thresholds_pytorch": thresholds,
            "smoothing": {
                "inputs_smoothed": sum(1 for c in changes if c.alpha),
                "inputs": len(changes),
                "max_logit_diff_smoothed_fp32_vs_fp32": smooth_diff,
                "simulated_int8_error_before": float(np.mean([c.error_before for c in changes])),
                "simulated_int8_error_after": float(np.mean([c.error_after for c in changes])),
                "calibration": f"{len(val_cal)} validation items",
            },
            "size_bytes": sum(f.stat().st_size for f in out.iterdir()),
        },
        "vocabulary_trimming": trimming,
        "runtime": runtime(),
    }
    if "real_test" in splits:  # the held-out real text decides which model ships
        metrics["real_test"] = real_test_summary(
            realeval.evaluate(out, "real_test", resolve(cfg.splits_dir))
        )
        # A language is supported only where its real-test macro-F1 (over the labels it has
        # positives for) is known and reaches the bar; the service fails closed elsewhere.
        config.update(supported_languages(metrics["real_test"]))
    if "real_check" in splits:  # reported beside the real test, never part of it
        metrics["real_check"] = real_check_summary(
            realeval.evaluate(out, "real_check", resolve(cfg.splits_dir))
        )
        (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    # the weights' digest: loading checks it, so a truncated or swapped file never serves
    config["model_sha256"] = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    if cfg.ablations:  # what each choice of the recipe was worth, measured run by run
        metrics["ablations"] = json.loads(resolve(cfg.ablations).read_text(encoding="utf-8"))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_card(out, config, metrics)
    log.info("wrote %s (test macro-F1 %.4f)", out, metrics["test"]["macro_f1"])
    return metrics


def main() -> None:
    cli(export, "Export, quantize and check the model.")


if __name__ == "__main__":
    main()
