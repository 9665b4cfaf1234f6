"""The engine: cache by hash, shared batched runs, bounded queue (503), context."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.artifact import ModelArtifact
from service.batching import MicroBatcher, Overloaded
from service.cache import ScoreCache, cache_key
from service.classifier import Classifier
from service.engine import ScoringEngine
from service.settings import Settings


@pytest.fixture(scope="module")
def classifier(shipped_model_dir: Path) -> Classifier:
    return Classifier(ModelArtifact.load(shipped_model_dir))


class CountingRun:
    """Wraps a classifier's run to count windows and calls."""

    def __init__(self, clf: Classifier, delay: float = 0.0) -> None:
        self.clf, self.delay, self.calls, self.windows = clf, delay, 0, 0
        self.lock = threading.Lock()

    def __call__(self, seqs: Sequence[Sequence[int]]) -> np.ndarray:
        with self.lock:
            self.calls += 1
            self.windows += len(seqs)
        time.sleep(self.delay)
        return self.clf.run(seqs)


def test_cache_key_is_a_digest_not_text() -> None:
    k = cache_key("m:1", "", "context words", "I have diabetes")
    assert isinstance(k, bytes) and len(k) == 16 and b"diabetes" not in k
    assert k != cache_key("m:2", "", "context words", "I have diabetes")
    assert k != cache_key("m:1", "", "other context", "I have diabetes")
    assert k != cache_key("m:1", "key-b", "context words", "I have diabetes")  # per API key


def test_lru_is_bounded() -> None:
    c: ScoreCache[int] = ScoreCache(2)
    c.put(b"a", 1)
    c.put(b"b", 2)
    c.get(b"a")
    c.put(b"c", 3)
    assert c.get(b"b") is None and c.get(b"a") == 1 and len(c) == 2


def test_resent_conversation_pays_only_for_the_new_message(classifier: Classifier) -> None:
    async def go() -> tuple[int, int, list[dict[str, float]], list[dict[str, float]]]:
        engine = ScoringEngine(classifier)
        counter = CountingRun(classifier)
        engine.batcher._run = counter
        engine.start()
        convo = [f"message number {i} about planning a trip to the coast" for i in range(20)]
        first = await engine.transcript(convo)
        before = counter.windows
        second = await engine.transcript([*convo, "I was diagnosed with type 2 diabetes"])
        await engine.stop()
        return (
            before,
            counter.windows - before,
            [m.scores for m in first.messages],
            [m.scores for m in second.messages[:20]],
        )

    before, extra, first, again = asyncio.run(go())
    assert before == 20 and extra == 1
    assert first == again


def test_concurrent_requests_share_model_runs(classifier: Classifier) -> None:
    async def go() -> CountingRun:
        engine = ScoringEngine(classifier, cache_entries=0, wait_ms=20)
        counter = CountingRun(classifier)
        engine.batcher._run = counter
        engine.start()
        await asyncio.gather(*(engine.score([f"text {i} about gardening"]) for i in range(16)))
        await engine.stop()
        return counter

    counter = asyncio.run(go())
    assert counter.windows == 16
    assert counter.calls < 16  # coalesced


def test_full_queue_refuses_at_once(classifier: Classifier) -> None:
    async def go() -> tuple[int, int]:
        batcher = MicroBatcher(CountingRun(classifier, delay=0.3), queue_windows=4, wait_ms=0)
        batcher.start()
        seq = classifier.encode_items(["hello there"])[0]
        first = asyncio.ensure_future(batcher.submit(seq * 4))
        await asyncio.sleep(0.05)
        refused = 0
        try:
            await batcher.submit(seq)
        except Overloaded:
            refused += 1
        await first
        ok = len(await batcher.submit(seq))  # accepted again once the queue drains
        await batcher.stop()
        return refused, ok

    assert asyncio.run(go()) == (1, 1)


def test_a_request_that_can_never_fit_is_413_not_retry(shipped_model_dir: Path) -> None:
    """Two windows against a queue of one: on an idle server, every time, a 4xx naming the
    bound (a 503 would tell the client to retry something that can never pass)."""
    settings = Settings(model_dir=shipped_model_dir, auth_required=False, queue_max_windows=1)
    with TestClient(create_app(settings)) as c:
        body = {
            "messages": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
        }
        for _ in range(2):
            r = c.post("/v1/classify", json=body)
            assert r.status_code == 413
            assert r.json()["code"] == "limit_exceeded"
            assert r.json()["limit"] == {"name": "max_request_windows", "value": 1}
        one = {"messages": [{"role": "user", "content": "one"}]}
        assert c.post("/v1/classify", json=one).status_code == 200


