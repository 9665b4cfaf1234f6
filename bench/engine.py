"""Sequences per second of the shipped int8 ONNX model vs fp32 ONNX vs PyTorch, same inputs.

Usage: .venv/bin/python -m bench.engine [--config training/configs/e5-multi.json] [--seconds 5]
                                        [--previous DIR | --parallel | --cut | --fusions]
Needs the run folder of the config (runs/<name>/checkpoint and runs/<name>/onnx/model-fp32.onnx)
and the shipped model directory models/<name>/. Prints throughput and ratios.

With --previous (a model directory, e.g. the last shipped version taken out of git history):
both model directories through the service's scoring core on the same test-split messages,
each read after the turns before it as that model reads them (a model that reads more context
pays for it here), at batch 1 and 32, in 4 alternating rounds; ratio of the new to the
previous (target >= 0.90).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from bench.record import save
from training.config import TrainConfig, resolve, resolve_base_model
from training.data import load_splits
from training.model import MultiLabelClassifier, batch_tensors, encoder_of, make_encoder


def rate(fn: Callable[[], None], n_seqs: int, seconds: float) -> float:
    fn()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += n_seqs
    return done / (time.perf_counter() - start)


def parallel(cfg: TrainConfig, seconds: float, record: str | None = None) -> None:
    """Messages per second of the shipped model through the scoring core, with the machine's
    cores spent as one model call at a time over all of them, or as one single-threaded call
    per core at once (the service's default, ST_MODEL_RUNS and ST_THREADS, is single-threaded
    calls too, one per core and one more: its extra call keeps a core busy while the event
    loop hands answers back, which calls kept back to back, as here, do not need)."""
    import os
    import threading

    from service.artifact import ModelArtifact
    from service.classifier import Classifier

    texts = list(load_splits(resolve(cfg.splits_dir))["test"]["text"])[:2048]
    cores = len(os.sched_getaffinity(0))
    print(f"{len(texts)} test-split messages; {cores} cores")
    print(f"{'calls at once':>14}{'threads each':>14}{'batch':>7}{'msg/s':>9}")
    rows = []
    for runs, threads in ((1, cores), (cores, 1)):
        clf = Classifier(ModelArtifact.load(cfg.model_dir), threads=threads)
        clf.score_texts(texts[:8])
        for batch in (1, 32):
            done = [0] * runs
            stop = time.perf_counter() + seconds

            def work(
                i: int, b: int = batch, c: Classifier = clf, stop: float = stop, done: list = done
            ) -> None:
                k = i * 512
                while time.perf_counter() < stop:
                    c.score_texts(texts[k % len(texts) : k % len(texts) + b])
                    k += b
                    done[i] += b

            workers = [threading.Thread(target=work, args=(i,)) for i in range(runs)]
            start = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            rate_ = sum(done) / (time.perf_counter() - start)
            print(f"{runs:>14}{threads:>14}{batch:>7}{rate_:>9.1f}")
            rows.append({"runs": runs, "threads": threads, "batch": batch, "msg_s": rate_})
    save(record, "engine_parallel", {"cores": cores, "rows": rows})


def greedy_cut(classifier: Any, sequences: list[list[int]]) -> list[list[int]]:
    """The cut before 1.5 (the baseline of `cut`): sorted by length, each call filled while it
    stays within `batch_size` rows and `batch_cells` padded tokens."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out: list[list[int]] = []
    for i in order:
        width = len(sequences[i])
        if (
            out
            and len(out[-1]) < classifier.batch_size
            and (len(out[-1]) + 1) * width <= classifier.batch_cells
        ):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def call_cost(clf: Any, reps: int = 30) -> tuple[float, float]:
    """(ms per call, ms per token) of one single-threaded model call at batch 1: a straight line
    through the fastest of `reps` calls at widths 8 to 64 (the fastest, as other work on the
    machine only ever adds): what `Classifier.CALL_COST_TOKENS` stands for."""
    rng = np.random.default_rng(0)
    widths = (8, 16, 24, 32, 48, 64)
    fastest = []
    for width in widths:
        feed = {
            "input_ids": rng.integers(5, 1000, (1, width)).astype(np.int64),
            "attention_mask": np.ones((1, width), np.int64),
        }
        clf.session.run(["logits"], feed)
        took = []
        for _ in range(reps):
            start = time.perf_counter()
            clf.session.run(["logits"], feed)
            took.append((time.perf_counter() - start) * 1000)
        fastest.append(min(took))
    per_token, per_call = np.polyfit(np.array(widths, float), np.array(fastest), 1)
    return float(per_call), float(per_token)


ONE_BY_ONE = "one window per call"


