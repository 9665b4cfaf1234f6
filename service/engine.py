"""The async scoring front shared by the API routes: cache, then shared batched model runs.

A request is prepared whole before any of it is queued: its texts are normalised, read after
their turns, looked up in the cache, tokenised into windows and (when asked) their languages
identified, and its windows are counted. A small request (up to INLINE_CHARS characters) is
prepared on the event loop: a few hundred microseconds, less than the hop to a worker thread
and back. A bigger one is prepared in a worker thread, so that the loop keeps answering
(/healthz among others) while it is tokenised. A request that can never fit is
refused (RequestTooLarge) before it costs any model time; one that fits waits for one or a few
shared model runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from opentelemetry import trace

from service.batching import MicroBatcher
from service.cache import ScoreCache, cache_key
from service.classifier import Classifier, TextScore, TranscriptScore
from service.language import LanguageDetector, TranscriptLanguages
from service.text import normalize

INLINE_CHARS = 2_000  # characters of a request (all its messages) prepared on the event loop


class RequestTooLarge(Exception):
    """A request needs more token windows than one request may use: it can never fit."""

    def __init__(self, windows: int, limit: int) -> None:
        super().__init__(f"at least {windows} windows, over the bound of {limit}")
        self.windows, self.limit = windows, limit


@dataclass(frozen=True)
class Reading:
    """One transcript read: its scores and its languages."""

    score: TranscriptScore
    languages: TranscriptLanguages


@dataclass
class _Prepared:
    """Messages of a request, each with its cached score or the windows still to run."""

    keys: list[bytes]
    results: list[TextScore | None]
    todo: list[int]
    windows: list[list[list[int]]]

    @property
    def count(self) -> int:
        return sum(len(w) for w in self.windows)


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
        max_request_windows: int | None = None,
        tracer: trace.Tracer | None = None,
        model_runs: int = 1,
    ) -> None:
        self.classifier = classifier
        self.cache: ScoreCache[TextScore] = ScoreCache(cache_entries)
        self.tracer = tracer or trace.NoOpTracer()
        self.batcher = MicroBatcher(
            classifier.run,
            max_windows,
            max_tokens,
            wait_ms,
            queue_windows,
            on_batch,
            self.tracer,
            model_runs,
            classifier.run_alone if classifier.lone_session is not None else None,
        )
        self.max_request_windows = min(max_request_windows or queue_windows, queue_windows)
        self.version = f"{classifier.artifact.name}:{classifier.artifact.version}"
        self.detector = LanguageDetector(cache_entries=cache_entries)
        self.supported = classifier.artifact.supported_languages
        self.context_chars = classifier.encoder.context_chars
        self.context_turns = classifier.encoder.context_turns

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    # -- preparing (in a worker thread: pure CPU, no model) ---------------------------------
    def _prepare(self, clean: Sequence[str], ctx: Sequence[str], tenant: str) -> _Prepared:
        keys = [cache_key(self.version, tenant, c, t) for t, c in zip(clean, ctx, strict=True)]
        results: list[TextScore | None] = [self.cache.get(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        windows: list[list[list[int]]] = []
        count = 0
        for i in todo:  # stops as soon as the bound is passed: a refusal costs no more
            ws = self.classifier.windows(clean[i], ctx[i]) if clean[i] else []
            count += len(ws)
            if count > self.max_request_windows:
                raise RequestTooLarge(count, self.max_request_windows)
            windows.append(ws)
        return _Prepared(keys, results, todo, windows)

    def _prepare_texts(
        self, texts: Sequence[str], contexts: Sequence[str] | None, tenant: str
    ) -> _Prepared:
        clean = [normalize(t) for t in texts]
        ctx = [normalize(c) if c else "" for c in (contexts or [""] * len(texts))]
        if not self.context_turns:  # an older model reads the tail of the turn before
            ctx = [c[-self.context_chars :] if self.context_chars else "" for c in ctx]
        return self._prepare(clean, ctx, tenant)

    def _prepare_transcripts(
        self,
        items: Sequence[tuple[Sequence[str], Sequence[str] | None]],
        tenant: str,
        languages: bool = False,
    ) -> tuple[_Prepared, list[TranscriptLanguages]]:
        clean: list[str] = []
        ctx: list[str] = []
        langs: list[TranscriptLanguages] = []
        for contents, roles in items:
            texts = [normalize(t) for t in contents]  # once: each is also a later one's context
            clean += texts
            ctx += self.classifier.encoder.contexts(texts, roles)
            if languages:
                langs.append(self.detector.transcript(texts, self.supported, tenant))
        return self._prepare(clean, ctx, tenant), langs

    # -- running ------------------------------------------------------------------------------
    async def _run(self, prep: _Prepared) -> list[TextScore]:
        if prep.count > self.max_request_windows:
            raise RequestTooLarge(prep.count, self.max_request_windows)
        if prep.todo:
            flat = [w for ws in prep.windows for w in ws]
            probs = (
                await self.batcher.submit(flat)
                if flat
                else np.zeros((0, len(self.classifier.labels)), np.float32)
            )
            for i, score in zip(
                prep.todo, self.classifier.combine(prep.windows, probs), strict=True
            ):
                prep.results[i] = score
                self.cache.put(prep.keys[i], score)
        return [r for r in prep.results if r is not None]

    async def score(
        self, texts: Sequence[str], contexts: Sequence[str] | None = None, tenant: str = ""
    ) -> list[TextScore]:
        """Scores of texts, each read after its context; cached messages cost no model time.
        `tenant` scopes the cache (one API key never sees another's cached messages)."""
        with self.batcher.caller():
            with self.tracer.start_as_current_span("st.prepare") as span:
                if sum(map(len, texts)) + sum(map(len, contexts or ())) <= INLINE_CHARS:
                    prep = self._prepare_texts(texts, contexts, tenant)
                else:
                    prep = await asyncio.to_thread(self._prepare_texts, texts, contexts, tenant)
                span.set_attribute("st.messages", len(texts))
                span.set_attribute("st.windows", prep.count)
            return await self._run(prep)

    async def _read(
        self,
        items: Sequence[tuple[Sequence[str], Sequence[str] | None]],
        tenant: str,
        languages: bool,
    ) -> tuple[list[TranscriptScore], list[TranscriptLanguages]]:
        with self.batcher.caller():
            with self.tracer.start_as_current_span("st.prepare") as span:
                size = sum(len(t) for contents, _ in items for t in contents)
                if size <= INLINE_CHARS:
                    prep, langs = self._prepare_transcripts(items, tenant, languages)
                else:
                    prep, langs = await asyncio.to_thread(
                        self._prepare_transcripts, items, tenant, languages
                    )
                span.set_attribute("st.messages", len(prep.keys))
                span.set_attribute("st.windows", prep.count)
            scores = await self._run(prep)
        out, pos = [], 0
        for contents, _ in items:
            out.append(self.classifier.aggregate(scores[pos : pos + len(contents)]))
            pos += len(contents)
        return out, langs

    async def transcripts(
        self, items: Sequence[tuple[Sequence[str], Sequence[str] | None]], tenant: str = ""
    ) -> list[TranscriptScore]:
        """Several transcripts (contents, roles) scored together: their windows are counted as
        one request and share the model runs. Each message is read after the turns before it;
        a transcript is the union of its messages."""
        return (await self._read(items, tenant, languages=False))[0]

    async def read(
        self, items: Sequence[tuple[Sequence[str], Sequence[str] | None]], tenant: str = ""
    ) -> list[Reading]:
        """Several transcripts scored together as `transcripts` does, each with its languages
        (identified while the request is prepared, not on the way out)."""
        scores, langs = await self._read(items, tenant, languages=True)
        return [Reading(s, g) for s, g in zip(scores, langs, strict=True)]

    async def transcript(
        self, contents: Sequence[str], roles: Sequence[str] | None = None, tenant: str = ""
    ) -> TranscriptScore:
        """One transcript: each message read after the turns before it."""
        return (await self.transcripts([(contents, roles)], tenant))[0]

    def languages(self, contents: Sequence[str], tenant: str = "") -> TranscriptLanguages:
        """The language of each message and of the transcript (microseconds: no model run;
        messages seen before, by this tenant, are not identified again)."""
        return self.detector.transcript([normalize(t) for t in contents], self.supported, tenant)
