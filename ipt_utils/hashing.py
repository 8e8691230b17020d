"""Content hashes: stage keys, shard and model fingerprints, cache keys, record ids, seeds.

Every hash the package writes goes through `digest` or `file_digest`. Each caller fixes its
parts, algorithm and length; changing any of them changes keys already on disk (finished
stages re-run, caches and shards stop resuming, record ids stop matching), so they stay as
they are.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Union

Part = Union[str, bytes]


def digest(parts: Part | Iterable[Part], n: int | None = 16, algo: str = "sha256") -> str:
    """Hex digest of `parts` (one str/bytes, or an iterable of them hashed one after the other
    with nothing between; str as UTF-8), cut to its first `n` characters (None: all)."""
    h = hashlib.new(algo)
    for p in (parts,) if isinstance(parts, (str, bytes)) else parts:
        h.update(p.encode("utf-8") if isinstance(p, str) else p)
    return h.hexdigest() if n is None else h.hexdigest()[:n]


def file_digest(path: str | Path, n: int | None = None, algo: str = "sha256") -> str:
    """`digest` of a file's bytes, read in 1 MiB blocks (any size)."""
    with open(path, "rb") as f:
        return digest(iter(lambda: f.read(1 << 20), b""), n, algo)
