"""The signal gate: may an interest signal derived from a transcript be used?

Fail-closed by design: a signal is allowed only when no rule blocks it, and any error answer
from the service means "use none of these signals".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from service.classifier import TextScore, TranscriptScore

# EU and EEA member states, the United Kingdom and South Korea (ISO 3166-1 alpha-2).
DEFAULT_BLOCKED_REGIONS = (
    "AT,BE,BG,HR,CY,CZ,DK,EE,FI,FR,DE,GR,HU,IE,IT,LV,LT,LU,MT,NL,PL,PT,RO,SK,SI,ES,SE,"
    "IS,LI,NO,GB,KR"
)


@dataclass(frozen=True)
class Reason:
    """Why a signal is blocked."""

    type: str  # jurisdiction | unsupported_language | signal | source | transcript
    label: str | None = None
    message_index: int | None = None
    language: str | None = None


@dataclass(frozen=True)
class Decision:
    signal_id: str
    allowed: bool
    reasons: list[Reason] = field(default_factory=list)


def decide(
    signal_id: str,
    signal_score: TextScore,
    sources: Sequence[int] | None,
    transcript: TranscriptScore,
    region_blocked: bool,
    unsupported: Sequence[tuple[int, str]] = (),
) -> Decision:
    """Every reason that blocks one signal; allowed only if there is none. `unsupported` holds
    (message index, language) of the messages in a language the model does not support: the
    guard fails closed where its judgement ends, for a source message or, without sources,
    for any message of the transcript."""
    reasons: list[Reason] = []
    if region_blocked:
        reasons.append(Reason("jurisdiction"))
    reasons += [
        Reason("unsupported_language", message_index=i, language=lang)
        for i, lang in unsupported
        if not sources or i in sources
    ]
    reasons += [Reason("signal", label=lab) for lab, f in signal_score.flags.items() if f]
    if sources:
        for i in sources:
            msg = transcript.messages[i]
            reasons += [
                Reason("source", label=lab, message_index=i) for lab, f in msg.flags.items() if f
            ]
    else:
        reasons += [Reason("transcript", label=lab) for lab, f in transcript.flags.items() if f]
    return Decision(signal_id, not reasons, reasons)
