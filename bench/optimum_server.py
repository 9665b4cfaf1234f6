"""A peer for bench/peers.py: what a Hugging Face user writes first to serve the same model, a
plain FastAPI route over optimum's `ORTModelForSequenceClassification` and a transformers
`text-classification` pipeline (sigmoid per label), one pipeline call per request, no
batching across requests, no cache.

Usage (with the peers' own environment, `make bench-peers` makes it):
    .venv-peers/bin/python bench/optimum_server.py MODEL_DIR PORT

It serves the shipped int8 `model.onnx` and `tokenizer.json` of MODEL_DIR as they are (the
same weights and vocabulary as the service), through a transformers-style folder made in a
temporary directory: a `config.json` of the sequence-classification kind with the model's
labels, the ONNX file and the tokenizer.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from hf_folder import transformers_folder  # bench/, the script's own folder
from optimum.onnxruntime import ORTModelForSequenceClassification
from pydantic import BaseModel
from transformers import PreTrainedTokenizerFast, pipeline


class Body(BaseModel):
    messages: list[dict[str, str]]


def main() -> None:
    model_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    folder = Path(tempfile.mkdtemp(prefix="st-optimum-"))
    labels, _ = transformers_folder(model_dir, folder)
    model = ORTModelForSequenceClassification.from_pretrained(folder, file_name="model.onnx")
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(model_dir / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=128,
    )
    pipe = pipeline(
        "text-classification", model=model, tokenizer=tok, top_k=None, function_to_apply="sigmoid"
    )
    app = FastAPI()

    @app.post("/v1/classify")
    def classify(body: Body) -> dict[str, object]:
        out = pipe([m["content"] for m in body.messages], truncation=True, max_length=128)
        return {
            "messages": [{s["label"]: s["score"] for s in scores} for scores in out],
            "labels": labels,
        }

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
