"""The whole road on a tiny random model: data -> train -> evaluate -> export -> serve -> POST."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from datasets import Dataset
from fastapi.testclient import TestClient

from service.app import create_app, load_classifier
from service.artifact import ModelArtifact
from service.settings import Settings
from training.config import TrainConfig, resolve_base_model

TINY = [
    ("my doctor says my blood pressure is too high", ["health"]),
    ("i broke my wrist and need a cast", ["health"]),
    ("we go to church every sunday to pray", ["religion"]),
    ("the imam led friday prayers at the mosque", ["religion"]),
    ("who will win the presidential election", ["politics"]),
    ("the senate passed the new tax bill", ["politics"]),
    ("best pizza place near the station", []),
    ("how do i fix a flat bike tyre", []),
    ("recommend a thriller novel for the beach", []),
    ("can fasting in ramadan affect my insulin dose", ["health", "religion"]),
]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised BERT of the same architecture family, with a real tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(resolve_base_model("pkg:minilm"))
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    out = tmp_path_factory.mktemp("tiny-base")
    BertModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_splits(folder: Path) -> None:
    folder.mkdir(parents=True)
    for split in ("train", "validation", "test", "real_validation", "real_test", "real_check"):
        rows = [
            {
                "id": f"{split}-{i}",
                "group": f"{split}-{i // 2}",  # conversations of two messages
                "variety": "chat" if split.startswith("real") else "authored",
                "lang": "en",
                "source": "chitchat" if split.startswith("real") or i % 2 else "authored",
                "kind": "test",
                "text": t,
                "context": "i was told i have diabetes" if i % 3 == 0 else "",
                "history": [["user", "i was told i have diabetes"]] if i % 3 == 0 else [],
                "labels": labs,
            }
            for i, (t, labs) in enumerate(TINY)
        ]
        Dataset.from_list(rows).to_parquet(str(folder / f"{split}.parquet"))
    (folder / "manifest.json").write_text(json.dumps({"inputs_hash": "tiny"}))


def tiny_run(tiny_base: Path, tmp_path: Path, **settings: Any) -> dict[str, Any]:
    """The config of a short run of the tiny model on freshly written splits (no runs_dir)."""
    write_splits(tmp_path / "splits")
    return {
        "name": "tiny",
        "base_model": str(tiny_base),
        "splits_dir": str(tmp_path / "splits"),
        "models_dir": str(tmp_path / "models"),
        "max_length": 32,
        "batch_size": 4,
        "select_on": "real_validation",
        **settings,
    }


def test_tiny_model_whole_road(tiny_base: Path, tmp_path: Path) -> None:
    from training.evaluate import evaluate
    from training.export import export
    from training.train import train

    write_splits(tmp_path / "splits")
    cfg = TrainConfig(
        name="tiny",
        version="0.0.1",
        base_model=str(tiny_base),
        splits_dir=str(tmp_path / "splits"),
        runs_dir=str(tmp_path / "runs"),
        models_dir=str(tmp_path / "models"),
        max_length=32,
        batch_size=4,
        epochs=2,
        max_steps=4,
        min_int8_agreement=0.0,
        select_on="real_validation",
        real_repeat=2,
        context_chars=120,
        context_turns=3,
        calibrate=True,
    )
    summary = train(cfg)
    assert summary["steps"] == 4
    assert (tmp_path / "runs/tiny/checkpoint/checkpoint.json").exists()
    evaluation = evaluate(cfg)
    assert set(evaluation["thresholds"]) == {"health", "religion", "politics"}
    metrics = export(cfg)  # raises if fp32 ONNX differs from PyTorch by more than 1e-3
    assert metrics["export"]["max_logit_diff_fp32_vs_pytorch"] <= 1e-3
    # each layer's softmax NaN guard (torch's attention export) is gone and every reshape has a
    # constant target; the check against PyTorch above held
    config = json.loads((tmp_path / "models/tiny/config.json").read_text())
    made = {"softmax_nan_guards_removed": 2, "reshapes_made_static": 10}
    assert config["graph_rewrites"] == made
    graph = onnx.load(str(tmp_path / "models/tiny/model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert "IsNaN" not in ops and ops.count("Softmax") == 2
    constant = {i.name for i in graph.initializer}
    layers = [n for n in graph.node if n.op_type == "Reshape" and "/layer." in n.name]
    assert len(layers) == 10 and all(n.input[1] in constant for n in layers)
    card = (tmp_path / "models/tiny/README.md").read_text()
    assert "Graph rewritten exactly (`training.graph`, same scores): softmax nan guards " in card
    assert "reshapes made static: 10" in card
    # `python -m training.graph` on a model directory: nothing left to rewrite; the digest the
    # loader checks is recorded again and the count of what was rewritten stays
    from training.graph import rewrite_model_dir

    assert rewrite_model_dir(tmp_path / "models/tiny", tmp_path / "splits") == {
        "softmax_nan_guards_removed": 0,
        "reshapes_made_static": 0,
    }
    config = json.loads((tmp_path / "models/tiny/config.json").read_text())
    assert config["graph_rewrites"] == made
    ModelArtifact.load(tmp_path / "models/tiny")  # raises if the digest does not match
    # chosen on the real validation split; judged on the real test split, in the card too
    assert evaluation["thresholds_chosen_on"] == "real_validation"
    best = summary["best"]
    assert best["select_on"] == "real_validation" and {"real_validation", "validation"} <= set(best)
    assert metrics["real_test"]["n"] == len(TINY)
    assert set(metrics["real_test"]["f1"]) == {"health", "religion", "politics"}
    # real chat also judged whole, conversation by conversation (two messages each)
    assert metrics["real_test"]["transcripts"]["n"] == (len(TINY) + 1) // 2
    lo, hi = metrics["real_test"]["macro_f1_interval"]
    assert lo <= metrics["real_test"]["macro_f1"] <= hi
    assert len(metrics["real_test"]["per_language"]["en"]["macro_f1_interval"]) == 2
    # the real check is reported beside the real test, per language and label with positives
    assert metrics["real_check"]["n"] == len(TINY)
    assert set(metrics["real_check"]["per_language"]) == {"en"}
    health = metrics["real_check"]["labels"]["health"]
    assert health["positives"] == sum("health" in labs for _, labs in TINY)
    assert 0.0 <= health["false_flag_rate"] <= 1.0
    card = (tmp_path / "models/tiny/README.md").read_text()
    assert "Real-text test" in card and "real test chat, whole conversations" in card
    assert "### Real check" in card and "| language en |" in card
    # the figures say which runtime they hold for, as the engine runs the graph
    assert metrics["runtime"]["fusions_off"] == ["SkipLayerNormFusion"]
    assert "fusions turned off: `SkipLayerNormFusion`" in card

    # Scored again (training.remeasure), the figures come from the model, not the old file:
    # spoilt ones are rewritten to what the export measured, with the same runtime.
    from training.remeasure import remeasure

    model_dir = tmp_path / "models/tiny"
    spoilt = json.loads((model_dir / "metrics.json").read_text())
    spoilt["test"]["macro_f1"] = spoilt["real_test"]["macro_f1"] = -1.0
    spoilt["real_test"]["per_language"] = {}
    del spoilt["real_check"]  # a model exported before the data had the check gains it
    (model_dir / "metrics.json").write_text(json.dumps(spoilt))
    shipped = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**shipped, "supported_languages": ["xx"]}))
    again = remeasure(cfg)
    assert again["test"]["macro_f1"] == metrics["test"]["macro_f1"]
    assert again["real_test"] == metrics["real_test"]
    assert again["real_check"] == metrics["real_check"]
    assert again["export"] == metrics["export"]
    assert json.loads((model_dir / "config.json").read_text()) == shipped

    model_dir = tmp_path / "models/tiny"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["data_hash"] == "tiny" and config["labels"] == ["health", "religion", "politics"]
    # reads the turns before a message; one temperature per label, fitted on real validation
    assert config["context_turns"] == 3
    temps = config["calibration"]["temperature"]
    assert set(temps) == {"health", "religion", "politics"} and all(t > 0 for t in temps.values())
    assert config["calibration"]["fitted_on"] == "real_validation"
    for f in ("model.onnx", "tokenizer.json", "metrics.json", "README.md"):
        assert (model_dir / f).exists(), f

    with TestClient(create_app(Settings(model_dir=model_dir, auth_required=False))) as client:
        r = client.post(
            "/v1/classify",
            json={
                "messages": [
                    {"role": "user", "content": "i have a headache"},
                    {"role": "assistant", "content": "sorry to hear that"},
                ]
            },
        )
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model"] == {"name": "tiny", "version": "0.0.1"}
        assert len(out["messages"]) == 2
        assert set(out["transcript"]["flags"]) == {"health", "religion", "politics"}


def test_stop_step_cuts_a_run_short_on_the_whole_runs_schedule(
    tiny_base: Path, tmp_path: Path
) -> None:
    """`stop_step` stops where a shipped run was cut short, on the learning-rate schedule of the
    whole run (so it can be made again); `max_steps` shortens the schedule itself."""
    from training.train import train

    base = tiny_run(tiny_base, tmp_path, epochs=2, warmup_ratio=0.0)
    cut = train(TrainConfig(**base, runs_dir=str(tmp_path / "a"), stop_step=2))
    capped = train(TrainConfig(**base, runs_dir=str(tmp_path / "b"), max_steps=2))
    assert cut["steps"] == capped["steps"] == 2
    assert capped["last_learning_rate"] == 0.0  # the schedule ended at step 2
    # the whole run has more steps: at step 2 its rate has only begun to fall
    assert 0.0 < cut["last_learning_rate"] < TrainConfig(**base).learning_rate


def test_a_second_stage_starts_from_a_finished_runs_checkpoint(
    tiny_base: Path, tmp_path: Path
) -> None:
    """`init_from` starts a run from another run's checkpoint (encoder and head), not from the
    base model and a new head; a checkpoint with another number of labels is refused."""
    import torch

    from training.model import MultiLabelClassifier
    from training.train import train

    base = tiny_run(tiny_base, tmp_path, epochs=1, learning_rate=1e-3, warmup_ratio=0.0)
    train(TrainConfig(**base, runs_dir=str(tmp_path / "first")))
    first = tmp_path / "first/tiny/checkpoint"
    start, _, _ = MultiLabelClassifier.load(first)
    # no step at all (learning rates 0): the second stage's checkpoint is the first's weights
    still = {"learning_rate": 0.0, "head_learning_rate": 0.0, "dropout": 0.0}
    train(TrainConfig(**{**base, **still}, runs_dir=str(tmp_path / "s"), init_from=str(first)))
    kept, _, meta = MultiLabelClassifier.load(tmp_path / "s/tiny/checkpoint")
    for (name, a), b in zip(start.state_dict().items(), kept.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert meta["config"]["init_from"] == str(first)  # type: ignore[index]
    # from the base model instead, the head is new: not the first run's
    fresh = train(TrainConfig(**{**base, **still}, runs_dir=str(tmp_path / "f")))
    assert fresh["steps"] > 0
    other, _, _ = MultiLabelClassifier.load(tmp_path / "f/tiny/checkpoint")
    assert not torch.equal(other.head.weight, start.head.weight)
    with pytest.raises(ValueError, match="its head has 3 labels"):
        train(
            TrainConfig(
                **base, runs_dir=str(tmp_path / "x"), init_from=str(first), labels=("health",)
            )
        )


def test_frozen_lower_layers_keep_their_pretrained_weights(tiny_base: Path, tmp_path: Path) -> None:
    """`freeze_layers` keeps the embeddings and the lowest layers as the base model has them
    while the layers above learn; more layers than the encoder has is refused."""
    import torch
    from transformers import AutoModel

    from training.model import MultiLabelClassifier
    from training.train import train

    base = tiny_run(tiny_base, tmp_path, epochs=1, learning_rate=1e-2, warmup_ratio=0.0)
    train(TrainConfig(**base, runs_dir=str(tmp_path / "r"), freeze_layers=1))
    trained, _, _ = MultiLabelClassifier.load(tmp_path / "r/tiny/checkpoint")
    start = AutoModel.from_pretrained(tiny_base, add_pooling_layer=False).state_dict()
    after = trained.encoder.state_dict()
    frozen = [n for n in start if n.startswith(("embeddings.", "encoder.layer.0."))]
    learned = [n for n in start if n.startswith("encoder.layer.1.")]
    assert frozen and learned
    for name in frozen:
        assert torch.equal(start[name], after[name]), name
    assert any(not torch.equal(start[n], after[n]) for n in learned)
    with pytest.raises(ValueError, match="the encoder has 2 layers"):
        train(TrainConfig(**base, runs_dir=str(tmp_path / "x"), freeze_layers=3))


def test_a_run_on_fewer_encoder_layers_keeps_the_lowest_and_says_so(
    tiny_base: Path, tmp_path: Path
) -> None:
    """`encoder_layers` drops the layers above the first N of the encoder a run starts from:
    the checkpoint has N layers, its config says N, it loads back as such and starts from the
    lower layers' weights; more layers than the encoder has is refused."""
    import torch

    from training.model import MultiLabelClassifier
    from training.train import train

    base = tiny_run(tiny_base, tmp_path, epochs=1, learning_rate=1e-3, warmup_ratio=0.0)
    train(TrainConfig(**base, runs_dir=str(tmp_path / "first")))
    first = tmp_path / "first/tiny/checkpoint"
    start, _, _ = MultiLabelClassifier.load(first)
    assert len(start.encoder.encoder.layer) == 2
    still = {"learning_rate": 0.0, "head_learning_rate": 0.0, "dropout": 0.0}
    run = {**base, **still, "init_from": str(first), "encoder_layers": 1}
    train(TrainConfig(**run, runs_dir=str(tmp_path / "s")))
    kept, _, _ = MultiLabelClassifier.load(tmp_path / "s/tiny/checkpoint")
    assert len(kept.encoder.encoder.layer) == 1
    assert kept.encoder.config.num_hidden_layers == 1
    after = kept.state_dict()
    assert not any(".layer.1." in n for n in after)
    for name, value in after.items():  # what is left is the first run's, untouched
        assert torch.equal(value, start.state_dict()[name]), name
    ids = torch.tensor([[0, 5, 6, 2]])
    assert not torch.equal(kept(ids, torch.ones_like(ids)), start(ids, torch.ones_like(ids)))
    with pytest.raises(ValueError, match="the encoder has 2 layers"):
        train(TrainConfig(**{**run, "encoder_layers": 3}, runs_dir=str(tmp_path / "x")))


