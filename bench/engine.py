"""Sequences per second of the shipped int8 ONNX model vs fp32 ONNX vs PyTorch, same inputs.

Usage: .venv/bin/python bench/engine.py [--config training/configs/e5-multi.json] [--seconds 5]
Needs the run folder of the config (runs/<name>/checkpoint and runs/<name>/onnx/model-fp32.onnx)
and the shipped model directory models/<name>/. Prints throughput and ratios.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from training.config import TrainConfig, resolve
from training.data import load_splits
from training.model import MultiLabelClassifier, batch_tensors, encoder_of, make_encoder


def rate(fn: Callable[[], None], n_seqs: int, seconds: float) -> float:
    fn()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += n_seqs
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="training/configs/minilm-en.json")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    cfg = TrainConfig.load(resolve(args.config))
    model, tok, _ = MultiLabelClassifier.load(cfg.run_dir / "checkpoint")
    torch.set_num_threads(2)
    # PyTorch reads with the checkpoint's tokenizer, ONNX with the shipped (maybe trimmed) one:
    # the same texts, each model with its own vocabulary.
    encoder = make_encoder(tok, cfg)
    shipped = encoder_of((cfg.model_dir / "tokenizer.json").read_text(encoding="utf-8"), cfg)
    texts = list(load_splits(resolve(cfg.splits_dir))["test"]["text"])[:256]
    pad = int(tok.pad_token_id or 0)
    sessions = {
        "int8 ONNX (shipped)": Path(cfg.model_dir / "model.onnx"),
        "fp32 ONNX": Path(cfg.run_dir / "onnx" / "model-fp32.onnx"),
    }
    print(
        f"model {cfg.name}; {len(texts)} test texts; mean {np.mean([len(t) for t in texts]):.0f}"
        " characters"
    )
    results: dict[tuple[str, int], float] = {}
    for batch in (1, 32):
        inputs = [
            batch_tensors(encoder, texts[i : i + batch], [""] * len(texts[i : i + batch]), pad)
            for i in range(0, len(texts), batch)
        ][: max(1, 256 // batch)]
        onnx_inputs = [
            batch_tensors(shipped, texts[i : i + batch], [""] * len(texts[i : i + batch]), pad)
            for i in range(0, len(texts), batch)
        ][: max(1, 256 // batch)]
        k = 0

        def run_torch(inputs: list = inputs) -> None:
            nonlocal k
            ids, mask = inputs[k % len(inputs)]
            k += 1
            with torch.no_grad():
                model(ids, mask)

        results[("PyTorch fp32", batch)] = rate(run_torch, batch, args.seconds)
        for name, path in sessions.items():
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 2
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

            def run_onnx(sess: ort.InferenceSession = sess, inputs: list = onnx_inputs) -> None:
                nonlocal k
                ids, mask = inputs[k % len(inputs)]
                k += 1
                sess.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})

            results[(name, batch)] = rate(run_onnx, batch, args.seconds)
    started = time.perf_counter()
    from service.artifact import ModelArtifact
    from service.classifier import Classifier

    Classifier(ModelArtifact.load(cfg.model_dir)).score_texts(["warm-up"])
    load_s = time.perf_counter() - started
    size_mb = sum(f.stat().st_size for f in cfg.model_dir.iterdir()) / 1e6
    print(
        f"shipped model dir {size_mb:.1f} MB (target <= 60); load + first answer "
        f"{load_s:.2f} s (target < 3)"
    )
    print(f"{'engine':<22}{'batch':>6}{'seq/s':>10}{'vs PyTorch':>12}{'vs fp32 ONNX':>14}")
    for (name, batch), r in results.items():
        base, fp32 = results[("PyTorch fp32", batch)], results[("fp32 ONNX", batch)]
        print(f"{name:<22}{batch:>6}{r:>10.1f}{r / base:>11.2f}x{r / fp32:>13.2f}x")


if __name__ == "__main__":
    main()
