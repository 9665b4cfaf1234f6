"""`make export`: ONNX export, int8 dynamic quantization, parity checks, model directory.

The export proves itself: fp32 ONNX logits are compared with PyTorch's (largest difference
reported, failure above 1e-3) and the int8 model is compared with fp32 on test decisions
(failure below 99% agreement). The shipped directory is then loaded by the service's own
scoring core to compute the metrics it ships with.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from service.classifier import TextEncoder
from training.card import write_card
from training.config import REPO, TrainConfig, resolve
from training.data import load_splits
from training.metrics import multi_hot, report
from training.model import MultiLabelClassifier, batch_tensors, make_encoder
from training.report import full_report
from training.train import contexts_of, select

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


def export_onnx(model: MultiLabelClassifier, tok: Any, path: Path) -> None:
    model.eval()
    enc = tok(
        ["an example", "a slightly longer example sentence"], padding=True, return_tensors="pt"
    )
    torch.onnx.export(
        model,
        (enc["input_ids"], enc["attention_mask"]),
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


def batches(
    encoder: TextEncoder, texts: list[str], contexts: list[str], pad_id: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The test items as padded batches, read exactly as the service reads them."""
    return [
        batch_tensors(encoder, texts[i : i + 32], contexts[i : i + 32], pad_id)
        for i in range(0, len(texts), 32)
    ]


def onnx_logits(path: Path, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = [
        sess.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        for ids, mask in inputs
    ]
    return np.concatenate(out)


def torch_logits(
    model: MultiLabelClassifier, inputs: list[tuple[torch.Tensor, torch.Tensor]]
) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(ids, mask).numpy() for ids, mask in inputs])


def export(cfg: TrainConfig) -> dict[str, Any]:
    run_dir = cfg.run_dir
    model, tok, meta = MultiLabelClassifier.load(run_dir / "checkpoint")
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    thresholds: dict[str, float] = evaluation["thresholds"]
    test_ds = select(load_splits(resolve(cfg.splits_dir))["test"], cfg.languages)
    texts = list(test_ds["text"])
    contexts = contexts_of(test_ds, cfg)
    encoder = make_encoder(tok, cfg.max_length, cfg.context_chars, cfg.window_tokens)
    inputs = batches(encoder, texts, contexts, int(tok.pad_token_id or 0))

    onnx_dir = run_dir / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = onnx_dir / "model-fp32.onnx", onnx_dir / "model-int8.onnx"
    export_onnx(model, tok, fp32)

    ref = torch_logits(model, inputs)
    got = onnx_logits(fp32, inputs)
    max_diff = float(np.abs(ref - got).max())
    log.info("fp32 ONNX vs PyTorch: largest logit difference %.2e", max_diff)
    if max_diff > MAX_LOGIT_DIFF:
        raise ExportCheckError(f"fp32 ONNX differs from PyTorch by {max_diff:.2e} > 1e-3")

    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
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
    tok.backend_tokenizer.save(str(out / "tokenizer.json"))
    languages = sorted(set(test_ds["lang"]))
    config = {
        "name": cfg.name,
        "version": cfg.version,
        "labels": list(cfg.labels),
        "thresholds": thresholds,
        "max_length": cfg.max_length,
        "context_chars": cfg.context_chars,
        "window_tokens": cfg.window_tokens,
        "pad_token_id": int(tok.pad_token_id or 0),
        "base_model": cfg.base_model,
        "languages": languages,
        "data_hash": meta["data_hash"],
        "code_version": code_version(),
        "quantization": "int8 dynamic (onnxruntime, per-channel)",
        "training": cfg.to_dict(),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))

    # Metrics of what ships: the int8 model through the service's own scoring core.
    splits = load_splits(resolve(cfg.splits_dir))
    val_ds = select(splits["validation"], cfg.languages)
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
            "int8_macro_f1": full["test"]["macro_f1"],
            "fp32_macro_f1": fp32_f1,
            "size_bytes": sum(f.stat().st_size for f in out.iterdir()),
        },
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_card(out, config, metrics)
    log.info("wrote %s (test macro-F1 %.4f)", out, metrics["test"]["macro_f1"])
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description="Export, quantize and check the model.")
    parser.add_argument("--config", default="training/configs/minilm-en.json")
    parser.add_argument("--set", nargs="*", default=[])
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(message)s")
    export(TrainConfig.load(resolve(args.config), args.set))


if __name__ == "__main__":
    main()
