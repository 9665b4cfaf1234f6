"""Fixed int8 activation scales: the same answer for a window alone or beside others.

onnxruntime's dynamic int8 quantizes each MatMul input with one scale per model call
(`DynamicQuantizeLinear`: the range of every value in the call), so a window's score depends a
little on the windows it shares a call with: with e5-multi 1.7.0, against each window scored
alone, 0.36-0.84% of window decisions moved when the same windows were scored in groups of 10
or all together (README, "Batch-mates"). Here each `DynamicQuantizeLinear` becomes a
`QuantizeLinear` with a constant scale and zero point, read from the range of its input over
calibration windows from the validation splits, each run alone (the smallest range that holds
every value seen; a value outside it is clipped to the range's end). The weights stay as they
are. Every window then quantizes the same way whatever else is in the call, and the call no
longer scans its inputs for their range.

    python -m training.static_int8 --config training/configs/e5-multi.json

rewrites the shipped model directory of a config in place: calibrates, fixes the scales, fits
the temperatures and the thresholds again on the selection split from the new scores (the
export's rule), then scores the model again (`training.remeasure`). `make export` does the
same to a new model when its config sets `static_activations`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)

CALIBRATION_ITEMS = 256  # from each validation split


def dynamic_inputs(model: onnx.ModelProto) -> list[str]:
    """The tensor each `DynamicQuantizeLinear` of the graph quantizes, in graph order."""
    return [n.input[0] for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"]


def activation_ranges(
    model: onnx.ModelProto, sequences: Sequence[Sequence[int]]
) -> dict[str, tuple[float, float]]:
    """(lowest, highest) value of each dynamically quantized tensor over `sequences` (token
    ids), each run alone (so that padding and other windows never widen a range)."""
    names = dynamic_inputs(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(
        probe.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    lo = np.full(len(names), np.inf)
    hi = np.full(len(names), -np.inf)
    for seq in sequences:
        ids = np.asarray([seq], np.int64)
        values = session.run(names, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        lo = np.minimum(lo, [float(v.min()) for v in values])
        hi = np.maximum(hi, [float(v.max()) for v in values])
    return {n: (float(a), float(b)) for n, a, b in zip(names, lo, hi, strict=True)}


def fix_scales(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]]) -> int:
    """Replace each `DynamicQuantizeLinear` whose input has a range by a `QuantizeLinear` with
    the uint8 scale and zero point of that range (widened to hold 0, as onnxruntime's dynamic
    quantization does); its scale and zero point outputs become constants of the same names.
    Returns how many it replaced."""
    graph = model.graph
    made = 0
    for node in list(graph.node):
        if node.op_type != "DynamicQuantizeLinear" or node.input[0] not in ranges:
            continue
        lo, hi = ranges[node.input[0]]
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = np.float32((hi - lo) / 255.0 if hi > lo else 1.0)
        zero = np.uint8(np.clip(np.round(-lo / scale), 0, 255))
        quantized, scale_name, zero_name = node.output
        graph.initializer.append(numpy_helper.from_array(np.array(scale, np.float32), scale_name))
        graph.initializer.append(numpy_helper.from_array(np.array(zero, np.uint8), zero_name))
        fixed = helper.make_node(
            "QuantizeLinear", [node.input[0], scale_name, zero_name], [quantized], name=node.name
        )
        position = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(position, fixed)
        made += 1
    return made


def fuse_matmuls(model: onnx.ModelProto) -> int:
    """Each `MatMulInteger -> Cast -> Mul(a_scale * b_scale)` (and the bias `Add` right after
    it, where there is one) as one onnxruntime `MatMulIntegerToFloat`, the kernel its own
    fusion makes of a dynamic graph: with constant scales its constant folding multiplies
    the two scales first, and the fusion no longer recognises the pattern (the graph ran with
    73 unfused matmuls). Returns how many it fused."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    constants = {i.name: i for i in graph.initializer}
    drop: set[int] = set()
    fused: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []  # (anchor, new node)
    for node in graph.node:
        if node.op_type != "MatMulInteger" or len(readers.get(node.output[0], [])) != 1:
            continue
        cast = readers[node.output[0]][0]
        if cast.op_type != "Cast" or len(readers.get(cast.output[0], [])) != 1:
            continue
        mul = readers[cast.output[0]][0]
        scales = producer.get(mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0])
        if mul.op_type != "Mul" or scales is None or scales.op_type != "Mul":
            continue
        a_scale, b_scale = scales.input
        inputs = [node.input[0], node.input[1], a_scale, b_scale, node.input[2], node.input[3]]
        out, gone = mul.output[0], [node, cast, mul]
        after = readers.get(out, [])
        if len(after) == 1 and after[0].op_type == "Add":
            bias = [x for x in after[0].input if x != out]
            if len(bias) == 1 and bias[0] in constants and len(constants[bias[0]].dims) == 1:
                inputs.append(bias[0])
                out = after[0].output[0]
                gone.append(after[0])
        new = helper.make_node(
            "MatMulIntegerToFloat", inputs, [out], name=node.name, domain="com.microsoft"
        )
        drop.update(id(n) for n in gone)
        if len(readers.get(scales.output[0], [])) == 1:
            drop.add(id(scales))
        fused.append((node, new))
    if not fused:
        return 0
    replace = {id(anchor): new for anchor, new in fused}
    nodes = [replace.get(id(n), n) for n in graph.node if id(n) not in drop or id(n) in replace]
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(fused)


