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

Streaming (corpora larger than memory): `tokenize_to_disk` reads an iterable of texts in
chunks of `chunk_docs`, tokenizes each chunk (split over `num_proc` worker processes
that keep the tokenizer loaded) and appends its tokens to `<cache>/<key>/tokens.bin`
(raw int32) while only the per-document offsets (8 bytes a document) stay in memory;
the finished cache is memory-mapped (`Docs.load`). Mixing works on document indices
only (`gather` fetches tokens on demand) and `pack_to_npy` writes the packed rows chunk
by chunk into a memory-mapped .npy whose shape is known up front, so peak memory is
O(chunk) + O(documents) rather than O(tokens). It yields exactly the rows of the
in-memory `pack` (tested).

Text is text: every text is tokenized by `encode_texts` with `split_special_tokens=True`, so
a document that spells "<s>", "</s>", "<pad>" or "<|end_of_text|>" gets the tokens of those
characters, never the control ids; BOS/EOS/pad are placed only by `stream`/`pack` (and the
stages' own example encoders). `check_text_only` refuses a tokenizer that would still parse
them (a slow tokenizer ignoring the flag). TEXT_POLICY is part of `tokenizer_fingerprint`,
so token caches built under another policy are never reused.

Document masking: `position_ids_for` restarts positions at every `<s>`; given those, no
2-D attention mask and no KV cache (use_cache=False, as in training), transformers builds a block-diagonal causal mask for sdpa/eager
(masking_utils.find_packed_sequence_indices), and `flash_attention_2` runs varlen kernels
on flattened rows (see ipt_utils.pretrain.pretrain_batches), so no token attends to an
earlier document of its row.
"""
from __future__ import annotations

import itertools
import json
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .hashing import digest, file_digest

IGNORE = -100  # label of a position with no loss (torch cross_entropy's ignore_index); every trainer uses it
# how text becomes ids (hashed into tokenizer_fingerprint): "text-only" = special-token strings
# in data are plain text (split_special_tokens=True); change it when that policy changes
TEXT_POLICY = "text-only-1"
CACHE_VERSION = "2"  # 2: on-disk streamed token caches (tokens.bin + offsets.npy)  # bump when the tokenization/rendering code changes meaning


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
        lengths = self.offsets[index + 1] - self.offsets[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # position j of the output maps to starts[doc(j)] + (j - offsets[doc(j)])
        starts = self.offsets[:-1][index]
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return Docs(self.tokens[gather], offsets)

    def save(self, path: Path) -> None:
        """Write as a cache directory (tokens.bin + offsets.npy), atomically."""
        write_docs_dir(Path(path), [self.tokens], self.offsets)

    @classmethod
    def load(cls, path: Path) -> "Docs":
        """A cache directory, tokens memory-mapped (read-only)."""
        path = Path(path)
        offsets = np.load(path / "offsets.npy")
        n = int(offsets[-1])
        tokens = np.memmap(path / "tokens.bin", dtype=np.int32, mode="r", shape=(n,)) if n \
            else np.zeros(0, dtype=np.int32)
        return cls(tokens, offsets)


def write_docs_dir(path: Path, token_chunks: Iterable[np.ndarray], offsets: np.ndarray | None = None,
                   lengths: Iterable[np.ndarray] | None = None, meta: dict | None = None) -> None:
    """Stream token chunks to `<path>/tokens.bin` and write offsets.npy (and `meta` as meta.json,
    read after the chunks are consumed); atomic (tmp dir + rename)."""
    import shutil

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with open(tmp / "tokens.bin", "wb") as f:
        for chunk in token_chunks:
            np.asarray(chunk, dtype=np.int32).tofile(f)
    if offsets is None:
        lens = np.concatenate([np.asarray(x, dtype=np.int64) for x in lengths] or [np.zeros(0, np.int64)])
        offsets = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
    np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    if meta is not None:
        (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True, default=str))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


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
    """Hash of what decides token ids: the fast tokenizer's full JSON + special tokens + TEXT_POLICY."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else repr(tokenizer.get_vocab())
    specials = json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, len(tokenizer)])
    return digest([TEXT_POLICY, vocab, specials])


_TEXT_ONLY_CHECKED: "weakref.WeakSet" = weakref.WeakSet()


def check_text_only(tokenizer) -> None:
    """Refuse a tokenizer that turns special-token strings in text into control ids even with
    split_special_tokens=True (checked once per tokenizer object on its own special tokens)."""
    if tokenizer in _TEXT_ONLY_CHECKED:
        return
    specials = [t for t in tokenizer.all_special_tokens if t]
    ids = tokenizer(" ".join(specials), add_special_tokens=False, split_special_tokens=True)["input_ids"]
    # <unk> is what a vocabulary without byte fallback gives for unknown characters: not a forgery
    forged = sorted(set(ids) & (set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}))
    if forged:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} ({type(tokenizer).__name__}) "
                         f"parses special-token strings out of text (ids {forged}) even with "
                         f"split_special_tokens=True; a fast tokenizer (tokenizer.json) is needed")
    _TEXT_ONLY_CHECKED.add(tokenizer)


