"""What every stage notebook shares: the run context, its paths and the environment.

A notebook's parameters cell holds plain values: `profile`, `run_dir`, `run` (the
profile's `run` section) and one variable per key of its own section. `open_stage`
validates them against the same schema as the profile (papermill does no type
checking), prepares the environment (seed, offline flags, hub caches in the work dir),
and returns a `StageContext`. `finish_stage` writes the stage's metrics.json. Which
stages exist and what each reads: ipt_utils/registry.py.

Run by hand (`interactive = True`, the notebooks' default, e.g. in JupyterLab), a stage
leaves the same files as the papermill runner: `open_stage` removes the stage's old
completion marker and metrics and marks its manifest entry running, `finish_stage`
writes the marker and completes the entry, both with `"mode": "interactive"` and the
same key the runner computes for the same values (see ipt_utils/manifest.py). Under
papermill (`interactive = False`) the runner does this itself.
"""
from __future__ import annotations

import dataclasses
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import contracts, io, manifest, progress
from .plan import estimate
from .profiles import load_profile
from .registry import STAGE_BY_NAME, RunParams, Stage, missing_packages, params_class, stage_deps, work_root_for
from .schema import REPO_ROOT, SchemaError, validate


@dataclass
class StageContext:
    profile: str
    stage: str
    run_dir: Path
    work_root: Path
    run: RunParams
    interactive: bool
    key: str = ""  # completion key (interactive runs; the runner keeps its own)
    started: float = field(default_factory=time.perf_counter)

    @property
    def seed(self) -> int:
        return self.run.seed

    @property
    def stage_dir(self) -> Path:
        """Small outputs of this stage (metrics, tables, figures); kept in results/."""
        return self.out(self.stage)

    @property
    def work(self) -> Path:
        """Big artifacts of this stage (models, shards, caches)."""
        return self.work_of(self.stage)

    def out(self, stage: str) -> Path:
        p = self.run_dir / stage
        p.mkdir(parents=True, exist_ok=True)
        return p

    def work_of(self, stage: str) -> Path:
        p = self.work_root / stage
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def device(self) -> str:
        if self.run.device != "auto":
            return self.run.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def torch_dtype(self):
        import torch

        if self.run.dtype == "auto":
            return torch.bfloat16 if self.device == "cuda" else torch.float32
        return getattr(torch, self.run.dtype)


HF_CACHE_VARS = ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_XET_CACHE")  # -> <work>/hf_cache/{hub,datasets,xet}


def setup_environment(work_root: Path, run: RunParams) -> None:
    """Process-wide settings every stage needs; idempotent.

    Only the hub caches move into the work dir; HF_HOME stays where the user has it, so a
    saved login (`hf auth login`: $HF_HOME/token, default ~/.cache/huggingface/token) and
    HF_TOKEN keep working for gated models. A cache variable the user set is kept, and so is
    the whole layout under an HF_HOME the user set: on a cluster, point HF_HUB_CACHE at the
    shared cache holding the pre-downloaded models and HF_DATASETS_CACHE at node-local disk.
    """
    if "HF_HOME" not in os.environ:
        for var, sub in zip(HF_CACHE_VARS, ("hub", "datasets", "xet")):
            os.environ.setdefault(var, str(work_root / "hf_cache" / sub))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if run.offline:
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ[var] = "1"
    random.seed(run.seed)
    try:
        import numpy as np

        np.random.seed(run.seed)
    except ImportError:  # pragma: no cover
        pass


def open_stage(stage: str, ns: Mapping[str, Any]):
    """Validate a notebook's parameters; return (StageContext, Params)."""
    st = STAGE_BY_NAME[stage]
    cls = params_class(st.section)
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in names if n not in ns]
    if missing:
        raise NameError(f"notebook {stage}: parameters cell lacks {missing}")
    source = f"{stage} parameters"
    cfg = validate(cls, {n: ns[n] for n in names}, source=source, prefix=st.section)
    run = validate(RunParams, ns["run"], source=source, prefix="run")
    missing = missing_packages({st.section: dataclasses.asdict(cfg)})
    if missing:
        raise ModuleNotFoundError(f"{stage}: " + "; ".join(missing))
    run_dir = Path(ns["run_dir"]).expanduser().resolve()
    work_root = work_root_for(run_dir, run)
    setup_environment(work_root, run)
    interactive = bool(ns.get("interactive", True))
    ctx = StageContext(profile=ns["profile"], stage=stage, run_dir=run_dir,
                       work_root=work_root, run=run, interactive=interactive)
    ctx.stage_dir  # create
    progress.set_interactive(interactive)
    if interactive:
        _begin_interactive(ctx, st, cfg)
    return ctx, cfg


def _begin_interactive(ctx: StageContext, st: Stage, cfg) -> None:
    """What the runner does around a papermill run, for a notebook run by hand."""
    run, params = dataclasses.asdict(ctx.run), dataclasses.asdict(cfg)
    profile_path = REPO_ROOT / "params" / f"{ctx.profile}.yaml"
    # the other sections decide some dependencies (06 on 01): the profile's values, as the runner sees them
    prof = _load_profile(profile_path)
    sections = {**_profile_sections(prof, ctx.run_dir), "run": run, st.section: params}
    deps = stage_deps(st.name, sections)
    ctx.key = manifest.completion_key(manifest.params_hash(st.section, run, params), deps, ctx.run_dir)
    header = manifest.run_header(ctx.profile, profile_path if profile_path.exists() else "", ctx.run_dir,
                        ctx.work_root, {})
    if prof is not None:  # the runner's plan, for the profile with this notebook's values
        prof.sections.update({"run": ctx.run, st.section: cfg})
        header["plan"] = estimate(prof)

    def change(m):
        known = m.get("params") or {}
        m.update(header)
        m["params"] = {**known, "run": run, st.section: params}

    manifest.update(ctx.run_dir, change)
    notebook = os.environ.get("JPY_SESSION_NAME") or str(st.notebook)
    manifest.begin(ctx.run_dir, st.name, key=ctx.key, mode="interactive", notebook=notebook)
    ctx.started = time.perf_counter()


def _load_profile(profile_path: Path):
    """The notebook's profile from params/, or None (not there, or invalid)."""
    if not profile_path.exists():
        return None
    try:
        return load_profile(str(profile_path))
    except SchemaError:
        return None


def _profile_sections(prof, run_dir: Path) -> dict:
    """The profile's sections (its YAML), else those a runner recorded in the run's manifest."""
    if prof is not None:
        return prof.values()
    try:
        return dict(io.read_json(Path(run_dir) / manifest.MANIFEST).get("params") or {})
    except (FileNotFoundError, ValueError):
        return {}


def finish_stage(ctx: StageContext, metrics: Mapping[str, Any]) -> Path:
    """Check the stage's metrics against its declared schema (ipt_utils/contracts.py), then
    write them to metrics.json (atomically).

    Under papermill the runner then writes the completion marker; run interactively,
    this writes it and completes the stage's manifest entry (`"mode": "interactive"`).
    """
    contracts.check_metrics(ctx.stage, metrics)
    path = io.write_json(ctx.stage_dir / "metrics.json", dict(metrics))
    if ctx.interactive and ctx.key:
        manifest.complete(ctx.run_dir, ctx.stage, key=ctx.key, wall_s=time.perf_counter() - ctx.started,
                          mode="interactive")
    return path
