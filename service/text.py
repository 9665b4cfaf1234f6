"""Text normalisation applied before scoring, so obfuscation does not slip through."""

from __future__ import annotations

import re
import unicodedata

# Zero-width characters, soft hyphen, word joiner, BOM and the bidi controls.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
# Arabic tatweel (kashida) stretches words without changing them.
_TATWEEL = re.compile("\u0640")
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC, drop invisible and bidi control characters and tatweel, fold whitespace."""
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text)
    text = _TATWEEL.sub("", text)
    return _SPACE.sub(" ", text).strip()
