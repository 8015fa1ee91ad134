#!/usr/bin/env python3
"""Reference sentence embeddings of all-MiniLM-L6-v2, in float64 NumPy.

    minilm-reference.py MODEL.safetensors TOKENIZER.json SENTENCES.txt OUT.json

Run by scripts/fetch-models.sh inside its venv (pinned NumPy). The Rust BERT
of examples/support/bert.rs is checked against this file by
crates/lsqr-cli/tests/minilm_embeddings.rs, so nothing here shares code with
it: the tokenizer is the original BERT algorithm (basic tokenizer, then
greedy longest-match WordPiece) written from its definition over the vocab
of tokenizer.json, not the `tokenizers` library the Rust side uses, and the
encoder is the textbook one (erf GELU, post-LayerNorm, eps 1e-12), then
sentence-transformers' mean pooling and L2 normalisation. Float64 makes the
reference's own rounding negligible against the test's 1e-4 bound.

Writes JSON: {"sentences": [...], "token_ids": [[...]], "embeddings": [[...]]}.
"""
import json
import math
import struct
import sys
import unicodedata

import numpy as np

HEADS = 12
EPS = 1e-12
# sentence-transformers' max_seq_length (sentence_bert_config.json), special
# tokens included.
MAX_TOKENS = 256


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(info["shape"]).astype(np.float64)
    return out


# ---------------------------------------------------------------- tokenizer


def is_whitespace(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def is_control(c):
    return c not in "\t\n\r" and unicodedata.category(c).startswith("C")


def is_punctuation(c):
    o = ord(c)
    if 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def is_cjk(c):
    o = ord(c)
    return any(
        a <= o <= b
        for a, b in [
            (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
            (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
        ]
    )


def basic_tokens(text):
    """BERT's BasicTokenizer, uncased: clean, space out CJK, lowercase, strip
    accents, split on whitespace and around each punctuation character."""
    clean = []
    for c in text:
        if ord(c) == 0 or ord(c) == 0xFFFD or is_control(c):
            continue
        if is_whitespace(c):
            clean.append(" ")
        elif is_cjk(c):
            clean.append(f" {c} ")
        else:
            clean.append(c)
    text = unicodedata.normalize("NFD", "".join(clean).lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    tokens = []
    for word in text.split():
        cur = ""
        for c in word:
            if is_punctuation(c):
                if cur:
                    tokens.append(cur)
                tokens.append(c)
                cur = ""
            else:
                cur += c
        if cur:
            tokens.append(cur)
    return tokens


def wordpiece(word, vocab, unk="[UNK]", max_chars=100):
    if len(word) > max_chars:
        return [vocab[unk]]
    ids, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                ids.append(vocab[piece])
                break
            end -= 1
        if end == start:
            return [vocab[unk]]
        start = end
    return ids


def tokenize(text, vocab):
    ids = [i for w in basic_tokens(text) for i in wordpiece(w, vocab)]
    return [vocab["[CLS]"]] + ids[: MAX_TOKENS - 2] + [vocab["[SEP]"]]


# ---------------------------------------------------------------- encoder

erf = np.vectorize(math.erf)


def layer_norm(x, g, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * g + b


def linear(x, w, name):
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def embed(ids, w):
    n = len(ids)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    layer = 0
    while f"encoder.layer.{layer}.attention.self.query.weight" in w:
        p = f"encoder.layer.{layer}."
        d = x.shape[1] // HEADS
        heads = lambda t: t.reshape(n, HEADS, d).transpose(1, 0, 2)  # noqa: E731
        q = heads(linear(x, w, p + "attention.self.query"))
        k = heads(linear(x, w, p + "attention.self.key"))
        v = heads(linear(x, w, p + "attention.self.value"))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, -1)
        a = linear(ctx, w, p + "attention.output.dense")
        x = layer_norm(
            x + a, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]
        )
        h = linear(x, w, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        o = linear(h, w, p + "output.dense")
        x = layer_norm(x + o, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        layer += 1
    pooled = x.mean(0)
    return pooled / max(np.linalg.norm(pooled), 1e-12)


def main():
    model, tokenizer, sentences, out = sys.argv[1:]
    w = read_safetensors(model)
    with open(tokenizer, encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    with open(sentences, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.strip()]
    ids = [tokenize(t, vocab) for t in texts]
    emb = [embed(i, w) for i in ids]
    with open(out, "w", encoding="utf-8") as f:
        json.dump(
            {
                "sentences": texts,
                "token_ids": ids,
                "embeddings": [[float(v) for v in e] for e in emb],
            },
            f,
        )


if __name__ == "__main__":
    main()