def test_a_cut_run_resumed_goes_on_step_for_step_as_if_it_had_not_stopped(
    tiny_base: Path, tmp_path: Path
) -> None:
    """`--resume` takes a run cut at step 5 (between evaluations) on to step 8 with the same
    weights, optimizer, best score and random draws as a run that went to step 8 at once, and
    on to the end with the same result; a changed config or a stop_step behind the run is
    refused, and a run that ends leaves nothing to resume."""
    import torch

    from training.train import RESUME_FILE, train

    # evaluations every 2 steps and at each epoch's end (3 steps); no early stopping on the way
    # (the staleness count it reads is compared below); context_augment: the epochs' draws matter
    schedule = {"epochs": 5, "eval_every": 2, "patience": 100}
    context = {"context_chars": 120, "context_turns": 2, "context_augment": 0.5}
    base = tiny_run(tiny_base, tmp_path, **schedule, **context)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    whole = train(TrainConfig(**base, runs_dir=a, stop_step=8))
    assert whole["resumed_from"] == 0
    assert train(TrainConfig(**base, runs_dir=b, stop_step=5))["steps"] == 5
    with pytest.raises(ValueError, match="learning_rate"):
        train(TrainConfig(**{**base, "learning_rate": 1e-3}, runs_dir=b), resume=True)
    with pytest.raises(ValueError, match="stop_step 4"):
        train(TrainConfig(**base, runs_dir=b, stop_step=4), resume=True)
    resumed = train(TrainConfig(**base, runs_dir=b, stop_step=8), resume=True)
    assert resumed["resumed_from"] == 5 and resumed["steps"] == whole["steps"] == 8
    assert resumed["best"] == whole["best"]
    assert resumed["last_learning_rate"] == whole["last_learning_rate"]
    sa = torch.load(tmp_path / "a/tiny" / RESUME_FILE, weights_only=False)
    sb = torch.load(tmp_path / "b/tiny" / RESUME_FILE, weights_only=False)
    assert sa["at"] == sb["at"] and sa["at"][0] >= 1  # past an epoch boundary since the cut
    assert sa["stale"] == sb["stale"]
    assert sa["model"].keys() == sb["model"].keys()
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    for k, v in sa["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], sb["optimizer"]["state"][k]["exp_avg"]), k
    assert torch.equal(sa["torch_rng"], sb["torch_rng"])
    # both on to the end (or early stopping): the same run; an ended run leaves no state
    end_a = train(TrainConfig(**base, runs_dir=a), resume=True)
    end_b = train(TrainConfig(**base, runs_dir=b), resume=True)
    assert end_a["resumed_from"] == end_b["resumed_from"] == 8
    assert end_a["steps"] == end_b["steps"] == 15
    assert end_a["best"] == end_b["best"]
    assert not (tmp_path / "a/tiny" / RESUME_FILE).exists()
    assert not (tmp_path / "b/tiny" / RESUME_FILE).exists()
    head_a = torch.load(tmp_path / "a/tiny/checkpoint/head.pt", weights_only=True)
    head_b = torch.load(tmp_path / "b/tiny/checkpoint/head.pt", weights_only=True)
    assert all(torch.equal(head_a[k], head_b[k]) for k in head_a)


def test_a_resume_file_from_before_a_new_config_key_reads_it_as_its_default(
    tmp_path: Path,
) -> None:
    import torch

    from training.train import _load_state, _run_key

    cfg = TrainConfig()
    run = _run_key(cfg)
    del run["max_false_flags"]  # a file written before the key existed
    path = tmp_path / "resume.pt"
    torch.save({"data_hash": "h", "base": ["b"], "run": run}, path)
    assert _load_state(path, cfg, "h", ["b"])["run"] == run
    other = TrainConfig(max_false_flags=0.01)  # the key set to something else: refused
    with pytest.raises(ValueError, match="max_false_flags differ"):
        _load_state(path, other, "h", ["b"])


def test_a_run_resumes_across_export_only_keys(tmp_path: Path) -> None:
    """Keys read only by evaluate and export (fuse_attention among them) do not stop a run
    cut before they were set from being resumed; a training key does."""
    import torch

    from training.train import _load_state, _run_key

    path = tmp_path / "resume.pt"
    torch.save({"data_hash": "h", "base": ["b"], "run": _run_key(TrainConfig())}, path)
    _load_state(path, TrainConfig(fuse_attention=True, calibrate=True), "h", ["b"])
    with pytest.raises(ValueError, match="label_smoothing differ"):
        _load_state(path, TrainConfig(label_smoothing=0.1), "h", ["b"])


def test_fused_attention_export_runs_qattention_and_matches_pytorch(
    tiny_base: Path, tmp_path: Path
) -> None:
    """`fuse_attention`: the exported graph runs onnxruntime's fused attention (one per layer,
    quantized), its fp32 form matches PyTorch within the export's 1e-3, and the service scores
    with it as with the plain export of the same checkpoint."""
    from training.evaluate import evaluate
    from training.export import export
    from training.train import train

    base = tiny_run(tiny_base, tmp_path, epochs=1, min_int8_agreement=0.0)
    cfg = TrainConfig(**base, runs_dir=str(tmp_path / "runs"))
    train(cfg)
    evaluate(cfg)
    plain = export(cfg)
    plain_dir = tmp_path / "plain"
    (tmp_path / "models/tiny").rename(plain_dir)
    fused_cfg = TrainConfig(**base, runs_dir=str(tmp_path / "runs"), fuse_attention=True)
    fused = export(fused_cfg)

    assert fused["export"]["fused_operators"].get("Attention") == 2  # the tiny model's layers
    assert fused["export"]["max_logit_diff_fused_fp32_vs_pytorch"] <= 1e-3
    assert "fused_operators" in plain["export"] and not plain["export"]["fused_operators"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "models/tiny/model.onnx")).graph.node}
    assert "QAttention" in ops
    assert "SkipLayerNormalization" not in ops  # the slower kernel: Add and LayerNorm stay
    ops_plain = {n.op_type for n in onnx.load(str(plain_dir / "model.onnx")).graph.node}
    assert "QAttention" not in ops_plain

    texts = ["i have a headache", "best hiking boots", "our church choir sings on sunday"]
    scores = {}
    for name, folder in (("plain", plain_dir), ("fused", tmp_path / "models/tiny")):
        clf = load_classifier(Settings(model_dir=folder, auth_required=False))
        scores[name] = [[s.scores[lab] for lab in clf.labels] for s in clf.score_texts(texts)]
    # both int8: each within int8 error of the same fp32 function
    assert np.allclose(scores["plain"], scores["fused"], atol=0.1)


