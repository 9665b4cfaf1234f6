"""Activation smoothing keeps the fp32 function and lowers the int8 error on outlier inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from training.smoothing import smooth


def two_layer_model(path: Path, rng: np.random.Generator) -> None:
    """x[N,16] -> MatMul W1 -> Relu -> MatMul W2 -> y[N,4], with constant weights."""
    w1 = rng.normal(0, 0.3, (16, 32)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (32, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(0, 1, (n, 16)).astype(np.float32)
    x[:, 3] *= 60  # one outlier channel, as layer norms of transformers have
    return x


def run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(["y"], {"x": x})[0])


def test_smoothing_is_exact_in_fp32_and_helps_int8(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src, dst = tmp_path / "fp32.onnx", tmp_path / "smoothed.onnx"
    two_layer_model(src, rng)
    calibration = [{"x": inputs(rng, 64)} for _ in range(4)]
    changes = smooth(src, dst, calibration)

    by_tensor = {c.tensor: c for c in changes}
    assert set(by_tensor) == {"x", "r"}
    assert by_tensor["x"].alpha > 0  # the outlier input is smoothed
    assert by_tensor["x"].error_after < by_tensor["x"].error_before
    muls = [n for n in onnx.load(str(dst)).graph.node if n.op_type == "Mul"]
    assert len(muls) == sum(1 for c in changes if c.alpha)

    x = inputs(rng, 256)  # unseen inputs
    ref = run(src, x)
    np.testing.assert_allclose(run(dst, x), ref, rtol=1e-4, atol=1e-3)

    plain_q, smooth_q = tmp_path / "plain-int8.onnx", tmp_path / "smooth-int8.onnx"
    for a, b in ((src, plain_q), (dst, smooth_q)):
        quantize_dynamic(str(a), str(b), weight_type=QuantType.QInt8, per_channel=True)
    plain_err = np.abs(run(plain_q, x) - ref).mean()
    smooth_err = np.abs(run(smooth_q, x) - ref).mean()
    assert smooth_err < 0.7 * plain_err, (smooth_err, plain_err)
