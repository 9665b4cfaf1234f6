"""The multi-label classifier: a transformer encoder, mean pooling (of every token or of the
message's own) and one logit per label."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from service.classifier import TextEncoder
from training.config import TrainConfig

POOLS = ("all", "message")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors that the attention mask keeps."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-6)


def message_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, sep: int) -> torch.Tensor:
    """The attention mask cut to the message: every token up to and including the first `sep`
    (the encoder reads "<s> message </s></s> context </s>"); a row without context keeps all."""
    is_sep = (input_ids == sep).to(torch.int64)
    before = is_sep.cumsum(dim=-1) - is_sep  # separators strictly before each position
    return attention_mask * (before == 0).to(attention_mask.dtype)


class MultiLabelClassifier(nn.Module):
    """Encoder + mean pooling + linear head; outputs raw logits (sigmoid per label)."""

    def __init__(self, encoder: nn.Module, hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, num_labels)
        # the separator token that ends the message, when the head reads the message's tokens
        # only (pool "message"); None: the head reads every token
        self.message_sep: int | None = None

    def set_pool(self, pool: str, sep_token_id: int | None) -> None:
        """Choose what the head reads (`training.config.TrainConfig.pool`)."""
        if pool not in POOLS:
            raise ValueError(f"pool={pool!r}: one of {POOLS}")
        if pool == "all":
            self.message_sep = None
        elif sep_token_id is None:
            raise ValueError("pool='message' needs a tokenizer with a separator token")
        else:
            self.message_sep = int(sep_token_id)

    @classmethod
    def from_base(
        cls, base_model: str, num_labels: int, dropout: float = 0.1
    ) -> MultiLabelClassifier:
        """Start from any transformers id or local folder; the head is new."""
        encoder = AutoModel.from_pretrained(base_model, add_pooling_layer=False)
        return cls(encoder, encoder.config.hidden_size, num_labels, dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        keep = attention_mask
        if self.message_sep is not None:
            keep = message_mask(input_ids, attention_mask, self.message_sep)
        pooled = mean_pool(out.last_hidden_state, keep)
        logits: torch.Tensor = self.head(self.dropout(pooled))
        return logits

    def freeze_lower(self, layers: int) -> None:
        """Keep the embeddings and the first `layers` transformer layers as they are: only the
        layers above them and the head learn (raises when the encoder has fewer layers)."""
        if layers <= 0:
            return
        stack = encoder_layers(self.encoder)
        if layers > len(stack):
            raise ValueError(f"freeze_layers={layers}: the encoder has {len(stack)} layers")
        frozen = [self.encoder.get_input_embeddings()]
        embeddings = getattr(self.encoder, "embeddings", None)
        if isinstance(embeddings, nn.Module):
            frozen.append(embeddings)
        frozen += list(stack[:layers])
        for module in frozen:
            module.requires_grad_(False)

    def keep_lower(self, layers: int) -> None:
        """Drop every transformer layer above the first `layers` (0 = keep all); the encoder's
        config says so, so that `save` and `load` round-trip the shallower encoder."""
        if layers <= 0:
            return
        stack = encoder_layers(self.encoder)
        if layers > len(stack):
            raise ValueError(f"encoder_layers={layers}: the encoder has {len(stack)} layers")
        del stack[layers:]
        self.encoder.config.num_hidden_layers = layers

    def save(self, path: Path, tokenizer: PreTrainedTokenizerBase, meta: dict[str, object]) -> None:
        """Write encoder, tokenizer, head weights and the training metadata into one folder."""
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(path / "encoder")
        tokenizer.save_pretrained(path / "encoder")
        torch.save(self.head.state_dict(), path / "head.pt")
        (path / "checkpoint.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))

    @classmethod
    def load(
        cls, path: Path, attn_implementation: str | None = None
    ) -> tuple[MultiLabelClassifier, PreTrainedTokenizerBase, dict[str, object]]:
        """Read back what `save` wrote (`attn_implementation`: transformers' choice of
        attention code, e.g. "eager"; the default when None)."""
        meta = json.loads((path / "checkpoint.json").read_text())
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        encoder = AutoModel.from_pretrained(path / "encoder", add_pooling_layer=False, **kwargs)
        head = torch.load(path / "head.pt", weights_only=True)
        model = cls(encoder, encoder.config.hidden_size, head["weight"].shape[0])
        model.head.load_state_dict(head)
        tokenizer = AutoTokenizer.from_pretrained(path / "encoder")
        config = meta.get("config")
        pool = str(config.get("pool", "all")) if isinstance(config, dict) else "all"
        model.set_pool(pool, tokenizer.sep_token_id)
        return model.eval(), tokenizer, meta


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's stack of transformer layers, bottom first, under the names the
    transformers encoders use (BERT and XLM-R `encoder.layer`, DistilBERT `transformer.layer`,
    others `layers`)."""
    for path in ("encoder.layer", "transformer.layer", "layers", "layer"):
        node: object = encoder
        for part in path.split("."):
            node = getattr(node, part, None)
        if isinstance(node, nn.ModuleList):
            return node
    raise ValueError(f"no layer stack found in {type(encoder).__name__}")


def make_encoder(tokenizer: PreTrainedTokenizerBase, cfg: TrainConfig) -> TextEncoder:
    """The service's own encoder over this tokenizer: training sees what serving sees."""
    return encoder_of(tokenizer.backend_tokenizer.to_str(), cfg)


def encoder_of(tokenizer_json: str, cfg: TrainConfig) -> TextEncoder:
    """The service's encoder for a tokenizer, set up as the config's model reads text."""
    return TextEncoder(
        tokenizer_json, cfg.max_length, cfg.context_chars, cfg.window_tokens, cfg.context_turns
    )


def batch_tensors(
    encoder: TextEncoder, texts: list[str], contexts: list[str], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded input ids and attention mask; each text is read after its context, if any."""
    seqs = [encoder.encode(t, c)[0] for t, c in zip(texts, contexts, strict=True)]
    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, x in enumerate(seqs):
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return ids, mask


@torch.no_grad()
def predict_logits(
    model: MultiLabelClassifier,
    encoder: TextEncoder,
    texts: list[str],
    contexts: list[str],
    pad_id: int,
    batch_size: int = 64,
) -> torch.Tensor:
    """Logits for texts (first window, with context), in input order."""
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + len(contexts[i]))
    out = torch.zeros(len(texts), model.head.out_features)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = batch_tensors(
            encoder, [texts[i] for i in idx], [contexts[i] for i in idx], pad_id
        )
        out[idx] = model(ids, mask).float()
    return out