def calibration_windows(model_dir: Path, splits: dict[str, Any], cfg: Any) -> list[list[int]]:
    """Windows of up to CALIBRATION_ITEMS items of each validation split (the selection split
    and the authored one), each read after its turns as the model directory reads them."""
    from service.artifact import ModelArtifact
    from service.classifier import Classifier
    from training.train import contexts_of, select

    clf = Classifier(ModelArtifact.load(model_dir), threads=1)
    out: list[list[int]] = []
    for name in dict.fromkeys((cfg.select_on, "validation")):
        if name not in splits:
            continue
        ds = select(splits[name], cfg.languages).shuffle(seed=cfg.seed)
        ds = ds.select(range(min(CALIBRATION_ITEMS, len(ds))))
        encoded = clf.encode_items(list(ds["text"]), contexts_of(ds, cfg))
        out += [w for ws in encoded for w in ws]
    return out


def fix_model_file(path: Path, windows: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Calibrate and fix the activation scales of the graph at `path`, in place; returns what
    the config records."""
    model = onnx.load(str(path))
    made = fix_scales(model, activation_ranges(model, windows))
    matmuls = fuse_matmuls(model)
    onnx.save(model, str(path))
    return {
        "activation_scales": "static",
        "calibration_windows": len(windows),
        "fixed": made,
        "matmuls_fused": matmuls,
    }


def rewrite_model_dir(cfg: Any) -> dict[str, Any]:
    """The shipped model directory of `cfg` with fixed activation scales, new temperatures and
    thresholds from the selection split, and every figure scored again."""
    from service.artifact import ModelArtifact
    from service.classifier import Classifier
    from training.config import resolve
    from training.data import load_splits
    from training.export import fit_temperatures
    from training.metrics import choose_thresholds, multi_hot
    from training.remeasure import remeasure
    from training.report import model_scores
    from training.train import contexts_of, select

    out = cfg.model_dir
    shipped = json.loads((out / "config.json").read_text(encoding="utf-8"))
    if shipped.get("version") == cfg.version:
        raise ValueError(
            f"{out} is already version {cfg.version}: the rewritten model scores differently, "
            "so give it a new version in the config first"
        )
    splits = load_splits(resolve(cfg.splits_dir))
    windows = calibration_windows(out, splits, cfg)
    # what the fixed scales change: window decisions on the test split, each window alone,
    # against the dynamic graph (reported, never used to choose anything)
    before = Classifier(ModelArtifact.load(out), threads=1)
    test = select(splits["test"], cfg.languages)
    probe = [
        w for ws in before.encode_items(list(test["text"]), contexts_of(test, cfg)) for w in ws
    ]
    p_before = np.concatenate([before.run([w]) for w in probe]) >= before.thresholds
    fixed = fix_model_file(out / "model.onnx", windows)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["version"] = cfg.version
    config["quantization"] = (
        "int8 (onnxruntime, per-channel weights), activations smoothed, activation scales fixed "
        "from validation windows"
    )
    config["model_sha256"] = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    after = Classifier(ModelArtifact.load(out), threads=1)
    p_after = np.concatenate([after.run([w]) for w in probe]) >= before.thresholds
    fixed["test_window_decisions_as_dynamic"] = float((p_before == p_after).all(axis=1).mean())
    config["static_activations"] = fixed
    config.pop("calibration", None)  # the temperatures are fitted again on the new scores
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    metrics["model"] = f"{cfg.name} {cfg.version}"
    metrics_path.write_text(json.dumps(metrics, indent=2))
    pick = select(splits[cfg.select_on], cfg.languages)
    texts, contexts = list(pick["text"]), contexts_of(pick, cfg)
    y = multi_hot(list(pick["labels"]), cfg.labels)
    p = model_scores(out, texts, contexts, cfg.labels)
    if cfg.calibrate:
        temps = fit_temperatures(y, p, cfg.labels)
        config["calibration"] = {"temperature": temps, "fitted_on": cfg.select_on}
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
        p = model_scores(out, texts, contexts, cfg.labels)
    config["thresholds"] = choose_thresholds(y, p, cfg.labels, cfg.min_recall, cfg.max_false_flags)
    config["thresholds_chosen_on"] = f"{cfg.select_on}, with the shipped int8 model"
    config["training"] = {**config.get("training", {}), **cfg.to_dict()}
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    log.info("%s: %s; thresholds %s", out, fixed, config["thresholds"])
    remeasure(cfg)
    return fixed


def main() -> None:
    from training.config import cli

    cli(rewrite_model_dir, "Fix the int8 activation scales of a shipped model; score it again.")


if __name__ == "__main__":
    main()
