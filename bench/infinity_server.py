"""A benchmark peer: infinity-emb's own server (dynamic batching across requests) serving the
shipped int8 `model.onnx` of MODEL_DIR with its optimum/ONNX engine on CPU.

Usage (in the peers' environment, `.venv-peers`, made by `make bench-peers`):
    .venv-peers/bin/python bench/infinity_server.py MODEL_DIR PORT [BATCH_SIZE]

Serves on 127.0.0.1:PORT with url prefix /v1:
    POST /v1/classify  {"model": "e5-multi", "input": ["text", ...]}
    -> {"object": "classify", "data": [[{"score": .., "label": "health"}, ..], ..], ...}
Ready: GET /health (200 once the model is loaded; infinity does not prefix it).

infinity-emb reads a transformers-style folder, made here in a temporary directory (as
bench/optimum_server.py does): a `config.json` of the sequence-classification kind with the
model's labels and problem_type multi_label_classification (so the transformers pipeline that
infinity runs applies a sigmoid per label, as the service does), the ONNX file as a link, the
project's `tokenizer.json` and a `tokenizer_config.json` naming a fast tokenizer.

One patch to infinity (INFINITY_PEER_TRUNCATE=0 turns it off): its OptimumClassifier calls the
pipeline without truncation, so a text longer than the model's positions fails and long texts
cost more than in the service; here the pipeline is called with truncation=True,
max_length=<config max_length> (128), as bench/optimum_server.py does.
Note: infinity groups queued requests into batches of up to BATCH_SIZE texts, but hands each
group to a transformers pipeline called without batch_size, which runs the model one text at a
time (batch 1). That is infinity as shipped and the default here; INFINITY_PEER_PIPE_BATCH=N
makes the patched call pass batch_size=N (padded batches of N texts per ONNX run).
ONNX graph optimisation is off (--onnx-disable-optimize): the file is already quantised.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from hf_folder import transformers_folder  # bench/, the script's own folder


def patch_truncation(max_length: int, pipe_batch: int | None) -> None:
    from infinity_emb.transformer.classifier.optimum import OptimumClassifier

    extra = {"batch_size": pipe_batch} if pipe_batch else {}

    def encode_core(self, sentences: list[str]):  # type: ignore[no-untyped-def]
        return self._pipe(sentences, truncation=True, max_length=max_length, **extra)

    OptimumClassifier.encode_core = encode_core  # type: ignore[method-assign]


def main() -> None:
    model_dir, port = Path(sys.argv[1]).resolve(), int(sys.argv[2])
    batch_size = sys.argv[3] if len(sys.argv) > 3 else "32"
    scratch = Path(tempfile.mkdtemp(prefix="st-infinity-"))
    folder = scratch / model_dir.name
    folder.mkdir()
    _, max_length = transformers_folder(model_dir, folder, tokenizer=True)
    # nothing from a hub, no telemetry, caches in the scratch folder
    os.environ.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(scratch / "hf"),
        INFINITY_HOME=str(scratch / "infinity"),
        DO_NOT_TRACK="1",
        INFINITY_ANONYMOUS_USAGE_STATS="0",
    )
    if os.environ.get("INFINITY_PEER_TRUNCATE", "1") != "0":
        pipe_batch = os.environ.get("INFINITY_PEER_PIPE_BATCH")
        patch_truncation(max_length, int(pipe_batch) if pipe_batch else None)
    from infinity_emb.cli import cli

    # infinity passes optimum file_name=<the ONNX path as globbed under --model-id>, and
    # optimum-onnx (optimum 2.x) wants it relative to the folder: run from inside the folder
    # with --model-id "." so that the globbed path is just "model.onnx".
    os.chdir(folder)
    sys.argv = [
        "infinity_emb", "v2",
        "--model-id", ".",
        "--served-model-name", model_dir.name,
        "--engine", "optimum",
        "--device", "cpu",
        "--batch-size", batch_size,
        "--onnx-disable-optimize",
        "--no-model-warmup",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--url-prefix", "/v1",
        "--log-level", os.environ.get("INFINITY_LOG_LEVEL", "warning"),
    ]  # fmt: skip
    sys.exit(cli())


if __name__ == "__main__":
    main()