def cut(cfg: TrainConfig, rounds: int = 3, record: str | None = None) -> None:
    """The scoring core's model calls for windows that arrive together (as concurrent requests
    do), cut as the service cuts them against the greedy cut before it and against no sharing
    at all (every window its own call: what sharing calls is worth on the machine at hand):
    test-split messages of the lengths the HTTP benchmarks send, in groups of 8 to 32, the
    service's default spread (one single-threaded call per core, all at once), rounds
    interleaved, medians."""
    import os
    import threading

    from bench.http_load import texts_of_realistic_length
    from service.artifact import ModelArtifact
    from service.classifier import Classifier

    cores = len(os.sched_getaffinity(0))
    clf = Classifier(ModelArtifact.load(cfg.model_dir), threads=1)
    per_call, per_token = call_cost(clf)
    print(
        f"one call at batch 1, one thread: {per_call:.2f} ms + {per_token:.3f} ms per token, so a"
        f" call costs {per_call / per_token:.0f} tokens' worth (the cut assumes"
        f" {clf.CALL_COST_TOKENS})"
    )
    texts = texts_of_realistic_length(2048)
    seqs = [w for ws in clf.encode_items(texts) for w in ws]
    cuts = {
        "greedy (before)": greedy_cut,
        "least cost (shipped)": type(clf).batches,
        ONE_BY_ONE: lambda _clf, part: [[i] for i in range(len(part))],
    }
    print(f"{len(texts)} test-split messages, {len(seqs)} windows; {cores} calls at once")
    rates: dict[tuple[str, int], list[float]] = {(n, g): [] for n in cuts for g in (8, 16, 32)}
    # one window per call is the same calls whatever arrives together: measured once, as 1
    rates = {(n, g): v for (n, g), v in rates.items() if n != ONE_BY_ONE}
    rates[(ONE_BY_ONE, 1)] = []
    calls_of: dict[tuple[str, int], int] = {}
    for _ in range(rounds):
        for (name, group), got in rates.items():
            feeds = []
            for k in range(0, len(seqs), group):
                part = seqs[k : k + group]
                for idx in cuts[name](clf, part):
                    width = max(len(part[i]) for i in idx)
                    ids = np.full((len(idx), width), clf.pad_id, np.int64)
                    mask = np.zeros((len(idx), width), np.int64)
                    for row, i in enumerate(idx):
                        ids[row, : len(part[i])] = part[i]
                        mask[row, : len(part[i])] = 1
                    feeds.append({"input_ids": ids, "attention_mask": mask})
            calls_of[(name, group)] = len(feeds)

            def work(share: list[dict[str, np.ndarray]]) -> None:
                for feed in share:
                    clf.session.run(["logits"], feed)

            workers = [threading.Thread(target=work, args=(feeds[i::cores],)) for i in range(cores)]
            start = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            got.append(len(texts) / (time.perf_counter() - start))
    print(f"{'cut':<22}{'together':>9}{'calls':>7}{'msg/s':>9}")
    rows = []
    for (name, group), got in rates.items():
        rate_ = float(np.median(got))
        print(f"{name:<22}{group:>9}{calls_of[(name, group)]:>7}{rate_:>9.1f}")
        rows.append({"cut": name, "together": group, "msg_s": rate_})
    for group in (8, 16, 32):
        new = float(np.median(rates[("least cost (shipped)", group)]))
        old = float(np.median(rates[("greedy (before)", group)]))
        print(f"shipped / greedy cut, {group} windows together: {new / old:.2f}")
    alone = float(np.median(rates[(ONE_BY_ONE, 1)]))
    for group in (8, 16, 32):
        new = float(np.median(rates[("least cost (shipped)", group)]))
        print(
            f"shipped cut, {group} windows together / one window per call: {new / alone:.2f}"
            " (what sharing calls is worth on this machine)"
        )
    save(
        record,
        "engine_cut",
        {"cores": cores, "rows": rows, "call_ms": per_call, "token_ms": per_token},
    )


