"""The scoring core: tokenise, run the ONNX model, turn logits into per-label decisions.

The REST API, the batch scorer and the distributed job are thin wrappers over this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from service.artifact import ModelArtifact
from service.text import deobfuscated, normalize

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TextScore:
    """Scores of one text: the highest score over its windows, per label."""

    scores: dict[str, float]
    flags: dict[str, bool]
    windows: int
    best_window: dict[str, int]

    @property
    def sensitive(self) -> bool:
        return any(self.flags.values())


@dataclass(frozen=True)
class TranscriptScore:
    """Scores of a transcript: its messages, and per label the highest message score."""

    messages: list[TextScore]
    scores: dict[str, float]
    flags: dict[str, bool]

    @property
    def sensitive(self) -> bool:
        return any(self.flags.values())


Turn = tuple[str, str]  # (role, normalised text) of one message of a transcript


ROLES = ("user", "assistant", "system", "developer", "tool")


def model_role(role: str) -> str:
    """The role as the model reads it in context: developer instructions and tool results are
    neither the user's nor the assistant's words."""
    return role if role in ("user", "assistant") else "system"


def render_context(turns: Sequence[Turn], context_turns: int, context_chars: int) -> str:
    """What the model reads before a message, from the turns before it (oldest first).

    A model made with `context_turns` (from 1.2.0) reads that many turns as "role: text",
    joined by spaces, each cut to its first `context_chars // context_turns` characters (a turn
    names its subject early; a long assistant reply must not push the user's turn out); the
    tokenizer then keeps the most recent tokens that fit. An older model reads the last
    `context_chars` characters of the one message before.
    """
    if not context_chars or not turns:
        return ""
    if context_turns <= 0:
        return turns[-1][1][-context_chars:]
    per_turn = max(16, context_chars // context_turns)
    lines = [f"{role}: {text[:per_turn]}" for role, text in turns[-context_turns:] if text]
    return " ".join(lines)


class TextEncoder:
    """Tokenises a text, alone or after the turns before it, into windows of token ids.

    Training and serving share this class, so the model sees the same ids in both.
    """

    def __init__(
        self,
        tokenizer_json: str,
        max_length: int,
        context_chars: int = 0,
        window_tokens: int = 64,
        context_turns: int = 0,
    ) -> None:
        self.max_length = max_length
        self.context_chars = context_chars
        self.context_turns = context_turns
        self.single = Tokenizer.from_str(tokenizer_json)
        self.single.no_padding()
        self.single.enable_truncation(max_length)
        # A text longer than max_length is cut into short overlapping windows: in a long window
        # a sensitive sentence is diluted by the rest, in a short one it dominates.
        window = max(8, min(window_tokens, max_length))
        self.windowed = Tokenizer.from_str(tokenizer_json)
        self.windowed.no_padding()
        self.windowed.enable_truncation(window, stride=window // 4)
        self.pair = Tokenizer.from_str(tokenizer_json)
        self.pair.no_padding()
        # Several turns of context are cut from the left: the most recent ones are kept.
        self.pair.enable_truncation(
            max_length, strategy="only_second", direction="left" if context_turns else "right"
        )

    def context(self, turns: Sequence[Turn]) -> str:
        """The context this model reads before a message that follows `turns`."""
        return render_context(turns, self.context_turns, self.context_chars)

    def contexts(self, texts: Sequence[str], roles: Sequence[str] | None = None) -> list[str]:
        """The context of each message of a transcript (normalised texts; roles default to
        alternating user and assistant turns, starting with the user)."""
        who = (
            list(roles)
            if roles is not None
            else [("user", "assistant")[i % 2] for i in range(len(texts))]
        )
        turns = list(zip(who, texts, strict=True))
        keep = max(1, self.context_turns)
        return [self.context(turns[max(0, i - keep) : i]) for i in range(len(texts))]

    def encode(self, text: str, context: str = "") -> list[list[int]]:
        """Windows of a normalised text; a text that fits one window is read with its context."""
        enc: Encoding = self.single.encode(text)
        if enc.overflowing:
            long = self.windowed.encode(text)
            return [list(long.ids)] + [list(o.ids) for o in long.overflowing]
        if context and self.context_chars and len(enc.ids) + 8 < self.max_length:
            tail = context if self.context_turns else context[-self.context_chars :]
            return [list(self.pair.encode(text, tail).ids)]
        return [list(enc.ids)]


# onnxruntime graph fusions this engine turns off because they make the model slower on CPU.
# SkipLayerNormFusion folds each residual Add and the LayerNormalization after it into one
# SkipLayerNormalization, whose CPU kernel (onnxruntime 1.32) takes 1.53 ms on a 16 x 40 x 384
# input against 0.26 ms for the Add and LayerNormalization it replaces; with the fusion off the
# shipped model's calls are about 1.14x faster on real text at batch 1 and at small batches
# (`python -m bench.fusions` measures it and the decisions that move, which are a rounding
# effect of dynamic int8: about 1 in 800).
SLOW_FUSIONS = ("SkipLayerNormFusion",)


def open_session(path: str, threads: int, optimized_path: str = "") -> ort.InferenceSession:
    """An onnxruntime CPU session over a model file as the engine runs it: `threads` intra-op
    threads (0 = every core), one inter-op thread, every graph optimisation but SLOW_FUSIONS.
    `optimized_path` also writes the graph as optimised (to inspect what runs)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    return ort.InferenceSession(
        path, opts, providers=["CPUExecutionProvider"], disabled_optimizers=list(SLOW_FUSIONS)
    )


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    return out


class Classifier:
    """Holds one onnxruntime session and one tokenizer; thread-safe for concurrent `run` calls."""

    # What one model call costs beyond its rows, in padded tokens. Set from mean times at batch 1
    # on one core (about 2.6 ms per call over and above 0.2 ms per token); a line through the
    # fastest calls gives 1.1-1.6 ms, 6-8 tokens' worth, and the cut's throughput was the same
    # for any value from 6 to 25 (one run on 2 cores). `bench/engine.py --cut` prints the fit
    # for the shipped model on the machine at hand, and the cut against the greedy one.
    CALL_COST_TOKENS = 13

    def __init__(
        self,
        artifact: ModelArtifact,
        threads: int = 0,
        batch_size: int = 32,
        batch_cells: int = 512,
        lone_threads: int = 0,
    ) -> None:
        self.artifact = artifact
        self.labels = artifact.labels
        self.thresholds = np.array([artifact.thresholds[x] for x in self.labels], np.float32)
        self.batch_size = batch_size
        self.batch_cells = batch_cells
        self.session = self._session(threads)
        # A second session over more cores, for a call that has the machine to itself (see
        # `run_alone`); the same graph and weights, so the same scores.
        self.lone_session = self._session(lone_threads) if lone_threads else None
        names = {i.name for i in self.session.get_inputs()}
        if names != {"input_ids", "attention_mask"}:
            raise ValueError(f"model inputs {sorted(names)} != input_ids, attention_mask")
        self.encoder = TextEncoder(
            artifact.tokenizer_path.read_text(encoding="utf-8"),
            artifact.max_length,
            context_chars=int(artifact.config.get("context_chars", 0)),
            window_tokens=int(artifact.config.get("window_tokens", 64)),
            context_turns=int(artifact.config.get("context_turns", 0)),
        )
        self.pad_id = int(artifact.config.get("pad_token_id", 0))
        # per-label temperatures fitted on real validation (from 1.2.0): logit / T
        temps = (artifact.config.get("calibration") or {}).get("temperature") or {}
        self.temperature = np.array([float(temps.get(x, 1.0)) for x in self.labels], np.float32)

    def _session(self, threads: int) -> ort.InferenceSession:
        return open_session(str(self.artifact.onnx_path), threads)

    # -- low level -------------------------------------------------------------------------
    def windows(self, text: str, context: str = "") -> list[list[int]]:
        """Token ids of each window of a normalised text, special tokens included. A text with
        digits or symbols inside Latin words ("d1abetes") also gets the windows of its
        de-obfuscated reading; the text takes its highest window either way."""
        out = self.encoder.encode(text, context)
        plain = deobfuscated(text)
        if plain is not None:
            out += self.encoder.encode(plain, context)
        return out

    def batches(self, sequences: Sequence[Sequence[int]]) -> list[list[int]]:
        """Indices of the sequences, sorted by length and cut into model calls of at most
        `batch_size` rows and `batch_cells` padded tokens, where the cut costs least: a call
        costs its padded tokens plus `CALL_COST_TOKENS`, so sequences share a call only while
        what it saves in per-call work is more than the padding it adds (on these encoders a
        batch of mixed lengths can cost more than the same sequences one by one)."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        widths = [len(sequences[i]) for i in order]
        # cost[j]: least cost of the first j sequences; start[j]: where the last call begins
        cost = [0.0] + [float("inf")] * len(order)
        start = [0] * (len(order) + 1)
        for end in range(1, len(order) + 1):
            width = widths[end - 1]  # the widest of any call ending here: the order ascends
            for begin in range(end - 1, max(-1, end - 1 - self.batch_size), -1):
                rows = end - begin
                if rows > 1 and rows * width > self.batch_cells:
                    break
                c = cost[begin] + self.CALL_COST_TOKENS + rows * width
                if c < cost[end]:
                    cost[end], start[end] = c, begin
        out: list[list[int]] = []
        end = len(order)
        while end > 0:
            out.append(order[start[end] : end])
            end = start[end]
        return out[::-1]

    def run(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        """Probabilities (n, labels) for token sequences, batched by length to save padding."""
        return self._run(self.session, sequences)

    def run_alone(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        """`run` for a call with no other model call in flight: on the wider session when
        there is one (at concurrency 1 a call over every core answers sooner)."""
        if self.lone_session is None:
            return self.run(sequences)
        return self._run(self.lone_session, sequences)

    def _run(self, session: ort.InferenceSession, sequences: Sequence[Sequence[int]]) -> FloatArray:
        out = np.zeros((len(sequences), len(self.labels)), np.float32)
        for idx in self.batches(sequences):
            width = max(len(sequences[i]) for i in idx)
            ids = np.full((len(idx), width), self.pad_id, np.int64)
            mask = np.zeros((len(idx), width), np.int64)
            for row, i in enumerate(idx):
                seq = sequences[i]
                ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
            logits = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
            out[idx] = _sigmoid(np.asarray(logits, np.float32) / self.temperature)
        return out

    # -- texts and transcripts ---------------------------------------------------------------
    def decide(self, probs: FloatArray, windows: int, best: Sequence[int]) -> TextScore:
        """Per-label scores and flags for one text."""
        return TextScore(
            scores={lab: round(float(p), 6) for lab, p in zip(self.labels, probs, strict=True)},
            flags={
                lab: bool(p >= t)
                for lab, p, t in zip(self.labels, probs, self.thresholds, strict=True)
            },
            windows=windows,
            best_window={lab: int(b) for lab, b in zip(self.labels, best, strict=True)},
        )

    def encode_items(
        self, texts: Sequence[str], contexts: Sequence[str] | None = None
    ) -> list[list[list[int]]]:
        """Windows of each text (normalised, read after its normalised context)."""
        return self.encode_normalized(
            [normalize(t) for t in texts], [normalize(c) for c in contexts] if contexts else None
        )

    def encode_normalized(
        self, texts: Sequence[str], contexts: Sequence[str] | None = None
    ) -> list[list[list[int]]]:
        """Windows of texts that are already normalised; an empty text has none."""
        return [
            self.windows(t, contexts[i] if contexts else "") if t else []
            for i, t in enumerate(texts)
        ]

    def combine(self, windows: list[list[list[int]]], probs: FloatArray) -> list[TextScore]:
        """Per-text decisions from the probabilities of all windows, in order."""
        results, pos = [], 0
        for ws in windows:
            if not ws:  # nothing left to score: empty or invisible-only text
                zero = np.zeros(len(self.labels), np.float32)
                results.append(self.decide(zero, 0, [0] * len(self.labels)))
                continue
            block = probs[pos : pos + len(ws)]
            pos += len(ws)
            results.append(self.decide(block.max(axis=0), len(ws), list(block.argmax(axis=0))))
        return results

    def score_texts(
        self, texts: Sequence[str], contexts: Sequence[str] | None = None
    ) -> list[TextScore]:
        """Score texts (each optionally after its context, the turn before it); a text longer
        than the model's max length takes its best window."""
        windows = self.encode_items(texts, contexts)
        flat = [w for ws in windows for w in ws]
        probs = self.run(flat) if flat else np.zeros((0, len(self.labels)), np.float32)
        return self.combine(windows, probs)

    def aggregate(self, messages: list[TextScore]) -> TranscriptScore:
        """The transcript takes, per label, its highest message score (a union of labels)."""
        scores = {lab: max(m.scores[lab] for m in messages) for lab in self.labels}
        flags = {lab: any(m.flags[lab] for m in messages) for lab in self.labels}
        return TranscriptScore(messages=messages, scores=scores, flags=flags)

    def transcript_contexts(
        self, contents: Sequence[str], roles: Sequence[str] | None = None
    ) -> list[str]:
        """The normalised context each message of a transcript is read after."""
        return self.encoder.contexts([normalize(t) for t in contents], roles)

    def score_transcript(
        self, contents: Sequence[str], roles: Sequence[str] | None = None
    ) -> TranscriptScore:
        """Score each message after the turns before it, then the transcript."""
        return self.score_transcripts([(contents, roles)])[0]

    def score_transcripts(
        self, transcripts: Sequence[tuple[Sequence[str], Sequence[str] | None]]
    ) -> list[TranscriptScore]:
        """Score many transcripts ((contents, roles) each) in shared model calls: each message
        normalised once, read after the turns before it, then each transcript aggregated."""
        texts: list[str] = []
        contexts: list[str] = []
        sizes: list[int] = []
        for contents, roles in transcripts:
            clean = [normalize(t) for t in contents]
            texts += clean
            contexts += self.encoder.contexts(clean, roles)  # built from normalised turns
            sizes.append(len(clean))
        windows = self.encode_normalized(texts, contexts)
        flat = [w for ws in windows for w in ws]
        probs = self.run(flat) if flat else np.zeros((0, len(self.labels)), np.float32)
        scores = self.combine(windows, probs)
        out, pos = [], 0
        for n in sizes:
            out.append(self.aggregate(scores[pos : pos + n]))
            pos += n
        return out