def test_a_batch_counts_all_its_windows(shipped_model_dir: Path) -> None:
    """Each transcript of a batch fits the bound; together they do not: refused whole, before
    any model run."""
    settings = Settings(model_dir=shipped_model_dir, auth_required=False, max_request_windows=4)
    with TestClient(create_app(settings)) as c:
        engine = c.app.state.engine  # type: ignore[attr-defined]
        runs = engine.batcher.stats.runs
        batch = {
            "transcripts": [
                {"messages": [{"role": "user", "content": f"message {i} of {k}"} for i in range(3)]}
                for k in range(2)
            ]
        }
        r = c.post("/v1/classify", json=batch)
        assert r.status_code == 413 and r.json()["limit"]["name"] == "max_request_windows"
        assert engine.batcher.stats.runs == runs


DAD = {"role": "user", "content": "My dad was just diagnosed with type 2 diabetes."}
ME_TOO = {"role": "user", "content": "me too, since 2019"}


def test_context_is_read_and_does_not_make_everything_sensitive(client: TestClient) -> None:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    if not engine.context_chars:
        pytest.skip("the served model reads messages alone (context_chars = 0)")
    out = client.post("/v1/classify", json={"messages": [DAD, ME_TOO]}).json()
    alone = client.post("/v1/classify", json={"messages": [ME_TOO]}).json()
    assert out["messages"][0]["flags"]["health"] is True
    assert alone["messages"][0]["flags"]["health"] is False
    # the reply is read differently after the disclosure than alone
    assert out["messages"][1]["scores"]["health"] > alone["messages"][0]["scores"]["health"]
    # and an unrelated follow-up is not flagged just for following a sensitive message
    after = client.post(
        "/v1/classify",
        json={
            "messages": [
                DAD,
                {"role": "user", "content": "thanks! now what's the weather tomorrow in Leeds?"},
            ]
        },
    ).json()
    assert after["messages"][1]["sensitive"] is False


def test_context_makes_a_reply_sensitive(client: TestClient) -> None:
    """Read after the turn before it, "me too, since 2019" is the user's own diabetes (1.1.0
    flagged it; 1.2.0 to 1.4.0, which read role-marked turns, did not: 1.4.0 0.38; 1.5.0
    1.00)."""
    out = client.post("/v1/classify", json={"messages": [DAD, ME_TOO]}).json()
    assert out["messages"][1]["flags"]["health"] is True


def test_model_calls_are_bounded_in_rows_and_padded_tokens(classifier: Classifier) -> None:
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(3, 129, size=300)] + [128] * 5 + [4] * 40
    seqs = [[5] * n for n in lengths]
    calls = classifier.batches(seqs)
    assert sorted(i for c in calls for i in c) == list(range(len(seqs)))  # each once
    for c in calls:
        width = max(lengths[i] for i in c)
        assert len(c) <= classifier.batch_size
        assert len(c) == 1 or len(c) * width <= classifier.batch_cells
        assert [lengths[i] for i in c] == sorted(lengths[i] for i in c)
    # short sequences share calls: far fewer calls than sequences
    assert len(calls) < len(seqs) / 4
    # the cut changes nothing but int8 batch effects: one row per call gives the same decisions
    texts = ["I was diagnosed with diabetes", "Which party should I vote for?", "nice boots"] * 6
    windows = [w for ws in classifier.encode_items(texts) for w in ws]
    alone = Classifier(classifier.artifact, batch_size=1)
    a, b = classifier.run(windows), alone.run(windows)
    assert np.abs(a - b).max() < 0.02
    assert ((a >= classifier.thresholds) == (b >= classifier.thresholds)).all()


