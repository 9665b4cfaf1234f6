"""Exact rewrites of an exported graph that onnxruntime does not make itself.

- torch's scaled-dot-product attention exports each softmax behind a guard,
  `Where(IsNaN(p), 0, p)`, for rows whose every key is masked out. This encoder never has
  such a row: its mask adds the float32 minimum (finite) to the masked keys, and every
  sequence keeps at least its first token, so no softmax row is NaN and the guard returns `p`
  unchanged. On CPU it is not free: the `Where` walks the whole batch x heads x tokens x
  tokens tensor, about 6% of a call of e5-multi 1.7.0 (one thread, 16 x 40 tokens).
- The export computes each reshape's target at run time from the shapes of tensors (Shape,
  Gather, Unsqueeze, Concat), on every call; constant targets (0 = keep that dimension) do
  the same with none of it: about 0.5 ms less per call of e5-multi 1.7.0, one thread.

    python -m training.graph models/e5-multi   # rewrite a shipped model's graph in place

Rewriting a shipped model checks that its logits on the test split's messages stay
bit-identical before it replaces `model.onnx`, then records the new digest in `config.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

log = logging.getLogger(__name__)


def drop_softmax_nan_guards(model: onnx.ModelProto) -> int:
    """Remove every `Where(IsNaN(s), c, s)` whose `s` is a Softmax output: its consumers read
    `s` itself. Returns how many guards it removed."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    drop: set[int] = set()
    for node in graph.node:
        if node.op_type != "Where" or node.output[0] in outputs:
            continue
        cond, probs = producer.get(node.input[0]), producer.get(node.input[2])
        if (
            cond is not None
            and cond.op_type == "IsNaN"
            and cond.input[0] == node.input[2]
            and probs is not None
            and probs.op_type == "Softmax"
            and readers.get(cond.output[0]) == 1
        ):
            rename[node.output[0]] = node.input[2]
            drop.update((id(node), id(cond)))
    kept = [node for node in graph.node if id(node) not in drop]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    _prune(graph, kept)
    return len(rename)


def _prune(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """Set the graph's nodes to `nodes` less those whose outputs nothing reads (the guards'
    constant zeros), and drop the initializers nothing reads."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in nodes for name in node.input} | outputs
        live = [node for node in nodes if any(out in read for out in node.output)]
        if len(live) == len(nodes):
            break
        nodes = live
    del graph.node[:]
    graph.node.extend(nodes)
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


# (batch, tokens) of the probe runs that tell a reshape's target from its input's shape: no
# two sizes alike, so that no dimension of one can pass for another's by chance
PROBES = ((2, 7), (3, 13), (5, 4))


def probe_feeds(model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    """Inputs for PROBES: every graph input is (batch, tokens) of ones (ids and masks)."""
    kinds = {TensorProto.INT64: np.int64, TensorProto.INT32: np.int32}
    names = {i.name: kinds[i.type.tensor_type.elem_type] for i in model.graph.input}
    return [{n: np.ones(shape, t) for n, t in names.items()} for shape in PROBES]


def static_reshapes(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> int:
    """Give every Reshape whose target shape the graph computes at run time (from Shape,
    Gather, Unsqueeze and Concat operators: about fifty a layer, on every call) a constant
    target: 0 where the target copies the input's dimension at that place, the number where
    it is fixed, -1 for the one dimension left. The targets are read from runs on `feeds` of
    different sizes; a reshape whose target does not fit that form is left as it was.
    Returns how many reshapes it made static."""
    import onnxruntime as ort

    graph = model.graph
    fixed = {i.name for i in graph.initializer}
    fixed |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    dynamic = [
        n
        for n in graph.node
        if n.op_type == "Reshape"
        and n.input[1] not in fixed
        and not any(a.name == "allowzero" and a.i for a in n.attribute)
    ]
    if not dynamic:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    seen = {o.name for o in probe.graph.output}
    for name in sorted({x for n in dynamic for x in n.input[:2]} - seen):
        probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts, ["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    runs = [dict(zip(names, sess.run(None, feed), strict=True)) for feed in feeds]
    made = 0
    for node in dynamic:
        shapes = [r[node.input[0]].shape for r in runs]
        targets = [[int(v) for v in r[node.input[1]]] for r in runs]
        if len({len(t) for t in targets}) != 1:
            continue
        new = []
        for i in range(len(targets[0])):
            vals = [t[i] for t in targets]
            if all(v == 0 for v in vals) or all(
                i < len(s) and v == s[i] for v, s in zip(vals, shapes, strict=True)
            ):
                new.append(0)
            elif len(set(vals)) == 1 and vals[0] > 0:
                new.append(vals[0])
            else:
                new.append(-1)
        if new.count(-1) > 1 or any(
            _reshaped(s, new) != _reshaped(s, t) for s, t in zip(shapes, targets, strict=True)
        ):
            continue
        name = f"{node.name or node.output[0]}/static_shape"
        graph.initializer.append(onnx.numpy_helper.from_array(np.array(new, np.int64), name))
        node.input[1] = name
        made += 1
    _prune(graph, list(graph.node))
    return made


def _reshaped(shape: tuple[int, ...], target: list[int]) -> tuple[int, ...]:
    """The shape ONNX Reshape (allowzero 0) gives an input of `shape` for `target`."""
    dims = [shape[i] if v == 0 else v for i, v in enumerate(target)]
    return tuple(np.empty(shape, np.int8).reshape(dims).shape)


def streamline(src: Path, dst: Path) -> dict[str, int]:
    """Every rewrite above, from `src` to `dst`; returns how many of each it made."""
    model = onnx.load(str(src))
    made = {
        "softmax_nan_guards_removed": drop_softmax_nan_guards(model),
        "reshapes_made_static": static_reshapes(model, probe_feeds(model)),
    }
    onnx.save(model, str(dst))
    return made


def rewrite_model_dir(model_dir: Path, splits_dir: Path) -> dict[str, int]:
    """Streamline a model directory's `model.onnx` in place, after checking on the test split's
    messages (as the engine reads them) that the new graph's logits equal the old ones."""
    from service.artifact import ModelArtifact
    from service.classifier import Classifier, open_session
    from training.data import load_splits

    clf = Classifier(ModelArtifact.load(model_dir), threads=1)
    test = load_splits(splits_dir)["test"]
    seqs = [w for ws in clf.encode_items(list(test["text"])) for w in ws]
    with tempfile.TemporaryDirectory() as tmp:
        new = Path(tmp) / "model.onnx"
        made = streamline(clf.artifact.onnx_path, new)
        before = clf._run(clf.session, seqs)
        after = clf._run(open_session(str(new), 1), seqs)
        if not np.array_equal(before, after):
            diff = float(np.abs(before - after).max())
            raise ValueError(f"rewritten graph changes scores (largest difference {diff:.2e})")
        new.replace(model_dir / "model.onnx")
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["model_sha256"] = hashlib.sha256((model_dir / "model.onnx").read_bytes()).hexdigest()
    done = config.get("graph_rewrites") or {}
    config["graph_rewrites"] = {k: int(done.get(k, 0)) + v for k, v in made.items()}
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    metrics_path = model_dir / "metrics.json"
    if metrics_path.exists():  # the card says what was rewritten
        from training.card import write_card

        write_card(model_dir, config, json.loads(metrics_path.read_text(encoding="utf-8")))
    log.info("%s: %s; scores of %d windows unchanged", model_dir, made, len(seqs))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--splits", type=Path, default=Path("training/data/splits"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rewrite_model_dir(args.model_dir, args.splits)


if __name__ == "__main__":
    main()
