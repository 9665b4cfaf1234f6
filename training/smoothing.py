"""Activation smoothing before int8 dynamic quantization (SmoothQuant-style, per MatMul input).

onnxruntime's dynamic quantization reads each MatMul input as uint8 with one scale per tensor,
so a few channels with large activations (the known outliers of transformer layer norms and
GELU outputs) take most of the 256 levels and the rest lose precision. For every MatMul whose
weight is a constant (and every fused Attention node, whose packed query/key/value weight is
one), this step divides the input's channels by a per-channel factor `s` (a new
`Mul` node) and multiplies the weight's rows by the same `s`: in fp32 the graph computes exactly
the same thing, but the int8 version loses far less, because per-channel weight quantization
absorbs the range the activations gave up.

`s_j = amax_j ** alpha / wmax_j ** (1 - alpha)` with `amax` the largest activation of channel j
on calibration inputs and `wmax` the largest weight of row j. `alpha` is chosen per input among
a few values by simulating the int8 arithmetic on the calibration inputs and keeping the one
with the smallest output error (0 = leave the input as it is). Calibration uses the validation
split, never the test split.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

ALPHAS = (0.0, 0.25, 0.4, 0.5, 0.6, 0.75)
# Nodes that multiply their first input by a constant weight (input 1, rows = input channels):
# MatMul, and onnxruntime's fused Attention (its packed query/key/value weight).
SMOOTHABLE = ("MatMul", "Attention")
Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Smoothed:
    """What was done to one MatMul input: its name, the weights it feeds and the chosen alpha."""

    tensor: str
    matmuls: int
    alpha: float
    error_before: float
    error_after: float


def fake_int8_activation(x: Array) -> Array:
    """uint8, asymmetric, one scale per tensor: what DynamicQuantizeLinear does."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255 or 1.0
    zero = np.round(-lo / scale)
    out: Array = ((np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)
    return out


def fake_int8_weight(w: Array) -> Array:
    """int8, symmetric, one scale per output column (per-channel weight quantization)."""
    scale = np.abs(w).max(axis=0, keepdims=True) / 127
    scale[scale == 0] = 1.0
    out: Array = (np.round(w / scale) * scale).astype(np.float32)
    return out


def factors(amax: Array, wmax: Array, alpha: float) -> Array:
    if alpha == 0:
        return np.ones_like(amax)
    s = np.maximum(amax, 1e-5) ** alpha / np.maximum(wmax, 1e-5) ** (1 - alpha)
    out: Array = np.clip(s, 1e-3, 1e3).astype(np.float32)
    return out


def int8_error(acts: Sequence[Array], weights: Sequence[Array], s: Array) -> float:
    """Mean relative error of the int8 product against fp32, after smoothing by `s`."""
    errs = []
    for w in weights:
        qw = fake_int8_weight(w * s[:, None])
        for a in acts:
            ref = a @ w
            got = fake_int8_activation(a / s) @ qw
            errs.append(float(np.linalg.norm(got - ref) / (np.linalg.norm(ref) or 1.0)))
    return float(np.mean(errs))


def smooth(
    src: Path,
    dst: Path,
    calibration: Iterable[dict[str, npt.NDArray[Any]]],
    alphas: Sequence[float] = ALPHAS,
) -> list[Smoothed]:
    """Write `dst`: `src` with the int8-friendly smoothing above. Returns what was changed."""
    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        w = inits.get(node.input[1]) if node.op_type in SMOOTHABLE else None
        if w is not None and len(w.dims) == 2:
            groups.setdefault(node.input[0], []).append(node)
    if not groups:
        onnx.save(model, str(dst))
        return []

    probe = onnx.load(str(src))
    for name in groups:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = list(groups)
    acts: dict[str, list[Array]] = {k: [] for k in names}
    for feed in calibration:
        for k, out in zip(names, sess.run(names, feed), strict=True):
            acts[k].append(np.asarray(out, np.float32).reshape(-1, out.shape[-1]))
    if not acts[names[0]]:
        raise ValueError("smoothing needs at least one calibration batch")

    done: list[Smoothed] = []
    for k, nodes in groups.items():
        weights = [numpy_helper.to_array(inits[n.input[1]]).astype(np.float32) for n in nodes]
        amax = np.max([np.abs(a).max(axis=0) for a in acts[k]], axis=0)
        wmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        errors = {a: int8_error(acts[k], weights, factors(amax, wmax, a)) for a in alphas}
        alpha = min(errors, key=lambda a: errors[a])
        done.append(Smoothed(k, len(nodes), alpha, errors.get(0.0, float("nan")), errors[alpha]))
        if alpha == 0:
            continue
        s = factors(amax, wmax, alpha)
        for node, w in zip(nodes, weights, strict=True):
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(w * s[:, None], node.input[1]))
        inv, out = f"{k}/smooth_inv", f"{k}/smoothed"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        first = min(list(model.graph.node).index(n) for n in nodes)
        model.graph.node.insert(first, helper.make_node("Mul", [k, inv], [out], name=f"{k}/smooth"))
        for node in nodes:
            node.input[0] = out
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    changed = [d for d in done if d.alpha]
    log.info(
        "smoothed %d of %d MatMul inputs; simulated int8 error %.4f -> %.4f",
        len(changed),
        len(done),
        float(np.mean([d.error_before for d in done])),
        float(np.mean([d.error_after for d in done])),
    )
    return done
