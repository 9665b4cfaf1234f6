"""Coalesces concurrent requests into shared model runs, with a bounded queue.

Every request submits its token windows; one worker takes what is queued (up to a number of
windows and of tokens, waiting at most a few milliseconds for more), runs the model once over
all of it, bucketed by length, and hands each request its rows. When the queue is full, a new
request is refused at once (503) instead of waiting without bound. A lone request (the only
one in the engine, with nothing in flight or queued) starts its own call on every core, without
the hops through the queue and a worker.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from opentelemetry import trace

FloatArray = npt.NDArray[np.float32]
RunFn = Callable[[Sequence[Sequence[int]]], FloatArray]


# Windows below which a request is not cut for the model runs: a second core gains little on
# a few windows, and each part costs a batch slot and a thread hop.
MIN_PART = 16


class Overloaded(Exception):
    """The work queue is full."""


@dataclass
class _Job:
    sequences: list[list[int]]
    future: asyncio.Future[FloatArray]
    owner: int = 0  # the submission it is part of: one batch takes one part of each
    tokens: int = field(init=False)
    queued_ns: int = field(init=False)
    parent: trace.SpanContext = field(init=False)  # the request's span, for tracing

    def __post_init__(self) -> None:
        self.tokens = sum(len(s) for s in self.sequences)
        self.queued_ns = time.time_ns()
        self.parent = trace.get_current_span().get_span_context()


@dataclass
class BatchStats:
    """Counters the metrics read."""

    runs: int = 0
    alone_runs: int = 0  # of them, calls that started with no other in flight (see run_alone)
    windows: int = 0
    last_batch: int = 0
    queued_windows: int = 0
    dropped_windows: int = 0  # queued by callers that had gone, never run


class MicroBatcher:
    """Dynamic batching in front of a blocking `run(sequences) -> probabilities` function."""

    def __init__(
        self,
        run: RunFn,
        max_windows: int = 64,
        max_tokens: int = 8192,
        wait_ms: float = 2.0,
        queue_windows: int = 4096,
        on_batch: Callable[[int, float], None] | None = None,
        tracer: trace.Tracer | None = None,
        runs: int = 1,
        run_alone: RunFn | None = None,
    ) -> None:
        self._run = run
        # for a batch that starts with no other model call in flight and nothing queued (a
        # lone request at low load): a function that may spend every core on it
        self._run_alone = run_alone
        self._in_flight = 0
        self.runs = runs  # model calls at once, each collected and run by its own worker
        self.tracer = tracer or trace.NoOpTracer()
        self.max_windows, self.max_tokens = max_windows, max_tokens
        self.wait_s, self.queue_windows = wait_ms / 1000.0, queue_windows
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        # requests inside the engine (preparing or waiting), when the engine counts them: a
        # batch waits for more work only while some of them are not in it yet
        self.callers = 0
        self._on_batch = on_batch
        self.stats = BatchStats()
        # the thread of a lone request's call that the request starts itself (`_run_now`)
        self._lone_pool = ThreadPoolExecutor(1, thread_name_prefix="st-lone") if run_alone else None

    def start(self) -> None:
        """Start the workers: while one waits for its model call, the next collects a batch
        and runs it, so that `runs` calls proceed at once on their own threads."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._worker()) for _ in range(self.runs)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        if self._lone_pool is not None:
            self._lone_pool.shutdown(wait=False)

    async def submit(self, sequences: list[list[int]]) -> FloatArray:
        """Probabilities for these windows, computed in shared runs; Overloaded if full.

        All the windows are counted against the queue at once. A big request is cut into
        parts of at most `max_windows`, and of about an equal share for each of the `runs`
        workers (a request of up to MIN_PART windows stays whole), and keeps at most `runs`
        parts queued at a time: its parts run side by side on the workers (one request of
        many transcripts uses every core, as many small requests do), and other requests'
        work still interleaves with it. A caller that is cancelled (its client has gone)
        leaves nothing behind: what it queued is dropped before it runs.
        """
        if not sequences:
            return np.zeros((0, 0), np.float32)
        n = len(sequences)
        if self.stats.queued_windows + n > self.queue_windows:
            raise Overloaded
        if self._alone_now(sequences):
            return await self._run_now(sequences)
        loop = asyncio.get_running_loop()
        self.stats.queued_windows += n
        size = min(self.max_windows, max(MIN_PART, -(-n // self.runs)))
        owner = id(sequences)
        parts: list[FloatArray] = []
        pos = 0
        queued: deque[_Job] = deque()
        try:
            while pos < n or queued:
                while pos < n and len(queued) < self.runs:
                    job = _Job(sequences[pos : pos + size], loop.create_future(), owner)
                    pos += len(job.sequences)
                    self._queue.put_nowait(job)  # from here the worker accounts for its windows
                    queued.append(job)
                parts.append(await queued[0].future)
                queued.popleft()
        except BaseException:
            for job in queued:
                if not job.future.done():
                    job.future.cancel()  # the worker drops it when it comes to it
            self.stats.queued_windows -= n - pos  # the part never queued
            raise
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _alone_now(self, sequences: list[list[int]]) -> bool:
        """Whether these windows are the whole of a lone request's work: the only request in
        the engine, no model call in flight, nothing queued, and within one batch's bounds.
        A worker would take them alone, at once, to `run_alone`; the request starts that call
        itself (`_run_now`) and saves the hops through the queue and a worker."""
        return (
            self._lone_pool is not None
            and self.callers == 1
            and self._in_flight == 0
            and self._queue.empty()
            and len(sequences) <= self.max_windows
            and sum(map(len, sequences)) <= self.max_tokens
        )

    async def _run_now(self, sequences: list[list[int]]) -> FloatArray:
        """A lone request's model call, on `run_alone`, counted and traced as a worker's."""
        assert self._lone_pool is not None and self._run_alone is not None
        loop = asyncio.get_running_loop()
        parent = trace.get_current_span().get_span_context()
        now = time.time_ns()
        wait = self.tracer.start_span(
            "st.queue_wait",
            trace.set_span_in_context(trace.NonRecordingSpan(parent)),
            start_time=now,
        )
        wait.set_attribute("st.windows", len(sequences))
        wait.end(end_time=now)
        span = self.tracer.start_span(
            "st.model_run", links=[trace.Link(parent)] if parent.is_valid else []
        )
        span.set_attribute("st.windows", len(sequences))
        span.set_attribute("st.requests", 1)
        span.set_attribute("st.alone", True)
        started = time.perf_counter()
        self._in_flight += 1
        call = self._lone_pool.submit(self._run_alone, sequences)

        def finished() -> None:
            self._in_flight -= 1
            if not call.cancelled():  # it ran (a call cancelled before its start did not)
                self.stats.alone_runs += 1
                self._count(len(sequences), started)
            span.end()

        try:
            return await asyncio.wrap_future(call)
        finally:
            if call.done():
                finished()
            else:  # the caller has gone; the call runs on, and counts as in flight, till done
                call.add_done_callback(lambda f: loop.call_soon_threadsafe(finished))

    def _count(self, windows: int, started: float) -> None:
        self.stats.runs += 1
        self.stats.windows += windows
        self.stats.last_batch = windows
        if self._on_batch:
            self._on_batch(windows, time.perf_counter() - started)

    def _next_is_part_of(self, jobs: list[_Job]) -> bool:
        """Whether the next queued job is another part of a submission in `jobs` (it belongs
        on another worker, so that the parts run side by side)."""
        waiting: deque[_Job] = self._queue._queue  # type: ignore[attr-defined]
        return bool(waiting) and waiting[0].owner in {j.owner for j in jobs}

    async def _next(self, timeout: float | None = None) -> _Job:
        """The next job whose caller still waits; cancelled ones are dropped unrun."""
        while True:
            if timeout is None:
                job = await self._queue.get()
            else:
                job = await asyncio.wait_for(self._queue.get(), timeout)
            if not job.future.done():
                return job
            self.stats.queued_windows -= len(job.sequences)
            self.stats.dropped_windows += len(job.sequences)

    @contextmanager
    def caller(self) -> Iterator[None]:
        """Count a request from its arrival (before it is prepared) to its answer."""
        self.callers += 1
        try:
            yield
        finally:
            self.callers -= 1

    async def _collect(self) -> list[_Job]:
        jobs = [await self._next()]
        windows, tokens = len(jobs[0].sequences), jobs[0].tokens
        deadline = time.monotonic() + self.wait_s
        while windows < self.max_windows and tokens < self.max_tokens:
            if 0 < self.callers <= len(jobs) and self._queue.empty():
                break  # every request there is is in this batch: waiting only adds latency
            if self.runs > 1 and self._next_is_part_of(jobs):
                break
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                job = await self._next(timeout)
            except TimeoutError:
                break
            jobs.append(job)
            windows += len(job.sequences)
            tokens += job.tokens
        return jobs

    async def _worker(self) -> None:
        while True:
            jobs = await self._collect()
            flat = [s for j in jobs for s in j.sequences]
            started = time.perf_counter()
            picked = time.time_ns()
            for j in jobs:  # each request's wait, under its own span
                parent = trace.set_span_in_context(trace.NonRecordingSpan(j.parent))
                wait = self.tracer.start_span("st.queue_wait", parent, start_time=j.queued_ns)
                wait.set_attribute("st.windows", len(j.sequences))
                wait.end(end_time=picked)
            run_span = self.tracer.start_span(
                "st.model_run", links=[trace.Link(j.parent) for j in jobs if j.parent.is_valid]
            )
            run_span.set_attribute("st.windows", len(flat))
            run_span.set_attribute("st.requests", len(jobs))
            alone = self._in_flight == 0 and self._queue.empty()
            run_span.set_attribute("st.alone", alone)
            self._in_flight += 1
            try:
                run = self._run_alone if alone and self._run_alone else self._run
                probs = await asyncio.to_thread(run, flat)
            except Exception as exc:  # the model failed: every waiting request gets an error
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(exc)
            else:
                pos = 0
                for j in jobs:
                    n = len(j.sequences)
                    if not j.future.done():
                        j.future.set_result(probs[pos : pos + n])
                    pos += n
            finally:
                self._in_flight -= 1
                self.stats.alone_runs += alone
                run_span.end()
                self.stats.queued_windows -= len(flat)
                self._count(len(flat), started)