def encode_texts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text read as text: no special token added, none parsed out of the
    text ("<s>" in a web page is the characters <, s, >). Callers place BOS/EOS themselves."""
    check_text_only(tokenizer)
    return tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True)["input_ids"]


_WORKER_TOKENIZER = None


def _init_worker(tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _encode(texts: list[str]) -> list[list[int]]:
    return encode_texts(_WORKER_TOKENIZER, texts)


def _chunks(items: Iterable, size: int):
    chunk = []
    for x in items:
        chunk.append(x)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def iter_tokenized(tokenizer, texts: Iterable[str], batch_size: int = 1000, num_proc: int = 1,
                   chunk_docs: int = 100_000):
    """Yield Docs, one per chunk of `chunk_docs` texts read from the iterable (never more in memory).

    num_proc > 1: a pool of worker processes (tokenizer sent once, at start) encodes the
    batches of each chunk in parallel; results keep the input order.
    """
    batch_size = max(1, min(batch_size, chunk_docs))
    pool = None
    if num_proc > 1:
        import multiprocessing as mp
        import os

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # processes, not threads, per worker
        pool = mp.get_context("fork").Pool(num_proc, initializer=_init_worker, initargs=(tokenizer,))
    try:
        for chunk in _chunks(texts, chunk_docs):
            batches = [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
            if pool is not None and len(batches) > 1:
                ids = [x for part in pool.map(_encode, batches) for x in part]
            else:
                ids = [x for b in batches for x in encode_texts(tokenizer, b)]
            yield Docs.from_lists(ids)
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def tokenize(tokenizer, texts: Iterable[str], batch_size: int = 1000, num_proc: int = 1,
             chunk_docs: int = 100_000) -> Docs:
    """Token ids of each text (encode_texts: no special tokens added or parsed), in memory."""
    return concat(iter_tokenized(tokenizer, texts, batch_size, num_proc, chunk_docs))


def tokenize_to_disk(tokenizer, texts: Iterable[str], path: Path, batch_size: int = 1000, num_proc: int = 1,
                     chunk_docs: int = 100_000, max_tokens: int = 0, info: dict | None = None) -> Docs:
    """Stream-tokenize into the cache directory `path` (tokens.bin + offsets.npy); memory-mapped result.

    max_tokens > 0: stop reading `texts` after the chunk in which the documents' cost (length
    + 2 for <s>/</s>) reaches max_tokens, so a corpus larger than the budget is read only that
    far (at most one chunk more). meta.json records docs, tokens, cost, whether the texts ran
    out (`exhausted`) and `info` (the source's own counters, read when reading stops)."""
    lengths: list[np.ndarray] = []
    meta = {"docs": 0, "tokens": 0, "cost": 0, "exhausted": True, "max_tokens": max_tokens}

    def token_chunks():
        chunks = iter_tokenized(tokenizer, texts, batch_size, num_proc, chunk_docs)
        try:
            for d in chunks:
                lengths.append(d.lengths)
                meta["docs"] += len(d)
                meta["tokens"] += int(d.offsets[-1])
                meta["cost"] += int(d.offsets[-1]) + 2 * len(d)
                yield d.tokens
                if max_tokens and meta["cost"] >= max_tokens:
                    meta["exhausted"] = False  # stopped by the budget (the texts may hold more)
                    break
        finally:
            chunks.close()  # stops the worker pool; no text is read past this point
        meta["source"] = dict(info or {})

    write_docs_dir(Path(path), token_chunks(), lengths=lengths, meta=meta)
    return Docs.load(path)


def cache_meta(path: Path) -> dict:
    """meta.json of a token cache; caches written before it existed hold a whole source."""
    f = Path(path) / "meta.json"
    return json.loads(f.read_text()) if f.exists() else {"exhausted": True, "source": {}}


def prefix(docs: Docs, max_tokens: int) -> Docs:
    """The first documents whose cost (length + 2) first reaches max_tokens (all when 0 or short)."""
    if not max_tokens or len(docs) == 0:
        return docs
    csum = np.cumsum(docs.lengths + 2)
    k = min(len(docs), int(np.searchsorted(csum, max_tokens, side="left")) + 1)
    return Docs(docs.tokens[:int(docs.offsets[k])], docs.offsets[:k + 1])


def cache_key(*parts) -> str:
    """Stable short hash of strings / numbers / file paths (files hashed by content)."""
    pieces = (file_digest(p) if isinstance(p, Path) else json.dumps(p, sort_keys=True, default=str) for p in parts)
    return digest(itertools.chain([CACHE_VERSION], *((s, "|") for s in pieces)))


def cached_tokenize(cache_dir: Path, key: str, tokenizer, texts_fn, num_proc: int = 1,
                    chunk_docs: int = 100_000, max_tokens: int = 0, info: dict | None = None) -> tuple[Docs, bool]:
    """Load `<cache_dir>/<key>/` (memory-mapped) or stream-tokenize the iterable `texts_fn()`
    into it; returns (docs, hit).

    max_tokens > 0: only the prefix whose cost reaches max_tokens is read and returned (see
    tokenize_to_disk; `info` is the dict the source's generator updates). A cache read with a
    smaller budget is rebuilt for a larger one; one that holds the whole source serves any."""
    path = Path(cache_dir) / key
    if (path / "offsets.npy").exists():
        meta = cache_meta(path)
        if meta["exhausted"] or (max_tokens and meta["cost"] >= max_tokens):
            return prefix(Docs.load(path), max_tokens), True
    docs = tokenize_to_disk(tokenizer, texts_fn(), path, num_proc=num_proc, chunk_docs=chunk_docs,
                            max_tokens=max_tokens, info=info)
    return prefix(docs, max_tokens), False


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


def gather(sources: Sequence[Docs], src: np.ndarray, idx: np.ndarray) -> Docs:
    """Documents sources[src[j]].doc(idx[j]) in order j, vectorised per source."""
    src, idx = np.asarray(src), np.asarray(idx, dtype=np.int64)
    lengths = np.zeros(len(idx), dtype=np.int64)
    for k, d in enumerate(sources):
        sel = src == k
        lengths[sel] = d.offsets[idx[sel] + 1] - d.offsets[idx[sel]]  # not d.lengths: O(selected), not O(all docs)
    offsets = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.empty(int(offsets[-1]), dtype=np.int32)
    for k, d in enumerate(sources):
        sel = np.flatnonzero(src == k)
        if len(sel):
            part = d.take(idx[sel])
            tokens[np.repeat(offsets[sel] - part.offsets[:-1], part.lengths)
                   + np.arange(len(part.tokens), dtype=np.int64)] = part.tokens
    return Docs(tokens, offsets)


def pack_to_npy(path: Path, sources: Sequence[Docs], src: np.ndarray, idx: np.ndarray, seq_len: int,
                bos: int, eos: int, pad: int, n_rows: int, chunk_docs: int = 100_000) -> Packed:
    """Streaming `pack`: the documents (src, idx) in order, written chunk by chunk into an
    int32 .npy of shape [n_rows, seq_len] (memory-mapped); the same rows as
    pack(gather(sources, src, idx), ..., n_rows). Returns Packed with the memory-mapped rows."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npy")
    slots = n_rows * seq_len
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32, shape=(n_rows, seq_len))
    flat = out.reshape(-1)
    pos, n_stream = 0, 0
    for i in range(0, len(idx), chunk_docs):
        s = stream(gather(sources, src[i:i + chunk_docs], idx[i:i + chunk_docs]), bos, eos)
        n_stream += len(s)
        take = max(0, min(len(s), slots - pos))
        flat[pos:pos + take] = s[:take]
        pos += take
    flat[pos:] = pad
    out.flush()
    del out, flat
    tmp.replace(path)
    return Packed(np.load(path, mmap_mode="r"), n_real=pos, n_docs=len(idx),
                  n_truncated=max(0, n_stream - slots))


def right_pad(examples: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> dict:
    """A batch of (ids, labels) examples right-padded to the longest (stages 01 and 04): padding
    is masked from attention and loss (labels IGNORE), so any pad id serves."""
    import torch

    n = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, (ids, lab) in enumerate(examples):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, :len(lab)] = torch.tensor(lab)
        mask[i, :len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def position_ids_for(input_ids, bos: int):
    """Positions restarting at 0 on every `<s>` (and at each row start): document masking.

    Works on numpy arrays and torch tensors [rows, seq_len].
    """
    is_torch = not isinstance(input_ids, np.ndarray)
    ids = input_ids.cpu().numpy() if is_torch else input_ids
    ar = np.broadcast_to(np.arange(ids.shape[-1], dtype=np.int64), ids.shape)
    start = np.maximum.accumulate(np.where(ids == bos, ar, 0), axis=-1)
    pos = ar - start
    if is_torch:
        import torch

        return torch.from_numpy(np.ascontiguousarray(pos)).to(input_ids.device)
    return pos


def labels_for(input_ids, bos: int, pad: int):
    """Causal-LM labels for packed rows: inputs with <s> and pad positions ignored (-100).

    Works on numpy arrays and torch tensors (HF shifts labels inside the model).
    """
    labels = input_ids.copy() if isinstance(input_ids, np.ndarray) else input_ids.clone()
    labels = labels.astype(np.int64) if isinstance(labels, np.ndarray) else labels.long()
    mask = (input_ids == bos) | (input_ids == pad)
    labels[mask] = IGNORE
    return labels
