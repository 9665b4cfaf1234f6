"""The naive baseline for bench/http_load.py: the same model on PyTorch behind a plain FastAPI
route, one request at a time, no batching, no cache, no ONNX; each message read alone (less
work than the service, which reads the turns before it).

Usage: python bench/naive_server.py MODEL PORT
MODEL is a training checkpoint (runs/<name>/checkpoint, after `make train`: the fine-tuned
weights) or a base model (any transformers id or folder; `pkg:e5`, `pkg:minilm`): the same
architecture with a new, untrained head of the same shape, which costs the same per request.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoTokenizer

from training.config import LABELS, resolve_base_model
from training.model import MultiLabelClassifier


class Body(BaseModel):
    messages: list[dict[str, str]]


def main() -> None:
    source, port = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(2)
    if (Path(source) / "checkpoint.json").exists():
        model, tok, meta = MultiLabelClassifier.load(Path(source))
        labels = list(meta["config"]["labels"])  # type: ignore[index]
    else:
        base = resolve_base_model(source)
        labels = list(LABELS)
        model = MultiLabelClassifier.from_base(base, len(labels)).eval()
        tok = AutoTokenizer.from_pretrained(base)
    app = FastAPI()

    @app.post("/v1/classify")
    def classify(body: Body) -> dict[str, object]:
        texts = [m["content"] for m in body.messages]
        enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            probs = torch.sigmoid(model(enc["input_ids"], enc["attention_mask"])).tolist()
        return {"messages": [dict(zip(labels, p, strict=True)) for p in probs]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
