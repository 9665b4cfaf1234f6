"""A training checkpoint read back out of a shipped model directory's int8 graph.

    python -m training.from_onnx models/e5-multi runs/e5-multi-1.7.0

A run's PyTorch checkpoint stays on the machine that trained it (`runs/` is not committed), so
a second stage (`init_from`) could only start from a run made in the same place. This writes a
checkpoint that `init_from` (and `MultiLabelClassifier.load`) accept from what ships:

- each int8 matmul's weight dequantized per output column, with the export's smoothing undone
  (the graph divides a matmul's input by a factor per input channel and multiplies the weight's
  rows by it; the linear layer is the product, so the factor goes back into the weight);
- biases, layer norms and the position and token-type embeddings from the graph (named as the
  state dict names them; the embeddings dequantized);
- the word embeddings from the base model where the recipe kept them as pre-trained
  (`freeze_embeddings`: exact, where the graph holds an 8-bit copy of the rows its trimmed
  vocabulary kept); otherwise the graph's rows, matched to the base tokenizer by token, with
  the base model's rows for the tokens the trimming dropped.

The weights carry int8 rounding (the reconstruction scores within int8 error of the graph, not
as the original fp32 run): a start for more training, not a copy of the run. Plain graphs
only: one exported with fused attention (`fuse_attention`) or fixed activation scales
(`static_activations`) is refused, as is a graph whose matmuls do not follow the export's
naming.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from training.config import resolve_base_model
from training.model import MultiLabelClassifier

log = logging.getLogger(__name__)

FUSED = {"Attention", "QAttention", "MatMulIntegerToFloat", "QuantizeLinear"}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _state_key(node_name: str) -> str:
    """'/encoder/encoder/layer.0/attention/self/query/MatMul_quant' -> the state dict's
    'encoder.encoder.layer.0.attention.self.query.weight'; '/head/Gemm_MatMul_quant' ->
    'head.weight'."""
    path = node_name.strip("/").split("/")
    if not path[-1].endswith("MatMul_quant") or len(path) < 2:
        raise ValueError(f"{node_name}: not a matmul the export quantized")
    return ".".join(path[:-1]) + ".weight"


def graph_weights(model_path: Path) -> dict[str, np.ndarray]:
    """Every weight the graph holds under its state-dict name, in PyTorch's layout (a linear
    layer's weight as (out, in)); embeddings dequantized, as the graph has them."""
    graph = onnx.load(str(model_path)).graph
    ops = {n.op_type for n in graph.node}
    if ops & FUSED:
        raise ValueError(
            f"{model_path}: a fused or fixed-scale graph ({', '.join(sorted(ops & FUSED))}); "
            "only plain dynamic-int8 exports can be read back"
        )
    values = _constants(graph)
    producer = {o: n for n in graph.node for o in n.output}
    by_name = {n.name: n for n in graph.node}
    out: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type == "MatMulInteger":
            activation, weight = node.input[0], node.input[1]
            zero = values[node.input[3]] if len(node.input) > 3 and node.input[3] else 0
            scales = by_name.get(node.name + "_scales_mul")
            if scales is None or scales.input[1] not in values:
                raise ValueError(f"{node.name}: no per-column weight scale found")
            w = (values[weight].astype(np.float32) - np.asarray(zero, np.float32)) * values[
                scales.input[1]
            ]
            quantize = producer[activation]
            source = producer.get(quantize.input[0])
            if source is not None and source.op_type == "Mul" and source.name.endswith("/smooth"):
                w = values[source.input[1]].astype(np.float32)[:, None] * w  # undo smoothing
            out[_state_key(node.name)] = np.ascontiguousarray(w.T)
        elif node.op_type == "DequantizeLinear":
            q = node.input[0]
            table = producer[q].input[0] if q in producer else q  # Gather of a quantized table
            if table.endswith("_quantized") and table in values:
                name = table[: -len("_quantized")]
                zero = values[node.input[2]].astype(np.float32) if len(node.input) > 2 else 0.0
                out[name] = (values[table].astype(np.float32) - zero) * values[node.input[1]]
    for name, value in values.items():
        if name.startswith(("encoder.", "head.")) and value.dtype == np.float32 and name not in out:
            if not name.endswith(("_scale", "_zero_point", "_quantized")):
                out[name] = value
    return out


def word_rows(model_dir: Path, base: str, table: np.ndarray, base_rows: np.ndarray) -> np.ndarray:
    """The base model's word-embedding table with the rows of the model's (trimmed) vocabulary
    put back at the base tokenizer's ids for the same tokens."""
    from tokenizers import Tokenizer

    ours = Tokenizer.from_file(str(model_dir / "tokenizer.json")).get_vocab()
    theirs = Tokenizer.from_file(str(Path(base) / "tokenizer.json")).get_vocab()
    rows = base_rows.copy()
    for token, i in ours.items():
        j = theirs.get(token)
        if j is not None and i < len(table):
            rows[j] = table[i]
    return rows


def checkpoint_from_graph(model_dir: Path, out: Path) -> dict[str, Any]:
    """Write a checkpoint of the model directory's graph into `out`; returns its metadata."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    training = config.get("training") or {}
    base = resolve_base_model(str(training.get("base_model") or config["base_model"]))
    weights = graph_weights(model_dir / "model.onnx")
    model = MultiLabelClassifier.from_base(base, len(config["labels"]))
    model.keep_lower(int(training.get("encoder_layers") or 0))
    state = model.state_dict()
    word = "encoder.embeddings.word_embeddings.weight"
    if word in weights and word in state:
        if training.get("freeze_embeddings", config.get("freeze_embeddings", False)):
            del weights[word]  # kept as pre-trained: the base model's rows are the exact ones
        else:
            weights[word] = word_rows(model_dir, base, weights[word], state[word].numpy())
    unknown = sorted(set(weights) - set(state))
    if unknown:
        raise ValueError(f"{model_dir}: weights the model has no place for: {unknown[:5]}")
    for name, value in weights.items():
        if tuple(state[name].shape) != value.shape:
            raise ValueError(f"{name}: {value.shape} in the graph, {tuple(state[name].shape)} here")
        state[name] = torch.from_numpy(value.copy())
    model.load_state_dict(state)
    from transformers import AutoTokenizer

    meta = {
        "config": {**training, "labels": config["labels"]},
        "from_graph": {
            "model_dir": str(model_dir),
            "name": config.get("name"),
            "version": config.get("version"),
            "weights_from_graph": len(weights),
            "weights_from_base": sorted(set(state) - set(weights)),
        },
    }
    model.save(out, AutoTokenizer.from_pretrained(base), meta)
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="a shipped model directory")
    parser.add_argument("out", type=Path, help="the checkpoint folder to write")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    meta = checkpoint_from_graph(args.model_dir, args.out)
    got = meta["from_graph"]
    log.info(
        "%s: %d weights from %s's graph (%s %s), from the base model: %s",
        args.out,
        got["weights_from_graph"],
        args.model_dir,
        got["name"],
        got["version"],
        ", ".join(got["weights_from_base"]) or "none",
    )


if __name__ == "__main__":
    main()
