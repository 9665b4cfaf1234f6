"""Text normalisation applied before scoring, so obfuscation does not slip through."""

from __future__ import annotations

import re
import unicodedata

# Zero-width characters, soft hyphen, word joiner, BOM and the bidi controls.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
# Arabic tatweel (kashida) and short-vowel diacritics (harakat) decorate words without
# changing them; chat text rarely carries them, so the model is trained without them.
_ARABIC_DECORATION = re.compile("[\u0640\u064b-\u065f\u0670\u06d6-\u06ed]")
_SPACE = re.compile(r"\s+")
# Cyrillic and Greek letters that look like Latin ones ("chur\u0441h"). They are mapped only
# inside words that also contain Latin letters, so real Cyrillic or Greek text is untouched.
_LOOKALIKES = str.maketrans(
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0458\u0455\u04bb\u0501"
    "\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0425\u0406"
    "\u03bf\u03b1\u03b9\u03bd\u03c1\u039f\u0391\u0392\u0395\u0397\u0399\u039a\u039c\u039d\u03a1\u03a4\u03a7\u0396",
    "aeopcyxijshdABEKMHOPCTXIoaivpOABEHIKMNPTXZ",
)
_WORD = re.compile(r"\w+")
_LATIN = re.compile("[A-Za-z]")
_NON_LATIN_LOOKALIKE = re.compile("[\u0370-\u03ff\u0400-\u04ff\u0500-\u052f]")


def _unmask(match: re.Match[str]) -> str:
    word = match.group(0)
    if _LATIN.search(word) and _NON_LATIN_LOOKALIKE.search(word):
        return word.translate(_LOOKALIKES)
    return word


def normalize(text: str) -> str:
    """NFKC; drop invisible, bidi and Arabic decoration; unmask look-alikes; fold whitespace."""
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text)
    text = _ARABIC_DECORATION.sub("", text)
    # Linear in the text: a pattern like \w*[A-Za-z]\w* backtracks over every long run
    # without a letter (20,000 digits took 6 s); and most texts have no look-alike at all.
    if _NON_LATIN_LOOKALIKE.search(text):
        text = _WORD.sub(_unmask, text)
    return _SPACE.sub(" ", text).strip()


# Digits and symbols standing in for letters inside Latin words ("d1abetes", "m0sque",
# "pr@yer"). Arabizi writes Arabic letters with digits (2 = hamza, 3 = ain, 5 = kha, 7 = ha,
# 9 = qaf), so only the characters it does not use are read as letters, and the text itself is
# never rewritten: the scorer reads the de-obfuscated copy as extra windows, next to the text.
_LEET = str.maketrans("01@$", "oias")
_LEET_RUN = re.compile(r"(?<=[A-Za-z])[01@$]+(?=[A-Za-z])")


def deobfuscated(text: str) -> str | None:
    """The text with digits and symbols inside Latin words read as letters, or None if none."""
    out = _LEET_RUN.sub(lambda m: m.group(0).translate(_LEET), text)
    return out if out != text else None
