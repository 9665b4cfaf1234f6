"""The signal gate: may an interest signal derived from a transcript be used?

Fail-closed by design: a signal is allowed only when no rule blocks it, and any error answer
from the service means "use none of these signals".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from service.classifier import TextScore, TranscriptScore

# The officially assigned ISO 3166-1 alpha-2 codes (249, as listed by the iso-codes database
# that pycountry 26.2.16 ships), and the usual aliases of two of them.
ISO_3166_ALPHA2 = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
    BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
    EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
    HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
    LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
    NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
    TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """.split()
)
REGION_ALIASES = {"UK": "GB", "EL": "GR"}


def region_code(code: str) -> str:
    """The ISO 3166-1 alpha-2 code of a region (case-insensitive, with the usual aliases
    `UK` -> GB and `EL` -> GR); ValueError for anything else (`EU`, `XX`)."""
    upper = code.strip().upper()
    upper = REGION_ALIASES.get(upper, upper)
    if upper not in ISO_3166_ALPHA2:
        raise ValueError("not an ISO 3166-1 alpha-2 country code")
    return upper


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
