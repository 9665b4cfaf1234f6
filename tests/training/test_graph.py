"""training.graph: exact rewrites of exported graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from training.graph import PROBES, drop_softmax_nan_guards, static_reshapes

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


def test_the_shipped_model_runs_without_softmax_nan_guards_or_computed_reshapes() -> None:
    graph = onnx.load(str(SHIPPED), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("Softmax") == 12 and "IsNaN" not in ops
    constant = {i.name for i in graph.initializer}
    layers = [n for n in graph.node if n.op_type == "Reshape" and "/layer." in n.name]
    assert len(layers) == 60 and all(n.input[1] in constant for n in layers)


def reshaping_graph() -> onnx.ModelProto:
    """x (batch, tokens, 6) reshaped three ways with targets computed from its shape: to
    (batch, tokens, 2, 3), to (batch * tokens, 6), and to (tokens, batch, 6)."""
    f = TensorProto.FLOAT

    def const(name: str, value: list[int]) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(value, np.int64), name)

    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["b"], axis=0),
        helper.make_node("Gather", ["shape", "one"], ["t"], axis=0),
        helper.make_node("Unsqueeze", ["b", "axes"], ["b1"]),
        helper.make_node("Unsqueeze", ["t", "axes"], ["t1"]),
        helper.make_node("Concat", ["b1", "t1", "two_three"], ["heads"], axis=0),
        helper.make_node("Reshape", ["x", "heads"], ["split"]),
        helper.make_node("Mul", ["b1", "t1"], ["bt"]),
        helper.make_node("Concat", ["bt", "six"], ["rows"], axis=0),
        helper.make_node("Reshape", ["x", "rows"], ["flat"]),
        helper.make_node("Concat", ["t1", "b1", "six"], ["swapped"], axis=0),
        helper.make_node("Reshape", ["x", "swapped"], ["odd"]),
    ]
    graph = helper.make_graph(
        nodes,
        "reshaping",
        [helper.make_tensor_value_info("x", f, ["batch", "tokens", 6])],
        [helper.make_tensor_value_info(n, f, None) for n in ("split", "flat", "odd")],
        [
            const("zero", 0),
            const("one", 1),
            const("axes", [0]),
            const("two_three", [2, 3]),
            const("six", [6]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_reshape_targets_computed_from_shapes_become_constants() -> None:
    model = reshaping_graph()
    feeds = [{"x": np.ones((b, t, 6), np.float32)} for b, t in PROBES]
    x = np.random.default_rng(1).normal(size=(4, 9, 6)).astype(np.float32)  # not a probe size
    before = run(model, {"x": x})

    assert static_reshapes(model, feeds) == 2  # the third has two dimensions to work out
    targets = {i.name: numpy_helper.to_array(i).tolist() for i in model.graph.initializer}
    reshapes = {n.output[0]: n.input[1] for n in model.graph.node if n.op_type == "Reshape"}
    assert targets[reshapes["split"]] == [0, 0, 2, 3]
    assert targets[reshapes["flat"]] == [-1, 6]
    assert reshapes["odd"] == "swapped"  # left computed
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Shape") == 1 and ops.count("Mul") == 0  # what only the first two read
    for got, want in zip(run(model, {"x": x}), before, strict=True):
        np.testing.assert_array_equal(got, want)
