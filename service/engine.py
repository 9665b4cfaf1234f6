"""The async scoring front shared by the API routes: cache, then shared batched model runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from service.batching import MicroBatcher
from service.cache import ScoreCache, cache_key
from service.classifier import Classifier, TextScore, TranscriptScore
from service.language import LanguageDetector, TranscriptLanguages
from service.text import normalize


class ScoringEngine:
    """Scores messages through the cache and the micro-batcher; knows nothing of HTTP."""

    def __init__(
        self,
        classifier: Classifier,
        cache_entries: int = 100_000,
        max_windows: int = 64,
        max_tokens: int = 8192,
        wait_ms: float = 2.0,
        queue_windows: int = 4096,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.classifier = classifier
        self.cache: ScoreCache[TextScore] = ScoreCache(cache_entries)
        self.batcher = MicroBatcher(
            classifier.run, max_windows, max_tokens, wait_ms, queue_windows, on_batch
        )
        self.version = f"{classifier.artifact.name}:{classifier.artifact.version}"
        self.detector = LanguageDetector()
        self.supported = classifier.artifact.supported_languages
        self.context_chars = classifier.encoder.context_chars
        self.context_turns = classifier.encoder.context_turns

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    async def score(
        self, texts: Sequence[str], contexts: Sequence[str] | None = None
    ) -> list[TextScore]:
        """Scores of texts, each read after its context; cached messages cost no model time."""
        clean = [normalize(t) for t in texts]
        ctx = [normalize(c) if c else "" for c in (contexts or [""] * len(texts))]
        if not self.context_turns:  # an older model reads the tail of the turn before
            ctx = [c[-self.context_chars :] if self.context_chars else "" for c in ctx]
        return await self._score(clean, ctx)

    async def _score(self, clean: Sequence[str], ctx: Sequence[str]) -> list[TextScore]:
        """Scores of normalised texts after their normalised contexts."""
        keys = [cache_key(self.version, c, t) for t, c in zip(clean, ctx, strict=True)]
        results: list[TextScore | None] = [self.cache.get(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            windows = self.classifier.encode_normalized(
                [clean[i] for i in todo], [ctx[i] for i in todo]
            )
            flat = [w for ws in windows for w in ws]
            probs = (
                await self.batcher.submit(flat)
                if flat
                else np.zeros((0, len(self.classifier.labels)), np.float32)
            )
            for i, score in zip(todo, self.classifier.combine(windows, probs), strict=True):
                results[i] = score
                self.cache.put(keys[i], score)
        return [r for r in results if r is not None]

    def languages(self, contents: Sequence[str]) -> TranscriptLanguages:
        """The language of each message and of the transcript (microseconds: no model run)."""
        return self.detector.transcript([normalize(t) for t in contents], self.supported)

    async def transcript(
        self, contents: Sequence[str], roles: Sequence[str] | None = None
    ) -> TranscriptScore:
        """Each message read after the turns before it; the transcript is their union."""
        clean = [normalize(t) for t in contents]  # once: each is also a later one's context
        messages = await self._score(clean, self.classifier.encoder.contexts(clean, roles))
        return self.classifier.aggregate(messages)
