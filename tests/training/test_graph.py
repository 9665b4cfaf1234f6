"""training.graph: exact rewrites of exported graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from training.graph import drop_softmax_nan_guards

SHIPPED = Path(__file__).resolve().parents[2] / "models/e5-multi/model.onnx"


def guarded_graph() -> onnx.ModelProto:
    """A softmax behind torch's NaN guard, and a NaN guard on a plain input (not a softmax)."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Softmax", ["x"], ["p"], axis=-1),
        helper.make_node("IsNaN", ["p"], ["p_nan"]),
        helper.make_node("Constant", [], ["p_zero"], value_float=0.0),
        helper.make_node("Where", ["p_nan", "p_zero", "p"], ["p_safe"]),
        helper.make_node("MatMul", ["p_safe", "v"], ["out"]),
        helper.make_node("IsNaN", ["x"], ["x_nan"]),
        helper.make_node("Where", ["x_nan", "zero", "x"], ["x_safe"]),
        helper.make_node("Identity", ["x_safe"], ["out2"]),
    ]
    graph = helper.make_graph(
        nodes,
        "guarded",
        [
            helper.make_tensor_value_info("x", f, [2, 4]),
            helper.make_tensor_value_info("v", f, [4, 3]),
        ],
        [
            helper.make_tensor_value_info("out", f, [2, 3]),
            helper.make_tensor_value_info("out2", f, [2, 4]),
        ],
        [numpy_helper.from_array(np.zeros((), np.float32), "zero")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feed)]


def test_the_softmax_nan_guard_goes_and_every_output_stays_the_same() -> None:
    model = guarded_graph()
    rng = np.random.default_rng(0)
    feed = {
        "x": rng.normal(size=(2, 4)).astype(np.float32),
        "v": rng.normal(size=(4, 3)).astype(np.float32),
    }
    feed["x"][1, 2] = np.nan  # the plain input's guard must still act on it
    before = run(model, feed)

    assert drop_softmax_nan_guards(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("IsNaN") == 1 and ops.count("Where") == 1  # only the plain input's guard
    assert "Constant" not in ops  # the removed guard's zero goes with it
    matmul = next(n for n in model.graph.node if n.op_type == "MatMul")
    assert matmul.input[0] == "p"
    assert [i.name for i in model.graph.initializer] == ["zero"]  # still read by the kept guard
    after = run(model, feed)
    np.testing.assert_array_equal(after[1], before[1])
    assert after[1][1, 2] == 0.0
    # the softmax row with a NaN is the one case the guard existed for; the others are equal
    np.testing.assert_array_equal(after[0][0], before[0][0])


def test_the_shipped_model_runs_without_softmax_nan_guards() -> None:
    graph = onnx.load(str(SHIPPED), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("Softmax") == 12 and "IsNaN" not in ops
