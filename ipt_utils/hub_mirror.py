"""Offline mirrors of the hub repositories the GPU profiles load: what every mirror shares.

Each mirror is a local directory laid out like the real hub repository (folder, config and
file names, file formats, splits, field names and types) and filled with a little
synthetic content made from the shipped fixtures, so the code path that reads the hub
(`datasets.load_dataset(dir, config, split=..., streaming=...)`,
`AutoModelForCausalLM/AutoTokenizer.from_pretrained(dir)`) runs in CI. A profile is
"rehearsed" by replacing `hf:NAME` with `hf:<dataset_dir>` (datasets) or the model dir.

Builds are deterministic for given arguments, atomic (temp dir + rename) and idempotent
(a marker file records the builder version and arguments; a matching mirror is reused).
Layout facts we could not read on the hub are marked `unverified` where they are used.

Here: where mirrors go, the atomic build and the hub's file writers (parquet, README card).
The mirrors: ipt_utils/dataset_mirror.py (datasets), ipt_utils/model_mirror.py (models and
their tokenizers), ipt_utils/eval_mirror.py (stage 05's evaluation datasets).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .io import DIR_MODE

BUILDER_VERSION = 3
MARKER = ".hub_mirror.json"  # hidden: `datasets` ignores dot-files when it infers data files
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def dataset_dir(root: Path, repo: str) -> Path:
    return Path(root) / "datasets" / repo


def model_dir(root: Path, repo: str) -> Path:
    return Path(root) / "models" / repo


# =========================================================================== helpers

def fixture_rows(name: str) -> list[dict]:
    """The rows of a shipped fixture file (`name` relative to ipt_utils/fixtures/)."""
    with open(FIXTURES / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build_atomically(dest: Path, key: dict, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp)` into a fresh temp dir beside `dest` and rename it into place, unless
    `dest` already holds a finished build with the same key (the no-op rebuild)."""
    dest = Path(dest)
    key = {"builder_version": BUILDER_VERSION, **key}
    marker = dest / MARKER
    if marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == key:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        write(tmp)
        (tmp / MARKER).write_text(json.dumps(key, sort_keys=True) + "\n", encoding="utf-8")
        tmp.chmod(DIR_MODE)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def write_parquet(path: Path, rows: list[dict], schema, features: dict | None = None) -> None:
    """A parquet file; `features` (datasets' feature dict) is embedded in the schema metadata as
    `datasets.push_to_hub` does, so e.g. a ClassLabel column reads back as one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if features is not None:
        schema = schema.with_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def readme(front_matter: dict, title: str, body: str) -> str:
    import yaml

    head = yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True)
    return f"---\n{head}---\n\n# {title}\n\n{body}\n"


def configs_block(configs: dict[str, dict[str, str]]) -> list[dict]:
    """config -> {split: glob} as the hub's README `configs:` list."""
    return [{"config_name": name, "data_files": [{"split": s, "path": p} for s, p in splits.items()]}
            for name, splits in configs.items()]


def chunks(rows: list, n: int) -> list[list]:
    """`rows` split into n contiguous, near-equal, non-empty parts (fewer if rows < n)."""
    n = max(1, min(n, len(rows)))
    k, r = divmod(len(rows), n)
    out, start = [], 0
    for i in range(n):
        end = start + k + (i < r)
        out.append(rows[start:end])
        start = end
    return out


def known_repo(kind: str, registry: dict, repo: str):
    """registry[repo], or a ValueError naming the repos that have a mirror."""
    if repo not in registry:
        raise ValueError(f"no {kind} mirror for {repo!r}; known: {sorted(registry)}")
    return registry[repo]


MIRROR_NOTE = ("Offline mirror written by ipt_utils.hub_mirror: the real repository's layout with a "
               "little synthetic content, for rehearsing the GPU profiles without the hub.")