def test_static_activation_scales_give_a_window_the_same_score_alone_or_in_a_batch(
    tiny_base: Path, tmp_path: Path
) -> None:
    """`static_activations`: the int8 graph quantizes activations with fixed scales (no
    DynamicQuantizeLinear left), so a window scores the same alone and beside other windows,
    which the dynamic export does not; both stay within int8 error of each other."""
    from training.evaluate import evaluate
    from training.export import export
    from training.train import train

    base = tiny_run(tiny_base, tmp_path, epochs=1, min_int8_agreement=0.0)
    cfg = TrainConfig(**base, runs_dir=str(tmp_path / "runs"))
    train(cfg)
    evaluate(cfg)
    export(cfg)
    dynamic_dir = tmp_path / "dynamic"
    (tmp_path / "models/tiny").rename(dynamic_dir)
    export(TrainConfig(**base, runs_dir=str(tmp_path / "runs"), static_activations=True))
    static_dir = tmp_path / "models/tiny"

    ops = {n.op_type for n in onnx.load(str(static_dir / "model.onnx")).graph.node}
    assert "DynamicQuantizeLinear" not in ops and "QuantizeLinear" in ops
    config = json.loads((static_dir / "config.json").read_text())
    assert config["static_activations"]["fixed"] > 0 and "fixed" in config["quantization"]

    texts = ["i have a headache", "best hiking boots for rocky trails", "our church choir",
             "who should i vote for", "a long message about the weather " * 3]  # fmt: skip
    moved = {}
    for name, folder in (("dynamic", dynamic_dir), ("static", static_dir)):
        clf = load_classifier(Settings(model_dir=folder, auth_required=False))
        windows = [w for ws in clf.encode_items(texts) for w in ws]
        alone = np.concatenate([clf.run([w]) for w in windows])
        clf.CALL_COST_TOKENS = 10_000  # a cut that puts every window in one call
        together = clf.run(windows)
        moved[name] = float(np.abs(alone - together).max())
        scores = [[s.scores[lab] for lab in clf.labels] for s in clf.score_texts(texts)]
        moved[name + " scores"] = scores
    assert moved["static"] < 1e-5 < moved["dynamic"]
    assert np.allclose(moved["dynamic scores"], moved["static scores"], atol=0.15)