def test_model_calls_are_cut_where_they_cost_least(classifier: Classifier) -> None:
    """The cut is the cheapest split of the sorted sequences into calls (padded tokens plus a
    fixed cost per call), checked against every split of small random sets."""
    from itertools import combinations

    def cost(calls: list[list[int]], lengths: list[int]) -> float:
        return sum(classifier.CALL_COST_TOKENS + len(c) * max(lengths[i] for i in c) for c in calls)

    rng = np.random.default_rng(1)
    for _ in range(30):
        lengths = sorted(int(x) for x in rng.integers(3, 129, size=int(rng.integers(1, 9))))
        calls = classifier.batches([[5] * n for n in lengths])
        n = len(lengths)
        best = float("inf")
        for k in range(n):
            for cuts in combinations(range(1, n), k):
                bounds = [0, *cuts, n]
                split = [list(range(a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]
                if all(
                    len(c) == 1 or len(c) * lengths[c[-1]] <= classifier.batch_cells for c in split
                ):
                    best = min(best, cost(split, lengths))
        assert cost(calls, lengths) == best
    # a long window does not pad short ones to its width, and equal short ones share a call
    calls = classifier.batches([[5] * 6] * 10 + [[5] * 120])
    assert sorted(map(len, calls)) == [1, 10]


def test_transcripts_scored_together_match_one_by_one(classifier: Classifier) -> None:
    transcripts: list[tuple[list[str], list[str] | None]] = [
        (["My dad was just diagnosed with type 2 diabetes.", "me too, since 2019"], None),
        (["Recommend hiking boots", "Sure: what terrain?", "rocky trails"], None),
        (["I pray five times a day", ""], ["user", "user"]),
    ]
    together = classifier.score_transcripts(transcripts)
    assert len(together) == len(transcripts)
    for (contents, roles), got in zip(transcripts, together, strict=True):
        alone = classifier.score_transcript(contents, roles)
        assert len(got.messages) == len(contents)
        assert got.flags == alone.flags
        # int8 scales activations per model run, so the company a message is run in moves
        # its score a little; a calibration temperature under 1 (1.5.0: 0.45-0.51) widens
        # that in the middle of the range (1.5.0: 0.124 together, 0.136 alone)
        for lab in classifier.labels:
            assert got.scores[lab] == pytest.approx(alone.scores[lab], abs=2e-2)


def test_model_calls_run_at_once_up_to_model_runs() -> None:
    """Two batches ready at once run on two threads together: each call waits at a barrier
    that only opens when both are inside (with one call at a time it would break)."""
    barrier = threading.Barrier(2, timeout=5)

    def run(seqs: Sequence[Sequence[int]]) -> np.ndarray:
        barrier.wait()
        return np.zeros((len(seqs), 3), np.float32)

    async def main() -> None:
        batcher = MicroBatcher(run, max_windows=2, wait_ms=0, runs=2)
        batcher.start()
        try:
            out = await asyncio.gather(batcher.submit([[1]] * 2), batcher.submit([[2]] * 2))
            assert [o.shape for o in out] == [(2, 3), (2, 3)]
        finally:
            await batcher.stop()

    asyncio.run(main())


def test_one_window_per_model_call_gives_every_window_its_score_alone(
    classifier: Classifier,
) -> None:
    """`ST_BATCH_MAX_WINDOWS=1`: concurrent requests never share a model call, nor do the
    windows of one long request, so under any load each window gets exactly the score it gets
    alone (with shared calls the int8 model's per-call activation scale moves a few; README,
    "Batch-mates")."""
    texts = [
        "I was diagnosed with type 2 diabetes last month.",
        "Recommend hiking boots for rocky trails",
        "نصلي الجمعة في المسجد القريب من البيت",
        "Qui devrait gagner les prochaines élections ? " * 30,  # several windows
        "ok",
    ]
    requests = classifier.encode_items(texts)
    assert max(len(r) for r in requests) > 1

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(classifier.run, max_windows=1, wait_ms=5, runs=2)
        batcher.start()
        try:
            with batcher.caller(), batcher.caller():
                return await asyncio.gather(*(batcher.submit(r) for r in requests * 3))
        finally:
            await batcher.stop()

    got = asyncio.run(main())
    for windows, probs in zip(requests * 3, got, strict=True):
        alone = np.concatenate([classifier.run([w]) for w in windows])
        assert np.array_equal(probs, alone)


def test_one_big_request_runs_its_parts_side_by_side() -> None:
    """One request of many windows is cut into a part per model run, run at once on the
    workers (each call waits at a barrier that only opens with two calls inside: queued one
    part after the other, or both parts in one batch, it breaks), and its rows come back in
    order."""
    barrier = threading.Barrier(2, timeout=5)
    calls: list[int] = []

    def run(seqs: Sequence[Sequence[int]]) -> np.ndarray:
        calls.append(len(seqs))
        barrier.wait()
        return np.array([[s[0], 0, 0] for s in seqs], np.float32)

    async def main() -> np.ndarray:
        batcher = MicroBatcher(run, max_windows=64, wait_ms=50, runs=2)
        batcher.start()
        try:
            with batcher.caller():
                return await batcher.submit([[i] for i in range(85)])
        finally:
            await batcher.stop()

    out = asyncio.run(main())
    assert sorted(calls) == [42, 43]
    assert out[:, 0].tolist() == list(range(85))


def test_a_lone_request_does_not_wait_for_company() -> None:
    """With every request in the engine already in the batch, the batch runs at once instead of
    waiting out wait_ms for more work (here 5 s)."""

    async def main() -> float:
        batcher = MicroBatcher(lambda s: np.zeros((len(s), 3), np.float32), wait_ms=5000)
        batcher.start()
        try:
            with batcher.caller():
                started = time.monotonic()
                await batcher.submit([[1, 2, 3]])
                return time.monotonic() - started
        finally:
            await batcher.stop()

    assert asyncio.run(main()) < 2.5


@pytest.mark.parametrize("inline_chars", [0, 10_000])
def test_a_reading_is_the_scores_and_languages_wherever_it_is_prepared(
    classifier: Classifier, inline_chars: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small requests are prepared on the event loop, big ones in a worker thread: the same
    scores and the same languages either way, and the same as asking for each apart."""
    import service.engine as engine_mod

    monkeypatch.setattr(engine_mod, "INLINE_CHARS", inline_chars)
    threads: list[str] = []
    prepare = ScoringEngine._prepare_transcripts

    def spy(self: ScoringEngine, *a: object, **k: object) -> object:
        threads.append(threading.current_thread().name)
        return prepare(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(ScoringEngine, "_prepare_transcripts", spy)
    convo = ["I was diagnosed with type 2 diabetes last year", "Je cherche un agenda papier"]

    async def go() -> tuple[object, object, object, object]:
        engine = ScoringEngine(classifier, cache_entries=0)
        engine.start()
        [reading] = await engine.read([(convo, ["user", "user"])])
        apart = await engine.transcript(convo, ["user", "user"])
        await engine.stop()
        return reading.score, reading.languages, apart, engine.languages(convo)

    score, langs, apart, apart_langs = asyncio.run(go())
    assert [m.scores for m in score.messages] == [m.scores for m in apart.messages]  # type: ignore[attr-defined]
    assert langs == apart_langs
    assert [lg.language for lg in langs.messages] == ["en", "fr"]  # type: ignore[attr-defined]
    on_loop = threading.main_thread().name
    assert (threads[0] == on_loop) == (inline_chars > 0), threads


def test_a_call_with_the_machine_to_itself_runs_on_the_lone_function() -> None:
    """A batch that starts with no other model call in flight and nothing queued goes to
    `run_alone` (every core); while one is in flight, the next goes to `run`."""
    used: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def run(seqs: Sequence[Sequence[int]]) -> np.ndarray:
        used.append("shared")
        return np.zeros((len(seqs), 3), np.float32)

    def run_alone(seqs: Sequence[Sequence[int]]) -> np.ndarray:
        used.append("alone")
        inside.set()
        release.wait(5)
        return np.ones((len(seqs), 3), np.float32)

    async def main() -> None:
        batcher = MicroBatcher(run, max_windows=1, wait_ms=0, runs=2, run_alone=run_alone)
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit([[1]]))
            await asyncio.to_thread(inside.wait, 5)  # the lone call is in flight
            second = await batcher.submit([[2]])  # so this one shares the cores
            release.set()
            assert (await first).tolist() == [[1, 1, 1]] and second.tolist() == [[0, 0, 0]]
            again = await batcher.submit([[3]])  # alone again
            assert again.tolist() == [[1, 1, 1]]
        finally:
            release.set()
            await batcher.stop()

    asyncio.run(main())
    assert used == ["alone", "shared", "alone"]


def test_a_lone_request_starts_its_own_call() -> None:
    """The only request in the engine, with nothing in flight or queued, runs on `run_alone`
    without the queue and the workers (none are started here); a second request that
    arrives while it runs is queued for a worker and shares the cores; a call whose caller
    has gone counts as in flight until it ends."""
    used: list[str] = []
    inside, release = threading.Event(), threading.Event()

    def run(seqs: Sequence[Sequence[int]]) -> np.ndarray:
        used.append("shared")
        return np.zeros((len(seqs), 3), np.float32)

    def run_alone(seqs: Sequence[Sequence[int]]) -> np.ndarray:
        used.append("alone")
        inside.set()
        release.wait(5)
        return np.ones((len(seqs), 3), np.float32)

    async def main() -> None:
        batcher = MicroBatcher(run, wait_ms=0, runs=2, run_alone=run_alone)
        with batcher.caller():  # workers not started: only the lone path can answer
            assert (await asyncio.wait_for(_released(batcher, release), 5)).tolist() == [[1] * 3]
        assert batcher.stats.alone_runs == 1 and batcher.stats.runs == 1
        assert batcher.stats.queued_windows == 0
        batcher.start()
        try:
            inside.clear()
            release.clear()
            with batcher.caller():
                first = asyncio.ensure_future(batcher.submit([[1]]))
                await asyncio.to_thread(inside.wait, 5)
                with batcher.caller():  # arrives while the lone call runs: queued, shared
                    second = await batcher.submit([[2]])
                release.set()
                assert (await first).tolist() == [[1] * 3] and second.tolist() == [[0] * 3]
            # a caller that goes: its call still holds the cores until it ends
            inside.clear()
            release.clear()
            with batcher.caller():
                gone = asyncio.ensure_future(batcher.submit([[4]]))
                await asyncio.to_thread(inside.wait, 5)
                gone.cancel()
                await asyncio.gather(gone, return_exceptions=True)
            assert batcher._in_flight == 1
            release.set()
            for _ in range(100):
                if batcher._in_flight == 0:
                    break
                await asyncio.sleep(0.01)
            assert batcher._in_flight == 0 and batcher.stats.alone_runs == 3
        finally:
            release.set()
            await batcher.stop()

    asyncio.run(main())
    assert used == ["alone", "alone", "shared", "alone"]


async def _released(batcher: MicroBatcher, release: threading.Event) -> np.ndarray:
    task = asyncio.ensure_future(batcher.submit([[1]]))
    await asyncio.sleep(0.05)
    release.set()
    return await task


def test_the_lone_session_scores_as_the_shared_one(shipped_model_dir: Path) -> None:
    """The session over every core is the same graph: the same probabilities as the
    single-threaded one, for the same windows."""
    clf = Classifier(ModelArtifact.load(shipped_model_dir), threads=1, lone_threads=2)
    assert clf.lone_session is not None
    seqs = [w for t in ("I have asthma", "vote Labour?", "a quiet walk") for w in clf.windows(t)]
    np.testing.assert_allclose(clf.run_alone(seqs), clf.run(seqs), atol=1e-5)


def test_the_engine_runs_the_graph_without_onnxruntimes_skip_layer_norm_fusion(
    shipped_model_dir: Path, tmp_path: Path
) -> None:
    """onnxruntime's own optimisation of the shipped graph fuses each residual Add and its
    LayerNormalization into SkipLayerNormalization, a slower CPU kernel; the engine's sessions
    keep them apart (and every other optimisation)."""
    import onnx
    import onnxruntime as ort

    from service.classifier import open_session

    def ops(path: Path) -> set[str]:
        return {n.op_type for n in onnx.load(str(path)).graph.node}

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "default.onnx")
    ort.InferenceSession(str(shipped_model_dir / "model.onnx"), opts)
    assert "SkipLayerNormalization" in ops(tmp_path / "default.onnx")
    open_session(str(shipped_model_dir / "model.onnx"), 1, str(tmp_path / "engine.onnx"))
    engine = ops(tmp_path / "engine.onnx")
    assert "SkipLayerNormalization" not in engine and "LayerNormalization" in engine
    assert "DynamicQuantizeMatMul" in engine  # the other fusions still ran


def test_lone_calls_get_a_wider_session_only_when_it_is_wider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    assert Settings(auth_required=False).lone_call_threads() == 4  # 5 calls of 1 thread each
    assert Settings(auth_required=False, lone_threads=2).lone_call_threads() == 2
    assert Settings(auth_required=False, threads=4, model_runs=1).lone_call_threads() == 0
    assert Settings(auth_required=False, lone_threads=1).lone_call_threads() == 0


def test_one_model_call_more_than_the_cores_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """A core has the next call to run while the loop hands the last one's answers back: one
    single-threaded call per core and one more, unless the settings say otherwise."""
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1})
    assert Settings(auth_required=False).model_parallelism() == (3, 1)
    assert Settings(auth_required=False, model_runs=2).model_parallelism() == (2, 1)
    assert Settings(auth_required=False, model_runs=1).model_parallelism() == (1, 2)
    assert Settings(auth_required=False, threads=2).model_parallelism() == (3, 2)
