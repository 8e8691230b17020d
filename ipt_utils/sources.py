"""The one reader of record sources, used by every stage: a local file or a hub dataset,
streamed record by record with where each record came from.

A source is a local .jsonl/.parquet/.txt file (io.iter_local_records: file:line, file#row;
invalid UTF-8 or JSON raises naming file and line) or `hf:NAME` / `hf:NAME:CONFIG` (NAME a
hub dataset or a local dataset directory in the hub's layout), read with
`datasets.load_dataset(..., streaming=True)`: data files are fetched as the records are
consumed, so a reader that stops early (a token, step or text budget) never downloads the
rest of a hub corpus. A hub record's location is NAME[CONFIG:SPLIT]#i.
"""
from __future__ import annotations

from typing import Iterator, Sequence

from . import io
from .schema import HUB_PREFIX, hub_source, resolve_path


def hub_configs(name: str) -> list[str | None]:
    """Every config of a hub dataset ([None] when it declares none)."""
    import datasets

    return datasets.get_dataset_config_names(name) or [None]


def located_records(source: str, split: str = "train", *, configs: Sequence[str] = (),
                    all_configs: bool = True, text_column: str = "text",
                    shard: tuple[int, int] | None = None) -> Iterator[tuple[str, dict]]:
    """(location, record) of every record of `source`, streamed in order (the same order on
    every call).

    hf: sources: the config named in the source, else `configs`, else every config of the
    dataset (all_configs; False: the dataset's default, no config passed). shard=(index, n):
    only the index-th of n disjoint groups of the dataset's data files (each config must have
    at least n). text_column: the field a .txt line becomes.
    """
    hub = hub_source(source)
    if hub is None:
        yield from io.iter_local_records(resolve_path(source), text_column)
        return
    import datasets

    name, config = hub
    names = [config] if config else list(configs) or (hub_configs(name) if all_configs else [None])
    for c in names:
        ds = (datasets.load_dataset(name, c, split=split, streaming=True) if c is not None
              else datasets.load_dataset(name, split=split, streaming=True))
        where = f"{name}[{c or 'default'}:{split}]"
        if shard is not None:
            index, n = shard
            if ds.num_shards < n:
                raise ValueError(f"{where}: needs at least num_shards={n} data files, the dataset has "
                                 f"{ds.num_shards} (one group of files per shard); shard by records instead")
            ds = ds.shard(num_shards=n, index=index)
            where += f" files {index}/{n}"
        for i, rec in enumerate(ds):
            yield f"{where}#{i}", rec


def records(source: str, split: str = "train", **kw) -> Iterator[dict]:
    """The records of `source`, streamed in order (see located_records)."""
    return (rec for _, rec in located_records(source, split, **kw))


def identity(source: str):
    """What names a source in a cache key: the hf: string itself, else the resolved local path."""
    return source if source.startswith(HUB_PREFIX) else resolve_path(source)