def test_rewriting_a_shipped_model_with_fixed_scales_asks_for_a_new_version(
    tmp_path: Path,
) -> None:
    """The rewrite changes scores, so it refuses to keep the version the directory has."""
    from training.static_int8 import rewrite_model_dir

    folder = tmp_path / "models" / "tiny"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"name": "tiny", "version": "1.0.0"}))
    cfg = TrainConfig(name="tiny", version="1.0.0", models_dir=str(tmp_path / "models"))
    with pytest.raises(ValueError, match="new version"):
        rewrite_model_dir(cfg)


def test_a_checkpoint_read_back_from_the_int8_graph_scores_as_the_run_did(
    tiny_base: Path, tmp_path: Path
) -> None:
    """`training.from_onnx`: the shipped graph's weights (dequantized, smoothing undone) in a
    checkpoint that loads like a run's: biases and layer norms exactly the run's, every linear
    weight within int8 rounding of it, logits close; and `init_from` starts a run from it."""
    import torch

    from training.evaluate import evaluate
    from training.export import export
    from training.from_onnx import checkpoint_from_graph
    from training.model import MultiLabelClassifier
    from training.train import train

    base = tiny_run(tiny_base, tmp_path, epochs=1, min_int8_agreement=0.0)
    cfg = TrainConfig(**base, runs_dir=str(tmp_path / "runs"))
    train(cfg)
    evaluate(cfg)
    export(cfg)
    graph = onnx.load(str(tmp_path / "models/tiny/model.onnx")).graph
    assert any(n.name.endswith("/smooth") for n in graph.node)  # smoothing to undo is there

    meta = checkpoint_from_graph(tmp_path / "models/tiny", tmp_path / "back")
    run, tok, _ = MultiLabelClassifier.load(tmp_path / "runs/tiny/checkpoint")
    back, _, _ = MultiLabelClassifier.load(tmp_path / "back")
    assert meta["from_graph"]["weights_from_base"] == []  # embeddings trained: from the graph
    ran, got = run.state_dict(), back.state_dict()
    assert ran.keys() == got.keys()
    for name, value in ran.items():
        if name.endswith(("bias", "LayerNorm.weight")):
            assert torch.equal(value, got[name]), name
        else:  # int8 rounding (per column of the smoothed weight, per embedding table)
            rel = ((value - got[name]).norm() / value.norm()).item()
            assert rel < 0.02, (name, rel)
    enc = tok(["my doctor says my blood pressure is too high", "best pizza near me"],
              return_tensors="pt", padding=True)  # fmt: skip
    with torch.no_grad():
        a = run(enc["input_ids"], enc["attention_mask"])
        b = back(enc["input_ids"], enc["attention_mask"])
    assert torch.allclose(a, b, atol=0.05)
    # a second stage starts from it like from a run's checkpoint
    still = {"learning_rate": 0.0, "head_learning_rate": 0.0, "dropout": 0.0}
    train(
        TrainConfig(
            **{**base, **still}, runs_dir=str(tmp_path / "s"), init_from=str(tmp_path / "back")
        )
    )
    kept, _, _ = MultiLabelClassifier.load(tmp_path / "s/tiny/checkpoint")
    assert all(torch.equal(v, kept.state_dict()[k]) for k, v in got.items())


