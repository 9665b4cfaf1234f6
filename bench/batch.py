"""Batch scoring: the local engine's rows per second vs the raw engine, and its peak memory.

1. Throughput: a generated JSONL file of `--rows` chat messages (the corpus's own transcript
   messages, each made unique) is scored by `sensitive-topics score` in a subprocess (reading,
   scoring, writing Parquet parts, assembling the output), and the same texts are scored by the
   raw engine in this process (`Classifier.score_texts` in chunks: tokenise + onnxruntime, no
   input or output). The ratio is printed (target >= 0.90).
2. Transcripts: a generated JSONL file of `--transcripts` transcripts (the corpus's own, each
   made unique) scored with `--messages-column`, against the raw engine on the same messages
   read after the same turns (`Classifier.score_transcripts`, 256 transcripts a call), run once
   before and once after the command so that drift of the shared machine during the run does
   not land on one side; compared in messages per second with the mean of the two raw runs
   (target >= 0.90).
3. Memory: a generated file of `--memory-rows` short messages is scored by the command while its
   resident memory is sampled every half second; the peak and the memory at each tenth of the
   run are printed, to show that memory stays flat (target: under 1.5 GB).

Usage: .venv/bin/python -m bench.batch [--rows 100000] [--transcripts 5000]
       [--memory-rows 1000000] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from service.artifact import ModelArtifact
from service.classifier import Classifier
from training.config import REPO

TARGET_RATIO = 0.90
MEMORY_BOUND_MB = 1536


def chat_messages() -> list[str]:
    """The authored transcripts' messages: the lengths people write in a chat."""
    out = []
    for path in sorted((REPO / "training/data/authored").glob("*transcripts*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            for m in json.loads(line).get("messages", []):
                if m.get("content"):
                    out.append(m["content"])
    if not out:
        raise SystemExit("no transcripts found under training/data/authored")
    return out


def write_jsonl(path: Path, texts: list[str], rows: int) -> list[str]:
    rng = np.random.default_rng(0)
    picked = [f"{texts[int(i)]} ({k})" for k, i in enumerate(rng.integers(len(texts), size=rows))]
    with path.open("w", encoding="utf-8") as f:
        for k, t in enumerate(picked):
            f.write(json.dumps({"id": k, "text": t}, ensure_ascii=False) + "\n")
    return picked


def chat_transcripts() -> list[list[dict[str, str]]]:
    """The authored transcripts, as [{role, content}]."""
    out = []
    for path in sorted((REPO / "training/data/authored").glob("*transcripts*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            msgs = json.loads(line).get("messages", [])
            out.append([{"role": m["role"], "content": m["content"]} for m in msgs])
    return out


def write_transcripts(path: Path, pool: list[list[dict[str, str]]], rows: int) -> list[list[dict]]:
    rng = np.random.default_rng(0)
    picked = []
    for k, i in enumerate(rng.integers(len(pool), size=rows)):
        picked.append([{**m, "content": f"{m['content']} ({k})"} for m in pool[int(i)]])
    with path.open("w", encoding="utf-8") as f:
        for k, t in enumerate(picked):
            f.write(json.dumps({"id": k, "messages": t}, ensure_ascii=False) + "\n")
    return picked


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_command(
    src: Path, out: Path, model_dir: Path, column: tuple[str, str] = ("--text-column", "text")
) -> tuple[float, list[float]]:
    """Wall time of `sensitive-topics score`, and its resident memory sampled every 0.5 s."""
    cmd = [sys.executable, "-m", "service", "score", str(src), "--output", str(out)]
    cmd += [*column, "--model-dir", str(model_dir)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    samples = []
    while proc.poll() is None:
        samples.append(rss_mb(proc.pid))
        time.sleep(0.5)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"score exited with {proc.returncode}")
    return took, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--transcripts", type=int, default=5_000)
    parser.add_argument("--memory-rows", type=int, default=1_000_000)
    parser.add_argument("--model-dir", default=os.environ.get("ST_MODEL_DIR", ""))
    args = parser.parse_args()
    from service.settings import DEFAULT_MODEL_DIR

    model_dir = Path(args.model_dir) if args.model_dir else DEFAULT_MODEL_DIR
    messages = chat_messages()
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.rows:
            texts = write_jsonl(folder / "in.jsonl", messages, args.rows)
            print(f"{args.rows:,} rows, mean {np.mean([len(t) for t in texts]):.0f} characters")
            took, _ = run_command(folder / "in.jsonl", folder / "out.parquet", model_dir)
            clf = Classifier(ModelArtifact.load(model_dir))
            clf.score_texts(texts[:64])  # warm-up
            start = time.perf_counter()
            for k in range(0, len(texts), 2048):
                clf.score_texts(texts[k : k + 2048])
            raw = time.perf_counter() - start
            result |= {"command_rows_per_s": args.rows / took, "raw_rows_per_s": args.rows / raw}
            result["ratio"] = result["command_rows_per_s"] / result["raw_rows_per_s"]
            print(
                f"sensitive-topics score (whole command, incl. start-up and I/O): "
                f"{result['command_rows_per_s']:.1f} rows/s"
            )
            print(
                "raw engine (tokenise + onnxruntime, in memory): "
                f"{result['raw_rows_per_s']:.1f} rows/s"
            )
            ok = result["ratio"] >= TARGET_RATIO
            print(f"ratio {result['ratio']:.3f} (target >= {TARGET_RATIO}) met: {ok}")
            (folder / "out.parquet").unlink(missing_ok=True)
        if args.transcripts:
            ts = write_transcripts(folder / "t.jsonl", chat_transcripts(), args.transcripts)
            n_msgs = sum(len(t) for t in ts)
            print(f"\n{args.transcripts:,} transcripts, {n_msgs:,} messages")
            clf = Classifier(ModelArtifact.load(model_dir))
            clf.score_texts(["warm-up"])

            def raw_run() -> float:
                start = time.perf_counter()
                for k in range(0, len(ts), 256):  # the engine's own shared-run path
                    clf.score_transcripts(
                        [
                            ([m["content"] for m in t], [m["role"] for m in t])
                            for t in ts[k : k + 256]
                        ]
                    )
                return time.perf_counter() - start

            before = raw_run()
            took, _ = run_command(
                folder / "t.jsonl",
                folder / "t.parquet",
                model_dir,
                ("--messages-column", "messages"),
            )
            after = raw_run()
            raw = (before + after) / 2
            print(
                f"raw engine before and after the command: {n_msgs / before:.1f} and "
                f"{n_msgs / after:.1f} messages/s"
            )
            result |= {
                "transcripts_command_msgs_per_s": n_msgs / took,
                "transcripts_raw_msgs_per_s": n_msgs / raw,
            }
            result["transcripts_ratio"] = (
                result["transcripts_command_msgs_per_s"] / result["transcripts_raw_msgs_per_s"]
            )
            print(
                f"messages column, whole command: {result['transcripts_command_msgs_per_s']:.1f}"
                f" messages/s; raw engine: {result['transcripts_raw_msgs_per_s']:.1f} messages/s"
            )
            ok = result["transcripts_ratio"] >= TARGET_RATIO
            print(f"ratio {result['transcripts_ratio']:.3f} (target >= {TARGET_RATIO}) met: {ok}")
        if args.memory_rows:
            short = [m for m in messages if len(m) <= 80]
            write_jsonl(folder / "big.jsonl", short, args.memory_rows)
            took, samples = run_command(folder / "big.jsonl", folder / "big.parquet", model_dir)
            peak = max(samples)
            tenths = [samples[min(len(samples) - 1, len(samples) * k // 10)] for k in range(1, 11)]
            result |= {"memory_rows_per_s": args.memory_rows / took, "peak_mb": peak}
            print(
                f"\n{args.memory_rows:,} short rows in {took:.0f} s "
                f"({result['memory_rows_per_s']:.0f} rows/s)"
            )
            print("resident MB at each tenth of the run: " + " ".join(f"{x:.0f}" for x in tenths))
            print(f"peak {peak:.0f} MB (bound {MEMORY_BOUND_MB} MB) met: {peak < MEMORY_BOUND_MB}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
