"""Vocabulary trimming keeps the scores of every text whose tokens were all kept."""

from __future__ import annotations

import json

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import XLMRobertaConfig, XLMRobertaModel

from service.classifier import TextEncoder
from training.model import MultiLabelClassifier, batch_tensors
from training.vocab import select_ids, trim_model, trim_tokenizer

CORPUS = [
    "i was diagnosed with diabetes last month",
    "we pray at the mosque every friday",
    "who should i vote for in the election",
    "recommend hiking boots for rocky trails",
    "عندي سكر من سنة",
    "on va voter dimanche pour les municipales",
    "שבת שלום לכולם",
    "the weather is lovely today and the trains are on time",
] * 20


def unigram_tokenizer() -> str:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(CORPUS + ["zebra quantum xylophone жук 漢字"], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok.to_str()


def tiny_model(vocab: int) -> MultiLabelClassifier:
    torch.manual_seed(0)
    cfg = XLMRobertaConfig(
        vocab_size=vocab,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        pad_token_id=1,
        max_position_embeddings=80,
    )
    return MultiLabelClassifier(XLMRobertaModel(cfg, add_pooling_layer=False), 16, 3).eval()


def test_trimmed_model_scores_kept_texts_identically() -> None:
    full_json = unigram_tokenizer()
    n_full = len(json.loads(full_json)["model"]["vocab"])
    model = tiny_model(n_full)
    keep = select_ids(full_json, CORPUS[:4], budget=60)
    assert len(keep) < n_full
    assert {0, 1, 2, 3} <= set(keep)
    # Cyrillic and Han pieces are outside the supported scripts and are dropped
    kept_pieces = {json.loads(full_json)["model"]["vocab"][i][0] for i in keep}
    assert not any("ж" in p or "漢" in p for p in kept_pieces)

    texts = CORPUS[:4]
    full = TextEncoder(full_json, 32)
    before = model(*batch_tensors(full, texts, [""] * 4, 1))
    small_json = trim_tokenizer(full_json, keep)
    trim_model(model, keep)
    small = TextEncoder(small_json, 32)
    for t in texts:  # same pieces, renumbered
        assert [keep[i] for i in small.encode(t)[0]] == full.encode(t)[0]
    after = model(*batch_tensors(small, texts, [""] * 4, 1))
    assert torch.allclose(before, after, atol=1e-5)
    assert model.encoder.config.vocab_size == len(keep)
    assert json.loads(small_json)["model"]["unk_id"] in small.encode("жук")[0]


def test_a_model_pooling_the_message_keeps_its_scores_and_its_separator_when_trimmed() -> None:
    """A model whose head reads the message's tokens only (pool "message") scores messages
    read after context as before trimming, and its separator follows the renumbering."""
    full_json = unigram_tokenizer()
    n_full = len(json.loads(full_json)["model"]["vocab"])
    model = tiny_model(n_full)
    model.set_pool("message", 2)
    keep = select_ids(full_json, CORPUS[:4], budget=60)
    texts, contexts = CORPUS[:4], ["user: " + c for c in reversed(CORPUS[:4])]
    full = TextEncoder(full_json, 48, context_chars=120, context_turns=2)
    assert all(full.encode(t, c)[0].count(2) == 3 for t, c in zip(texts, contexts, strict=True))
    before = model(*batch_tensors(full, texts, contexts, 1))
    trim_model(model, keep)
    small = TextEncoder(trim_tokenizer(full_json, keep), 48, context_chars=120, context_turns=2)
    after = model(*batch_tensors(small, texts, contexts, 1))
    assert torch.allclose(before, after, atol=1e-5)
    assert model.message_sep == 2  # the specials come first: their ids stay

    moved = tiny_model(n_full)
    moved.set_pool("message", 7)
    trim_model(moved, [0, 1, 2, 3, 5, 7, 9])
    assert moved.message_sep == 5
