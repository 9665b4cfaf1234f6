"""Vocabulary trimming: keep the token rows that the supported languages need.

Most of a multilingual encoder's weights are its token-embedding matrix (96M of
multilingual-e5-small's 118M parameters, for 250k tokens in ~100 languages). A model that serves
Latin-, Arabic- and Hebrew-script languages keeps: the special tokens; every token that the
training texts use; every single-character token of the supported scripts, digits, punctuation
and emoji (so unseen words still split into known pieces); then the most probable remaining
pieces of those scripts (Unigram score) up to a budget. A text whose tokens were all kept is
tokenized exactly as before, so the trimmed model gives it the same scores.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

import torch
from tokenizers import Tokenizer

from training.model import MultiLabelClassifier

_SCRIPT_OK = re.compile(
    r"^[\u2581\sA-Za-z0-9\u00C0-\u024F\u1E00-\u1EFF"  # Latin, extended (fr, es, de, tr)
    r"\u0600-\u06FF\u0750-\u077F\u08A0-\u08FF\uFB50-\uFDFF\uFE70-\uFEFF"  # Arabic, Persian
    r"\u0590-\u05FF\uFB1D-\uFB4F"  # Hebrew
    r"\u2000-\u206F\u20A0-\u20CF\u2100-\u214F\u2190-\u21FF\u2600-\u27BF"  # punctuation, symbols
    r"\U0001F000-\U0001FAFF!-/:-@\[-`{-~\u00A0-\u00BF\u00D7\u00F7]+$"  # emoji, ASCII punct.
)


def _allowed(piece: str) -> bool:
    return bool(_SCRIPT_OK.match(piece))


def _is_char(piece: str) -> bool:
    core = piece.lstrip("\u2581")
    return len(core) <= 1 or (len(core) == 2 and unicodedata.category(core[1]).startswith("M"))


# Scripts of which every piece is kept: they are a small share of the vocabulary, and ranking
# pieces by probability alone would favour the many Latin-script languages.
_KEEP_ALL = re.compile(r"[\u0590-\u05FF\u0600-\u06FF\u0750-\u077F\uFB50-\uFDFF\uFE70-\uFEFF]")


def select_ids(tokenizer_json: str, texts: Iterable[str], budget: int) -> list[int]:
    """Sorted ids to keep: specials, ids used by the texts, script characters, every Arabic-
    and Hebrew-script piece, then the most probable remaining pieces up to the budget."""
    spec = json.loads(tokenizer_json)
    if spec["model"]["type"] != "Unigram":
        raise ValueError("vocabulary trimming supports Unigram (SentencePiece) tokenizers")
    vocab: list[list[Any]] = spec["model"]["vocab"]
    keep = {int(t["id"]) for t in spec.get("added_tokens", [])}
    keep.add(int(spec["model"].get("unk_id") or 0))
    tok = Tokenizer.from_str(tokenizer_json)
    tok.no_truncation()
    tok.no_padding()
    for enc in tok.encode_batch(list(texts)):
        keep.update(enc.ids)
    keep.update(i for i, (p, _) in enumerate(vocab) if _is_char(p) and _allowed(p))
    keep.update(i for i, (p, _) in enumerate(vocab) if _KEEP_ALL.search(p) and _allowed(p))
    ranked = sorted(
        (i for i, (p, _) in enumerate(vocab) if i not in keep and _allowed(p)),
        key=lambda i: -float(vocab[i][1]),
    )
    keep.update(ranked[: max(0, budget - len(keep))])
    return sorted(keep)


def trim_tokenizer(tokenizer_json: str, keep: list[int]) -> str:
    """The same tokenizer over the kept pieces only, ids renumbered in their old order."""
    spec = json.loads(tokenizer_json)
    new_id = {old: new for new, old in enumerate(keep)}
    model = spec["model"]
    model["vocab"] = [model["vocab"][i] for i in keep]
    if model.get("unk_id") is not None:
        model["unk_id"] = new_id[int(model["unk_id"])]
    for t in spec.get("added_tokens", []):
        t["id"] = new_id[int(t["id"])]

    def remap(node: Any) -> None:
        # The post-processor names special tokens with their ids.
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "ids" and isinstance(value, list):
                    node[key] = [new_id[int(v)] for v in value]
                else:
                    remap(value)
        elif isinstance(node, list):
            for item in node:
                remap(item)

    remap(spec.get("post_processor"))
    return json.dumps(spec, ensure_ascii=False)


def trim_model(model: MultiLabelClassifier, keep: list[int]) -> None:
    """Keep only the embedding rows of the kept tokens, in place."""
    emb = model.encoder.get_input_embeddings()
    rows = emb.weight.data[torch.tensor(keep)].clone()
    pad = getattr(model.encoder.config, "pad_token_id", None)
    new = torch.nn.Embedding.from_pretrained(
        rows, freeze=False, padding_idx=keep.index(pad) if pad in keep else None
    )
    model.encoder.set_input_embeddings(new)
    model.encoder.config.vocab_size = len(keep)
    if model.message_sep is not None:  # the separator that ends the message, renumbered
        model.message_sep = keep.index(model.message_sep)
