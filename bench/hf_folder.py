"""A transformers-style folder for a model directory, as the benchmark peers read it (they run
in their own environments, so this module imports nothing beyond the standard library)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def transformers_folder(
    model_dir: Path, out: Path, tokenizer: bool = False
) -> tuple[list[str], int]:
    """Write into `out` a sequence-classification `config.json` with the model's labels and
    problem_type multi_label_classification (a transformers pipeline then applies a sigmoid per
    label, as the service does) and link the ONNX file; with `tokenizer`, also the project's
    `tokenizer.json` and a `tokenizer_config.json` naming a fast tokenizer. Returns the labels
    and the model's max_length."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    labels = list(config["labels"])
    max_length = int(config.get("max_length", 128))
    hf = {
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "problem_type": "multi_label_classification",
        "id2label": dict(enumerate(labels)),
        "label2id": {x: i for i, x in enumerate(labels)},
        "vocab_size": config["vocab_size"],
        "pad_token_id": config["pad_token_id"],
        "max_position_embeddings": 512,
    }
    (out / "config.json").write_text(json.dumps(hf), encoding="utf-8")
    os.symlink((model_dir / "model.onnx").resolve(), out / "model.onnx")
    if tokenizer:
        tok_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "model_max_length": max_length,
        }
        (out / "tokenizer_config.json").write_text(json.dumps(tok_config), encoding="utf-8")
        os.symlink((model_dir / "tokenizer.json").resolve(), out / "tokenizer.json")
    return labels, max_length