def test_a_run_pooling_the_message_reads_its_head_from_the_messages_own_tokens(
    tiny_base: Path, tmp_path: Path
) -> None:
    """`pool: "message"`: the head reads the mean of the message's tokens (up to the first
    separator; the context after it still reaches them through attention): a message read
    alone scores as with every token pooled, one read after context does not; the setting
    travels with the checkpoint and the model directory, the exported graph computes the same
    pooling (the export's 1e-3 check on items with context), and an unknown pool is refused."""
    import torch

    from training.evaluate import evaluate
    from training.export import export
    from training.model import MultiLabelClassifier, mean_pool
    from training.train import train

    context = {"context_chars": 120, "context_turns": 2}
    base = tiny_run(tiny_base, tmp_path, epochs=1, min_int8_agreement=0.0, **context)
    cfg = TrainConfig(**base, runs_dir=str(tmp_path / "runs"), pool="message")
    train(cfg)
    evaluate(cfg)
    metrics = export(cfg)
    assert metrics["export"]["max_logit_diff_fp32_vs_pytorch"] <= 1e-3
    shipped = json.loads((tmp_path / "models/tiny/config.json").read_text())
    assert shipped["training"]["pool"] == "message"

    model, tok, _ = MultiLabelClassifier.load(tmp_path / "runs/tiny/checkpoint")
    assert model.message_sep == tok.sep_token_id
    pair = tok(["yeah me too"], ["user: i was told i have diabetes"], return_tensors="pt")
    alone = tok(["yeah me too"], return_tensors="pt")
    ids, mask = pair["input_ids"], pair["attention_mask"]
    first_sep = int((ids[0] == tok.sep_token_id).nonzero()[0])
    with torch.no_grad():
        got = model(ids, mask)
        hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        by_hand = model.head(hidden[:, : first_sep + 1].mean(dim=1))
        every = model.head(mean_pool(hidden, mask))
        lone = model(alone["input_ids"], alone["attention_mask"])
        model.set_pool("all", tok.sep_token_id)
        lone_all = model(alone["input_ids"], alone["attention_mask"])
        pair_all = model(ids, mask)
    assert torch.allclose(got, by_hand, atol=1e-5)
    assert torch.allclose(pair_all, every, atol=1e-5)
    assert not torch.allclose(got, every, atol=1e-4)  # the context's tokens are left out
    assert torch.allclose(lone, lone_all, atol=1e-6)  # nothing to leave out

    with pytest.raises(ValueError, match="pool='middle'"):
        train(TrainConfig(**base, runs_dir=str(tmp_path / "x"), pool="middle"))


