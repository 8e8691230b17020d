"""Tokenize documents once (cached) and pack them into fixed-length training sequences.

Documents are kept as a ragged array: one flat int32 `tokens` vector plus `offsets`
(document i is tokens[offsets[i]:offsets[i+1]]). Everything after tokenization is
numpy-vectorised: no Python loop over tokens.

Packing (GPT-style concatenation): every document becomes `<s> doc </s>`; the stream is
cut into rows of `seq_len` tokens, so a long document continues in the next row and
nothing is padded except, if the stream runs out, the tail of the last row. Packing
efficiency = non-pad tokens / all token slots. Labels are the inputs with `<s>` and pad
positions set to -100: the model is never asked to predict the start of the next
document from the end of the previous one (the only cross-document target).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

IGNORE = -100
CACHE_VERSION = "1"  # bump when the tokenization/rendering code changes meaning


@dataclass
class Docs:
    """A ragged array of tokenized documents."""

    tokens: np.ndarray  # int32 [total]
    offsets: np.ndarray  # int64 [n_docs + 1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    @classmethod
    def from_lists(cls, ids: Sequence[Sequence[int]]) -> "Docs":
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1])) \
            if len(ids) else np.zeros(0, dtype=np.int32)
        return cls(flat, offsets)

    def take(self, index: np.ndarray) -> "Docs":
        """Documents in the order of `index` (repeats allowed), vectorised."""
        index = np.asarray(index, dtype=np.int64)
        lengths = self.lengths[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # position j of the output maps to starts[doc(j)] + (j - offsets[doc(j)])
        starts = self.offsets[:-1][index]
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return Docs(self.tokens[gather], offsets)

    def save(self, path: Path) -> None:
        from . import io

        with io.atomic_open(path, "wb", encoding=None) as f:
            np.savez(f, tokens=self.tokens, offsets=self.offsets)

    @classmethod
    def load(cls, path: Path) -> "Docs":
        with np.load(path) as z:
            return cls(z["tokens"], z["offsets"])


def concat(parts: Iterable[Docs]) -> Docs:
    parts = list(parts)
    if not parts:
        return Docs(np.zeros(0, np.int32), np.zeros(1, np.int64))
    tokens = np.concatenate([p.tokens for p in parts])
    lengths = np.concatenate([p.lengths for p in parts])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Docs(tokens, offsets)


# --------------------------------------------------------------------------- tokenize

def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of what decides token ids: the fast tokenizer's full JSON + special tokens."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else repr(tokenizer.get_vocab())).encode())
    h.update(json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
                         len(tokenizer)]).encode())
    return h.hexdigest()[:16]


def tokenize(tokenizer, texts: Sequence[str], batch_size: int = 1000, num_proc: int = 1) -> Docs:
    """Token ids of each text (no special tokens) via the fast tokenizer's batch call.

    With num_proc > 1 and a big input, `datasets.map` spreads the batches over processes.
    """
    if num_proc > 1 and len(texts) > 20 * batch_size:
        import datasets

        ds = datasets.Dataset.from_dict({"text": list(texts)})
        ds = ds.map(lambda b: {"ids": tokenizer(b["text"], add_special_tokens=False)["input_ids"]},
                    batched=True, batch_size=batch_size, num_proc=num_proc, remove_columns=["text"])
        ds = ds.with_format("numpy")
        parts = [Docs.from_lists(ds[i:i + 100_000]["ids"]) for i in range(0, len(ds), 100_000)]
        return concat(parts)
    parts = []
    for i in range(0, len(texts), batch_size):
        ids = tokenizer(list(texts[i:i + batch_size]), add_special_tokens=False)["input_ids"]
        parts.append(Docs.from_lists(ids))
    return concat(parts)


def cache_key(*parts) -> str:
    """Stable short hash of strings / numbers / file paths (files hashed by content)."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    for p in parts:
        if isinstance(p, Path):
            h.update(file_digest(p).encode())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_tokenize(cache_dir: Path, key: str, tokenizer, texts_fn, num_proc: int = 1) -> tuple[Docs, bool]:
    """Load `<cache_dir>/<key>.npz` or tokenize `texts_fn()` and store it; returns (docs, hit)."""
    path = Path(cache_dir) / f"{key}.npz"
    if path.exists():
        return Docs.load(path), True
    docs = tokenize(tokenizer, texts_fn(), num_proc=num_proc)
    docs.save(path)
    return docs, False


# --------------------------------------------------------------------------- budget

def fill_budget(lengths: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Document indices whose cost (len + 2 for <s>/</s>) first reaches `budget`.

    Walks shuffled epochs of the pool (a fresh permutation per epoch), so documents are
    repeated only once every document has been used; deterministic for a given rng.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if budget <= 0:
        return np.zeros(0, dtype=np.int64)
    cost = lengths + 2
    total = int(cost.sum())
    if total == 0:
        raise ValueError("cannot fill a token budget from an empty pool")
    epochs = budget // total + 1
    order = np.concatenate([rng.permutation(len(lengths)) for _ in range(epochs)])
    csum = np.cumsum(cost[order])
    n = int(np.searchsorted(csum, budget, side="left")) + 1
    return order[:n]


# --------------------------------------------------------------------------- pack

@dataclass
class Packed:
    input_ids: np.ndarray  # int32 [n_rows, seq_len]
    n_real: int  # non-pad token slots
    n_docs: int
    n_truncated: int  # tokens of the stream that did not fit into n_rows (0 when not capped)

    @property
    def efficiency(self) -> float:
        return self.n_real / self.input_ids.size if self.input_ids.size else 0.0


def stream(docs: Docs, bos: int, eos: int) -> np.ndarray:
    """`<s> d0 </s> <s> d1 </s> ...` as one int32 vector, vectorised."""
    n = len(docs)
    lengths = docs.lengths
    out = np.empty(int(docs.offsets[-1]) + 2 * n, dtype=np.int32)
    starts = docs.offsets[:-1] + 2 * np.arange(n)  # position of each <s>
    out[starts] = bos
    out[starts + lengths + 1] = eos
    body = np.ones(len(out), dtype=bool)
    body[starts] = False
    body[starts + lengths + 1] = False
    out[body] = docs.tokens
    return out


def pack(docs: Docs, seq_len: int, bos: int, eos: int, pad: int, n_rows: int | None = None) -> Packed:
    """Concatenate `<s> doc </s>` and cut into rows of seq_len; pad only the final row.

    n_rows: exact number of rows wanted (stream cut or padded to n_rows * seq_len).
    """
    s = stream(docs, bos, eos)
    if n_rows is None:
        n_rows = -(-len(s) // seq_len)
    slots = n_rows * seq_len
    n_real = min(len(s), slots)
    out = np.full(slots, pad, dtype=np.int32)
    out[:n_real] = s[:n_real]
    return Packed(out.reshape(n_rows, seq_len), n_real=n_real, n_docs=len(docs),
                  n_truncated=max(0, len(s) - slots))


def labels_for(input_ids, bos: int, pad: int):
    """Causal-LM labels for packed rows: inputs with <s> and pad positions ignored (-100).

    Works on numpy arrays and torch tensors (HF shifts labels inside the model).
    """
    labels = input_ids.copy() if isinstance(input_ids, np.ndarray) else input_ids.clone()
    labels = labels.astype(np.int64) if isinstance(labels, np.ndarray) else labels.long()
    mask = (input_ids == bos) | (input_ids == pad)
    labels[mask] = IGNORE
    return labels
