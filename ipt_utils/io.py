"""Atomic file writes and JSONL helpers.

Every result file is written to a temporary sibling and renamed into place, so a
crash never leaves a half-written file that a later run would trust.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .hashing import digest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; results get the usual 0666 & ~umask (readable on shared storage)
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()  # likewise for mkdtemp's 0700 directories renamed into place


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temp file next to `path`; on clean exit fsync and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    return Path(path)


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) of a UTF-8 text file; invalid UTF-8 raises ValueError naming
    the file and line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid UTF-8 ({e.reason} at byte {e.start})") from None
            yield lineno, line


def iter_jsonl_numbered(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a bad line raises ValueError naming
    file and line."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    """Yield one dict per line; a bad line raises ValueError naming file and line."""
    return (row for _, row in iter_jsonl_numbered(path))


def read_jsonl(path: str | Path) -> list[dict]:
    return list(iter_jsonl(path))


def write_parquet(path: str | Path, rows: Iterable[dict], schema, batch_rows: int = 8192) -> int:
    """Stream `rows` into a Parquet file with `schema` (a pyarrow.Schema), one row group per
    `batch_rows`, written atomically like every other result file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, batch = 0, []
    with atomic_open(path, "wb") as f, pq.ParquetWriter(f, schema) as writer:
        for row in rows:
            batch.append(row)
            if len(batch) == batch_rows:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                n, batch = n + len(batch), []
        if batch or not n:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            n += len(batch)
    return n


def iter_local_records(path: str | Path, text_column: str = "text") -> Iterator[tuple[str, dict]]:
    """(location, record) for every record of a local corpus file, streamed: .jsonl (one JSON
    object per line), .parquet (row groups), .txt/.text (one text per line, as `text_column`).
    Invalid UTF-8 / JSON raises ValueError naming the file and line."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches():
            for rec in batch.to_pylist():
                yield f"{path}#{n}", rec
                n += 1
    elif path.suffix in (".txt", ".text"):
        for lineno, line in iter_lines(path):
            yield f"{path}:{lineno}", {text_column: line.rstrip("\n")}
    else:
        for lineno, rec in iter_jsonl_numbered(path):
            yield f"{path}:{lineno}", rec


def record_text(value) -> str | None:
    """The text a raw record carries into every stage (02's prompts, 03's documents of every
    arm): its string without surrounding whitespace; None when there is no text (not a
    string, empty or whitespace only), which the stages skip and count."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    return text or None


def record_id(rec: dict, text: str) -> str:
    """The id linking a raw record to its augmented row (stage 02 -> 03): its `id` field, else
    `sha1:` + a hash of its raw text, which does not depend on how the corpus was read or sharded."""
    rid = rec.get("id")
    if rid is not None:
        return str(rid)
    return "sha1:" + digest(text, n=20, algo="sha1")