def test_a_distilled_run_learns_the_teachers_scores(tiny_base: Path, tmp_path: Path) -> None:
    """With a `teacher`, the run learns the teacher's probabilities on its windows: taught by a
    teacher that calls every text health (distill 1.0), a student calls the texts without
    health health as well, where the same run on the labels does not; a teacher with another
    tokenizer, or a share outside [0, 1], is refused."""
    import torch
    from transformers import AutoTokenizer

    from training.model import MultiLabelClassifier, make_encoder, predict_logits
    from training.train import train

    base = tiny_run(tiny_base, tmp_path, epochs=1, learning_rate=1e-3, warmup_ratio=0.0)
    train(TrainConfig(**base, runs_dir=str(tmp_path / "first")))
    teacher_dir = tmp_path / "teacher"
    shutil.copytree(tmp_path / "first/tiny/checkpoint", teacher_dir)
    # the teacher: health 0.9, religion and politics 0.1, whatever the text
    head = {"weight": torch.zeros(3, 32), "bias": torch.tensor([2.2, -2.2, -2.2])}
    torch.save(head, teacher_dir / "head.pt")
    no_health = [t for t, labels in TINY if "health" not in labels]

    def health(folder: Path) -> float:
        model, tok, _ = MultiLabelClassifier.load(folder)
        enc = make_encoder(tok, TrainConfig(**base))
        logits = predict_logits(model, enc, no_health, [""] * len(no_health), 0)
        return float(torch.sigmoid(logits)[:, 0].mean())

    student = {**base, "epochs": 3, "learning_rate": 1e-2, "head_learning_rate": 1e-2}
    train(TrainConfig(**student, runs_dir=str(tmp_path / "labels")))
    train(
        TrainConfig(
            **student, runs_dir=str(tmp_path / "taught"), teacher=str(teacher_dir), distill=1.0
        )
    )
    on_labels, taught = (
        health(tmp_path / "labels/tiny/checkpoint"),
        health(tmp_path / "taught/tiny/checkpoint"),
    )
    assert taught > 0.7 and taught > on_labels + 0.2, (taught, on_labels)

    other = tmp_path / "other-tokenizer"
    shutil.copytree(teacher_dir, other)
    tok = AutoTokenizer.from_pretrained(other / "encoder")
    tok.add_tokens(["zzqx"])
    tok.save_pretrained(other / "encoder")
    with pytest.raises(ValueError, match="its tokenizer is not the run's"):
        train(TrainConfig(**base, runs_dir=str(tmp_path / "x"), teacher=str(other)))
    with pytest.raises(ValueError, match="a share between 0 and 1"):
        train(
            TrainConfig(**base, runs_dir=str(tmp_path / "y"), teacher=str(teacher_dir), distill=2)
        )
