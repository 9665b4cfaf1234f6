"""Normalisation removes what hides words and keeps what carries meaning."""

from service.text import deobfuscated, normalize


def test_zero_width_and_bidi_removed() -> None:
    assert normalize("dia\u200bbe\u200dtes\u202e") == "diabetes"


def test_nfkc_and_whitespace() -> None:
    assert normalize("  ｆｕｌｌ\u00a0width \n\t text ") == "full width text"


def test_arabic_tatweel_removed_letters_kept() -> None:
    assert normalize("صـــلاة") == "صلاة"
    assert normalize("مرحبا") == "مرحبا"


def test_arabic_diacritics_removed() -> None:
    assert normalize("الصَّلَاةُ") == "الصلاة"


def test_lookalike_letters_in_latin_words_are_unmasked() -> None:
    assert normalize("chur\u0441h") == "church"  # Cyrillic es
    assert normalize("di\u0430betes") == "diabetes"  # Cyrillic a


def test_real_cyrillic_and_greek_text_untouched() -> None:
    assert normalize("церковь") == "церковь"
    assert normalize("εκκλησία") == "εκκλησία"


def test_digits_inside_latin_words_are_read_as_letters() -> None:
    assert deobfuscated("I have d1abetes") == "I have diabetes"
    assert deobfuscated("we go to m0sque and pr@y") == "we go to mosque and pray"
    # nothing to read: numbers, codes at word edges and non-Latin words stay as they are
    assert deobfuscated("covid19 in 2020, B12 and 3ndi") is None
    assert deobfuscated("عندي سكر") is None
