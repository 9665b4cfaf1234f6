"""Response shapes built from a scored transcript: per message and for the whole, with the
evidence a reviewer needs to see why."""

from __future__ import annotations

from collections.abc import Sequence

from service.classifier import TextScore, TranscriptScore
from service.language import TranscriptLanguages
from service.schemas import Evidence, LabelDecision, Message, MessageResult, TranscriptResult


def evidence(scores: TextScore, index: int) -> list[Evidence]:
    return [
        Evidence(
            label=lab, message_index=index, window=scores.best_window[lab], score=scores.scores[lab]
        )
        for lab, f in scores.flags.items()
        if f
    ]


def transcript_result(
    messages: Sequence[Message],
    result: TranscriptScore,
    langs: TranscriptLanguages,
    tid: str | None = None,
) -> TranscriptResult:
    out = [
        MessageResult(
            index=i,
            role=m.role,
            scores=s.scores,
            flags=s.flags,
            sensitive=s.sensitive,
            windows=s.windows,
            skipped_parts=m.skipped_parts,
            evidence=evidence(s, i),
            language=g.language,
            language_supported=g.language in langs.supported,
        )
        for i, (m, s, g) in enumerate(zip(messages, result.messages, langs.messages, strict=True))
    ]
    found = [e for m in out for e in m.evidence]
    return TranscriptResult(
        id=tid,
        language=langs.transcript.language,
        language_supported=langs.transcript.language in langs.supported,
        messages=out,
        transcript=LabelDecision(
            scores=result.scores, flags=result.flags, sensitive=result.sensitive, evidence=found
        ),
    )
