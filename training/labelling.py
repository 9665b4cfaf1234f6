"""Reading sheets for labellers, and their answers turned into labels by reference.

    python -m training.labelling sheet NAME --select uniform --sources a,b [--langs x,y]
        writes build/real/labelling/NAME.jsonl: one line per item to read, or per chat
        conversation (its messages in order, each with its key), text included
    python -m training.labelling translate-sheet NAME --select chat3 [--positive 30 --negative 15]
        writes build/real/translate/NAME.jsonl (NAME: <lang> or <lang>-<round>): segments of
        labelled train chat conversations of that selection, with their labels, none of whose
        messages was translated before; segments holding a sensitive message first
    python -m training.labelling collect
        reads build/real/labelling/answers/*.jsonl ({"key", "labels", "note"} per item) and
        merges them into training/data/real/labels/<source>.jsonl, which hold no text; then
        turns hand translations (build/real/translate/answers-<lang>.jsonl, {"key", "text",
        "variety"} per message, from the segments of build/real/translate/<lang>.jsonl) into
        training/data/real/translated/<lang>[-<round>].jsonl, with the source message's labels
        (a round's file is rewritten only from its own answers file)

Sheets and answers stay under build/ (never committed): only the labels files are kept.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from training.config import LABELS, resolve
from training.fetch import load_sources
from training.realdata import translated_records
from training.selection import ITEMS_DIR, METHODS, OUT_DIR, read
from training.selection import load as load_items

SHEETS = "build/real/labelling"
ADJUDICATED = "zz-adjudicated"  # sorts last among the answers files, so its labels win
SECOND_READING = "training/data/real/second-reading.jsonl"
TRANSLATE = "build/real/translate"
TRANSLATED_DIR = "training/data/real/translated"
LABELS_DIR = "training/data/real/labels"
FIELDS = ("source", "version", "key", "lang", "group", "selection", "split", "labels", "note")


def ref(row: dict[str, Any]) -> str:
    """The key a labeller answers with: source and item key."""
    return f"{row['source']}/{row['key']}"


def selected() -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        path = resolve(OUT_DIR) / f"{method}.jsonl"
        if path.exists():
            for r in read(path):
                rows.setdefault(ref(r), r)
    return rows


def sheet(
    name: str, select: str, sources: list[str], langs: list[str] | None, part: tuple[int, int]
) -> int:
    rows = [
        r for r in selected().values()
        if r["selection"].split(":")[0] == select and r["source"] in sources
        and (not langs or r["lang"] in langs)
    ]  # fmt: skip
    out = resolve(SHEETS) / f"{name}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    convs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    lines = []
    for r in rows:
        if r["source"] == "chitchat":
            convs[r["conv"]].append(r)
        else:
            lines.append({"key": ref(r), "lang": r["lang"], "kind": r["origin"], "text": r["text"]})
    load = [0] * part[1]
    owner = {}
    for conv in sorted(convs, key=lambda c: (-len(convs[c]), c)):  # balanced parts
        owner[conv] = load.index(min(load))
        load[owner[conv]] += len(convs[conv])
    for conv in sorted(convs):
        if owner[conv] != part[0]:
            continue
        msgs = convs[conv]
        msgs.sort(key=lambda m: m["pos"])
        lines.append(
            {
                "conversation": conv,
                "messages": [
                    {"key": ref(m), "speaker": m["speaker"], "text": m["text"]} for m in msgs
                ],
            }
        )
    with out.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return sum(len(x["messages"]) if "messages" in x else 1 for x in lines)


SEGMENT = 7  # messages per translation segment (a disclosure with the turns around it)


def translation_sheet(
    name: str, select: str, positive: int, negative: int, items_dir: str = ITEMS_DIR, seed: int = 0
) -> int:
    """Segments of the labelled train chat conversations of `select` (comma-separated rounds,
    texts from the extracted items) for hand translation: windows of SEGMENT consecutive
    messages, first those holding a labelled message (the window ends two turns after it, so
    the late replies that count through context come along), then windows with none (at most
    one per conversation, apart from its labelled windows); never a message translated before,
    never a held-out conversation."""
    rounds = set(select.split(","))
    done = {m["translated_from"] for r in translated_records(TRANSLATED_DIR) for m in r["messages"]}
    items = {f"chitchat/{it['key']}": it for it in load_items("chitchat", items_dir)}
    convs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in _label_rows():
        it = items.get(ref(row))
        if it is not None and row["selection"].split(":")[0] in rounds:
            convs[it["conv"]].append(
                {**it, "source": "chitchat", "labels": row["labels"], "split": row["split"]}
            )
    rng = random.Random(seed)
    pos_segs: list[list[dict[str, Any]]] = []
    neg_segs: list[list[dict[str, Any]]] = []
    for conv in sorted(convs):
        msgs = sorted(convs[conv], key=lambda m: m["pos"])
        if any(m["split"] != "train" for m in msgs):
            continue
        i, used = 0, set[str]()
        while i < len(msgs):
            hit = next((j for j in range(i, len(msgs)) if msgs[j]["labels"]), None)
            if hit is None:
                break
            start, end = max(i, hit + 3 - SEGMENT), hit + 3
            # a labelled message whose turns before it the window holds joins it, so that no
            # segment starts cut off from the context its first labels rest on
            reach = range(end, min(len(msgs), end + SEGMENT - 3))
            while (nxt := next((j for j in reach if msgs[j]["labels"]), None)) is not None:
                end = nxt + 3
                reach = range(end, min(len(msgs), end + SEGMENT - 3))
            end = min(len(msgs), end)
            seg = msgs[start:end]
            if not any(ref(m) in done for m in seg):
                pos_segs.append(seg)
                used |= {ref(m) for m in seg}
            i = end
        quiet = [msgs[j : j + SEGMENT] for j in range(0, len(msgs) - SEGMENT + 1, SEGMENT)]
        quiet = [w for w in quiet if not any(m["labels"] or ref(m) in done | used for m in w)]
        if quiet:
            neg_segs.append(rng.choice(quiet))
    chosen = rng.sample(pos_segs, min(positive, len(pos_segs)))
    chosen += rng.sample(neg_segs, min(negative, len(neg_segs)))
    out = resolve(TRANSLATE) / f"{name}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for seg in chosen:
            msgs = [
                {"key": ref(m), "speaker": m["speaker"], "text": m["text"], "labels": m["labels"]}
                for m in seg
            ]
            f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
    return sum(len(seg) for seg in chosen)


def _label_rows() -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(resolve(LABELS_DIR).glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def collect() -> dict[str, int]:
    """Merge every answers file into the labels files (later answers files win). The labels
    already committed are kept: answers add to them or correct them, so a checkout without
    an earlier session's answers (they stay under build/) never loses their labels."""
    chosen = selected()
    versions = {s.name: s.version for s in load_sources()}
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for path in sorted(resolve(LABELS_DIR).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out[row["source"]][row["key"]] = row
    for path in sorted((resolve(SHEETS) / "answers").glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            a = json.loads(line)
            row = chosen.get(a["key"])
            if row is None:
                raise ValueError(f"{path.name}:{n}: {a['key']} was never selected")
            bad = set(a["labels"]) - set(LABELS)
            if bad:
                raise ValueError(f"{path.name}:{n}: unknown labels {sorted(bad)}")
            out[row["source"]][row["key"]] = {
                "source": row["source"],
                "version": versions[row["source"]],
                "key": row["key"],
                "lang": row["lang"],
                "group": row["split_group"],
                "selection": row["selection"],
                "split": row["split"],
                "labels": sorted(set(a["labels"])),
                "note": (a.get("note") or "")[:200],
            }
    folder = resolve(LABELS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for source, rows in sorted(out.items()):
        path = folder / f"{source}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for key in sorted(rows, key=_natural):
                f.write(json.dumps({k: rows[key][k] for k in FIELDS}, ensure_ascii=False) + "\n")
        counts[source] = len(rows)
    return counts


def _answers(path: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            a = json.loads(line)
            out[a["key"]] = a
    return out


def collect_second() -> dict[str, int]:
    """The second reading against the first, with the adjudicated label where they differ:
    writes the record (training/data/real/second-reading.jsonl) and the corrections (an
    answers file that `collect` applies last)."""
    folder = resolve(SHEETS)
    first: dict[str, dict[str, Any]] = {}
    for path in sorted((folder / "answers").glob("*.jsonl")):
        if path.stem != ADJUDICATED:
            first.update(_answers(path))
    second: dict[str, dict[str, Any]] = {}
    for path in sorted((folder / "second").glob("answers-*.jsonl")):
        second.update(_answers(path))
    decided = (
        _answers(folder / "adjudication.jsonl") if (folder / "adjudication.jsonl").exists() else {}
    )
    # the committed record is kept (a checkout without an earlier session's answers, which
    # stay under build/, must not lose its readings); this session's readings add to it
    record: dict[str, dict[str, Any]] = {}
    path = resolve(SECOND_READING)
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                record[f"{r['source']}/{r['key']}"] = r
    fixes = []
    for key in sorted(second, key=_natural):
        a, b = sorted(first[key]["labels"]), sorted(second[key]["labels"])
        final = a
        if a != b:
            if key not in decided:
                raise ValueError(f"{key}: the readings differ and no adjudication is recorded")
            final = sorted(decided[key]["final"])
            if final != a:
                fixes.append(
                    {"key": key, "labels": final, "note": f"adjudicated: {decided[key]['why']}"}
                )
        source, item = key.split("/", 1)
        record[key] = {"source": source, "key": item, "first": a, "second": b, "final": final,
                       "why": decided[key]["why"] if a != b else ""}  # fmt: skip
    new = [record[k] for k in second]
    rows = [record[k] for k in sorted(record, key=_natural)]
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with (folder / "answers" / f"{ADJUDICATED}.jsonl").open("w", encoding="utf-8") as f:
        for fix in fixes:
            f.write(json.dumps(fix, ensure_ascii=False) + "\n")
    return {"second reading": len(new), "differ": sum(r["first"] != r["second"] for r in new),
            "corrected": len(fixes), "recorded": len(rows)}  # fmt: skip


def collect_translations() -> dict[str, int]:
    """Hand translations -> corpus records, one per segment, each message naming its source."""
    labels = {}
    for path in sorted(resolve(LABELS_DIR).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            labels[f"{row['source']}/{row['key']}"] = row
    counts = {}
    for answers in sorted(resolve(TRANSLATE).glob("answers-*.jsonl")):
        name = answers.stem.removeprefix("answers-")  # <lang> or <lang>-<round>
        lang = name.split("-")[0]
        done = {}
        for line in answers.read_text(encoding="utf-8").splitlines():
            if line.strip():
                a = json.loads(line)
                done[a["key"]] = a
        records = []
        sheet = resolve(TRANSLATE) / f"{name}.jsonl"
        for n, line in enumerate(sheet.read_text(encoding="utf-8").splitlines(), 1):
            seg = json.loads(line)
            msgs = [
                m for m in seg["messages"] if m["key"] in done and done[m["key"]]["text"].strip()
            ]
            if not msgs:
                continue
            first = labels[msgs[0]["key"]]
            if first["split"] != "train":
                raise ValueError(f"{msgs[0]['key']} is held out: it must not be translated")
            records.append(
                {
                    "id": f"translated-{name}-{n:04d}",
                    "group": first["group"],
                    "lang": lang,
                    "source": "translated",
                    "kind": "translated",
                    "variety": done[msgs[0]["key"]].get("variety") or "",
                    "template": False,
                    "translated_from": msgs[0]["key"],
                    "messages": [
                        {
                            "role": "user",
                            "content": done[m["key"]]["text"].strip(),
                            "labels": labels[m["key"]]["labels"],
                            "variety": done[m["key"]].get("variety") or "",
                            "translated_from": m["key"],
                        }
                        for m in msgs
                    ],
                }
            )
        records = _join_adjacent(records)
        out = resolve(TRANSLATED_DIR) / f"{name}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        counts[f"translated {name}"] = sum(len(r["messages"]) for r in records)
    return counts


def _join_adjacent(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Segments of one conversation that follow each other become one record, so that a
    message is read after the turns it followed in the source."""

    def pos(m: dict[str, Any]) -> int:
        return int(str(m["translated_from"]).rsplit(":", 1)[1])

    out: list[dict[str, Any]] = []
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: (r["group"], pos(r["messages"][0]))):
        prev = last.pop((r["group"], pos(r["messages"][0]) - 1), None)
        if prev is None:
            out.append(r)
            prev = r
        else:
            prev["messages"] += r["messages"]
        last[(r["group"], pos(prev["messages"][-1]))] = prev
    return sorted(out, key=lambda r: str(r["id"]))


def _natural(key: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in key.replace("/", ":").split(":")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sheet")
    s.add_argument("name")
    s.add_argument("--select", default="uniform")
    s.add_argument("--sources", required=True)
    s.add_argument("--langs", default="")
    s.add_argument("--part", default="0/1", help="chat: conversations i of every n")
    t = sub.add_parser("translate-sheet")
    t.add_argument("name", help="<lang> or <lang>-<round>")
    t.add_argument("--select", required=True, help="chat selections, e.g. chat3 or chat,chat2")
    t.add_argument("--positive", type=int, default=30)
    t.add_argument("--negative", type=int, default=15)
    sub.add_parser("collect")
    args = parser.parse_args()
    if args.cmd == "sheet":
        langs = [x for x in args.langs.split(",") if x] or None
        i, n = (int(x) for x in args.part.split("/"))
        n = sheet(args.name, args.select, args.sources.split(","), langs, (i, n))
        print(f"{args.name}: {n} items")  # noqa: T201 - a command-line report
    elif args.cmd == "translate-sheet":
        n = translation_sheet(args.name, args.select, args.positive, args.negative)
        print(f"{args.name}: {n} messages to translate")  # noqa: T201 - a command-line report
    else:
        second = collect_second()
        print(json.dumps({**collect(), **collect_translations(), **second}, indent=1))  # noqa: T201


if __name__ == "__main__":
    main()
