"""Baselines scored on the same test split: a keyword lexicon (empath)."""

from __future__ import annotations

import numpy as np

# empath categories that stand for each label; a text scores the share of its words in them.
EMPATH_CATEGORIES = {
    "health": ("health", "medical_emergency", "pain", "body", "nervousness"),
    "religion": ("religion", "worship"),
    "politics": ("politics", "government", "war", "law", "leader", "terrorism"),
}


class EmpathBaseline:
    """Keyword baseline: a label's score is how much of the text hits its empath categories."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        from empath import Empath

        self.lexicon = Empath()
        self.labels = labels

    def scores(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.labels)), np.float32)
        for i, text in enumerate(texts):
            hits = self.lexicon.analyze(text, normalize=True) or {}
            for j, lab in enumerate(self.labels):
                out[i, j] = sum(hits.get(c, 0.0) for c in EMPATH_CATEGORIES.get(lab, ()))
        return np.clip(out * 5.0, 0.0, 1.0)  # map word shares into [0, 1] for thresholds
