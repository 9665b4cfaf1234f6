"""The naive baseline for bench/http_load.py: the same fine-tuned weights on PyTorch behind a
plain FastAPI route, one request at a time, no batching, no cache, no ONNX.

Usage: python bench/naive_server.py RUN_CHECKPOINT_DIR PORT
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from training.model import MultiLabelClassifier


class Body(BaseModel):
    messages: list[dict[str, str]]


def main() -> None:
    checkpoint, port = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(2)
    model, tok, meta = MultiLabelClassifier.load(checkpoint)
    labels = meta["config"]["labels"]  # type: ignore[index]
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