def fusions(cfg: TrainConfig, rounds: int = 3, record: str | None = None) -> None:
    """The engine's session (onnxruntime's graph optimisations but `SLOW_FUSIONS`) against the
    same graph with every optimisation onnxruntime makes by default, one thread each, on the
    same windows cut into calls as the service cuts them: one window per call (concurrency 1)
    and up to 8 (the batches of concurrency 32); rounds interleaved, CPU ms per window
    (medians), and how many label decisions the two runs of the graph give differently."""
    from bench.http_load import texts_of_realistic_length
    from service.artifact import ModelArtifact
    from service.classifier import SLOW_FUSIONS, Classifier, open_session

    clf = Classifier(ModelArtifact.load(cfg.model_dir), threads=1)
    path = str(clf.artifact.onnx_path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sessions = {
        "every fusion (onnxruntime's default)": ort.InferenceSession(path, opts),
        f"engine ({', '.join(SLOW_FUSIONS)} off)": open_session(path, 1),
    }
    texts = texts_of_realistic_length(1024)
    seqs = [w for ws in clf.encode_items(texts) for w in ws]
    print(f"{len(texts)} test-split messages, {len(seqs)} windows; one thread per call")
    rows = []
    for batch in (1, 8):
        clf.batch_size = batch
        feeds = []
        for idx in clf.batches(seqs):
            width = max(len(seqs[i]) for i in idx)
            ids = np.full((len(idx), width), clf.pad_id, np.int64)
            mask = np.zeros((len(idx), width), np.int64)
            for row, i in enumerate(idx):
                ids[row, : len(seqs[i])] = seqs[i]
                mask[row, : len(seqs[i])] = 1
            feeds.append({"input_ids": ids, "attention_mask": mask})
        ms: dict[str, list[float]] = {name: [] for name in sessions}
        logits: dict[str, np.ndarray] = {}
        for _ in range(rounds):
            for name, sess in sessions.items():
                start = time.process_time()
                out = [sess.run(["logits"], feed)[0] for feed in feeds]
                ms[name].append((time.process_time() - start) * 1000 / len(seqs))
                logits[name] = np.concatenate(out)
        default, engine = (logits[name] for name in sessions)
        t = np.log(clf.thresholds / (1 - clf.thresholds)) * clf.temperature  # logit thresholds
        moved = int(((default >= t) != (engine >= t)).sum())
        for name in sessions:
            rows.append({"session": name, "batch": batch, "ms": float(np.median(ms[name]))})
            print(f"{name:<40} up to {batch} per call: {rows[-1]['ms']:.2f} ms per window")
        ratio = rows[-2]["ms"] / rows[-1]["ms"]
        print(
            f"engine / default, up to {batch} per call: {ratio:.2f}x faster; label decisions "
            f"that differ: {moved} of {default.size}"
        )
        rows[-1]["decisions_moved"], rows[-1]["decisions"] = moved, int(default.size)
    save(record, "engine_fusions", {"windows": len(seqs), "rows": rows})


def compare(cfg: TrainConfig, previous: Path, seconds: float, rounds: int = 4) -> None:
    """The shipped model against a previous model directory, same messages, same core, in
    alternating rounds (the order flips every round, so that a machine that drifts during the
    run favours neither); the ratio is of the rounds' summed rates."""
    from service.artifact import ModelArtifact
    from service.classifier import Classifier

    test = load_splits(resolve(cfg.splits_dir))["test"]
    rows = test.select(range(min(256, len(test)))).to_list()
    texts = [r["text"] for r in rows]
    print(
        f"{len(texts)} test-split messages (mean {np.mean([len(t) for t in texts]):.0f}"
        f" characters), each read after the turns before it; {rounds} alternating rounds"
    )
    models: list[tuple[str, Classifier, list[str]]] = []
    for title, path in (("previous", previous), ("shipped", cfg.model_dir)):
        clf = Classifier(ModelArtifact.load(path), threads=2)
        contexts = [clf.encoder.context([(a, b) for a, b in r["history"]]) for r in rows]
        models.append((f"{title} {clf.artifact.name} {clf.artifact.version}", clf, contexts))
    rates: dict[tuple[str, int], list[float]] = {(m[0], b): [] for m in models for b in (1, 32)}
    for r in range(rounds):
        for label, clf, contexts in models if r % 2 == 0 else models[::-1]:
            for batch in (1, 32):
                k = 0

                def run(clf: Classifier = clf, ctx: list[str] = contexts, b: int = batch) -> None:
                    nonlocal k
                    i = (k * b) % len(texts)
                    k += 1
                    clf.score_texts(texts[i : i + b], ctx[i : i + b])

                rates[(label, batch)].append(rate(run, batch, max(1.0, seconds / 2)))
    print(f"{'model':<28}{'batch':>6}  msg/s by round")
    for (label, batch), by in rates.items():
        print(f"{label:<28}{batch:>6}  " + " / ".join(f"{x:.1f}" for x in by))
    prev, new = models[0][0], models[1][0]
    for batch in (1, 32):
        ratio = sum(rates[(new, batch)]) / sum(rates[(prev, batch)])
        met = "yes" if ratio >= 0.90 else "no"
        print(f"shipped / previous at batch {batch}: {ratio:.2f} (target >= 0.90, met: {met})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="training/configs/minilm-en.json")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--previous", type=Path, default=None)
    parser.add_argument("--parallel", action="store_true")
    parser.add_argument("--cut", action="store_true", help="the call cut against the last one")
    parser.add_argument(
        "--fusions", action="store_true", help="the engine's session against every fusion"
    )
    parser.add_argument("--record", default=None, help="also write the figures to DIR")
    args = parser.parse_args()
    cfg = TrainConfig.load(resolve(args.config))
    if args.parallel:
        parallel(cfg, args.seconds, args.record)
        return
    if args.cut:
        cut(cfg, record=args.record)
        return
    if args.fusions:
        fusions(cfg, record=args.record)
        return
    if args.previous is not None:
        compare(cfg, args.previous, args.seconds)
        return
    checkpoint = cfg.run_dir / "checkpoint"
    if checkpoint.exists():
        model, tok, _ = MultiLabelClassifier.load(checkpoint)
    else:  # a fresh clone: the same architecture and cost, from the base model, new head
        from transformers import AutoTokenizer

        base_dir = resolve_base_model(cfg.base_model)
        model = MultiLabelClassifier.from_base(base_dir, len(cfg.labels)).eval()
        tok = AutoTokenizer.from_pretrained(base_dir)
        print(f"no {checkpoint}: PyTorch row from the base model with a new head (same cost)")
    torch.set_num_threads(2)
    # PyTorch reads with the checkpoint's tokenizer, ONNX with the shipped (maybe trimmed) one:
    # the same texts, each model with its own vocabulary.
    encoder = make_encoder(tok, cfg)
    shipped = encoder_of((cfg.model_dir / "tokenizer.json").read_text(encoding="utf-8"), cfg)
    texts = list(load_splits(resolve(cfg.splits_dir))["test"]["text"])[:256]
    pad = int(tok.pad_token_id or 0)
    sessions = {
        "int8 ONNX (shipped)": Path(cfg.model_dir / "model.onnx"),
        "fp32 ONNX": Path(cfg.run_dir / "onnx" / "model-fp32.onnx"),
    }
    if not sessions["fp32 ONNX"].exists():
        print("no fp32 ONNX graph (an export leaves it in runs/<name>/onnx): row skipped")
        del sessions["fp32 ONNX"]
    print(
        f"model {cfg.name}; {len(texts)} test texts; mean {np.mean([len(t) for t in texts]):.0f}"
        " characters"
    )
    results: dict[tuple[str, int], float] = {}
    for batch in (1, 32):
        inputs = [
            batch_tensors(encoder, texts[i : i + batch], [""] * len(texts[i : i + batch]), pad)
            for i in range(0, len(texts), batch)
        ][: max(1, 256 // batch)]
        onnx_inputs = [
            batch_tensors(shipped, texts[i : i + batch], [""] * len(texts[i : i + batch]), pad)
            for i in range(0, len(texts), batch)
        ][: max(1, 256 // batch)]
        k = 0

        def run_torch(inputs: list = inputs) -> None:
            nonlocal k
            ids, mask = inputs[k % len(inputs)]
            k += 1
            with torch.no_grad():
                model(ids, mask)

        results[("PyTorch fp32", batch)] = rate(run_torch, batch, args.seconds)
        for name, path in sessions.items():
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 2
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

            def run_onnx(sess: ort.InferenceSession = sess, inputs: list = onnx_inputs) -> None:
                nonlocal k
                ids, mask = inputs[k % len(inputs)]
                k += 1
                sess.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})

            results[(name, batch)] = rate(run_onnx, batch, args.seconds)
    started = time.perf_counter()
    from service.artifact import ModelArtifact
    from service.classifier import Classifier

    Classifier(ModelArtifact.load(cfg.model_dir)).score_texts(["warm-up"])
    load_s = time.perf_counter() - started
    size_mb = sum(f.stat().st_size for f in cfg.model_dir.iterdir()) / 1e6
    print(
        f"shipped model dir {size_mb:.1f} MB (target <= 60); load + first answer "
        f"{load_s:.2f} s (target < 3)"
    )
    print(f"{'engine':<22}{'batch':>6}{'seq/s':>10}{'vs PyTorch':>12}{'vs fp32 ONNX':>14}")
    for (name, batch), r in results.items():
        base, fp32 = results[("PyTorch fp32", batch)], results.get(("fp32 ONNX", batch))
        vs_fp32 = f"{r / fp32:>13.2f}x" if fp32 else f"{'n/a':>14}"
        print(f"{name:<22}{batch:>6}{r:>10.1f}{r / base:>11.2f}x{vs_fp32}")
    save(
        args.record,
        "engine",
        {
            "model": cfg.name,
            "pytorch": "fine-tuned checkpoint" if checkpoint.exists() else "base model, new head",
            "size_mb": size_mb,
            "load_s": load_s,
            "rows": [{"engine": n, "batch": b, "seq_s": r} for (n, b), r in results.items()],
        },
    )


if __name__ == "__main__":
    main()
