"""Perturbations of the test split: typos, invisible characters and look-alikes, Arabic
decoration. The service's normalisation should keep F1 close to the clean score."""

from __future__ import annotations

import random
import re

_ARABIC_LETTER = re.compile("[\u0621-\u064a]")
_HARAKAT = ["\u064e", "\u064f", "\u0650", "\u0651", "\u0652", "\u064b"]
_LOOKALIKE = {
    "a": "\u0430",
    "e": "\u0435",
    "o": "\u043e",
    "p": "\u0440",
    "c": "\u0441",
    "i": "\u0456",
    "x": "\u0445",
    "y": "\u0443",
}
_INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]


def typos(text: str, rng: random.Random, rate: float = 0.15) -> str:
    """Swap, drop or double a letter in about `rate` of the words longer than three letters."""
    words = text.split(" ")
    for i, w in enumerate(words):
        if len(w) > 3 and rng.random() < rate:
            j = rng.randrange(1, len(w) - 1)
            op = rng.choice(("swap", "drop", "double"))
            if op == "swap":
                w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
            elif op == "drop":
                w = w[:j] + w[j + 1 :]
            else:
                w = w[:j] + w[j] + w[j:]
            words[i] = w
    return " ".join(words)


def invisible_and_lookalikes(text: str, rng: random.Random, rate: float = 0.3) -> str:
    """Insert zero-width characters inside words and swap Latin letters for Cyrillic twins."""
    out = []
    for w in text.split(" "):
        if len(w) > 3 and rng.random() < rate:
            j = rng.randrange(1, len(w))
            w = w[:j] + rng.choice(_INVISIBLE) + w[j:]
        if rng.random() < rate:
            w = "".join(_LOOKALIKE.get(ch, ch) if rng.random() < 0.5 else ch for ch in w)
        out.append(w)
    return " ".join(out)


def arabic_decoration(text: str, rng: random.Random, rate: float = 0.4) -> str:
    """Add harakat after Arabic letters and stretch some words with tatweel."""
    out = []
    for ch in text:
        out.append(ch)
        if _ARABIC_LETTER.match(ch):
            if rng.random() < rate:
                out.append(rng.choice(_HARAKAT))
            if rng.random() < rate / 4:
                out.append("\u0640" * rng.randint(1, 3))
    return "".join(out)


PERTURBATIONS = {
    "typos": typos,
    "zero_width_and_lookalikes": invisible_and_lookalikes,
    "arabic_diacritics_and_tatweel": arabic_decoration,
}


def perturb(texts: list[str], name: str, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    fn = PERTURBATIONS[name]
    return [fn(t, rng) for t in texts]
