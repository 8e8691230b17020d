"""What every stage notebook shares: the stage registry, the run context and its paths.

A notebook's parameters cell holds plain values: `profile`, `run_dir`, `run` (the
profile's `run` section) and one variable per key of its own section. `open_stage`
validates them against the same schema as the profile (papermill does no type
checking), prepares the environment (seed, offline flags, hub caches in the work dir),
and returns a `StageContext`. `finish_stage` writes the stage's metrics.json.

Run by hand (`interactive = True`, the notebooks' default, e.g. in JupyterLab), a stage
leaves the same files as the papermill runner: `open_stage` removes the stage's old
completion marker and metrics and marks its manifest entry running, `finish_stage`
writes the marker and completes the entry, both with `"mode": "interactive"` and the
same key the runner computes for the same values (see ipt_utils/manifest.py). Under
papermill (`interactive = False`) the runner does this itself.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import io, manifest
from .schema import REPO_ROOT, STAGE_PREFIX, spec, validate


@dataclass(frozen=True)
class Stage:
    name: str  # notebook stem, also the stage directory name
    section: str  # profile section / ipt_utils module holding `Params`
    deps: tuple[str, ...]  # every stage it MAY read; what it does read: stage_deps(name, sections)

    @property
    def notebook(self) -> Path:
        return REPO_ROOT / "notebooks" / f"{self.name}.ipynb"


STAGES: tuple[Stage, ...] = (
    Stage("01_synth_tune", "synth_tune", ()),
    Stage("02_synthesize", "synthesize", ("01_synth_tune",)),
    Stage("03_pretrain", "pretrain", ("02_synthesize",)),
    Stage("04_instruct_tune", "instruct_tune", ("03_pretrain",)),
    Stage("05_evaluate", "evaluate", ("03_pretrain", "04_instruct_tune")),
    Stage("06_report", "report", ("01_synth_tune", "02_synthesize", "03_pretrain",
                                  "04_instruct_tune", "05_evaluate")),
)
STAGE_BY_NAME = {s.name: s for s in STAGES}
REPORT_INPUTS = ("02_synthesize", "03_pretrain", "04_instruct_tune", "05_evaluate")  # what 06 always shows


def _stage_refs(value, own: str) -> set[str]:
    """Stages named by `stage:NN_name[/sub]` values anywhere in a section (not `own`)."""
    if isinstance(value, str):
        name = value[len(STAGE_PREFIX):].split("/", 1)[0] if value.startswith(STAGE_PREFIX) else ""
        return {name} if name in STAGE_BY_NAME and name != own else set()
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return set().union(*(_stage_refs(v, own) for v in value))
    return set()


def stage_deps(name: str, sections: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """The stages whose outputs stage `name` reads with these params, in stage order.

    `sections`: profile section -> its values (dicts, as in a profile or the notebook
    parameters). The runner's plan, the stage keys and interactive runs all use this, so a
    stage depends on another only when it uses that stage's output: 02 on 01 only when the
    synthesizer is `stage:01_synth_tune` and some setting uses a model (not rule_based);
    03 on 02 only when an arm reads this run's augmented corpus; 04 on 03 when it tunes
    arms; 05 on 03/04 per `model_sets`; 06 on what it reports (02-05 and whatever they
    need). A section missing from `sections` counts as using everything (`Stage.deps`).
    """
    st = STAGE_BY_NAME[name]
    if st.section not in sections:
        return st.deps
    sec = dict(sections[st.section])
    deps: set[str] = set()
    if name == "02_synthesize":
        backends = [sec.get("backend")] + [dict(v).get("backend") for v in sec.get("variants") or ()]
        if all(b == "rule_based" for b in backends):  # no setting loads the synthesizer
            sec.pop("model", None)
    elif name == "03_pretrain":
        from .pretrain import AUGMENTED_RECIPES

        variants = {k: dict(v) for k, v in (sec.get("arm_variants") or {}).items()}
        for arm in sec.get("arms") or ():
            recipe, aug = (variants[arm]["recipe"], variants[arm]["augmented"]) if arm in variants else (arm, "")
            if recipe in AUGMENTED_RECIPES and (aug == "" or aug.startswith("variant:")):
                deps.add("02_synthesize")
    elif name == "04_instruct_tune":
        if sec.get("arms"):
            deps.add("03_pretrain")
    elif name == "05_evaluate":
        sets = sec.get("model_sets") or ()
        deps |= {d for d, s in (("03_pretrain", "pretrain"), ("04_instruct_tune", "instruct_tune")) if s in sets}
    elif name == "06_report":
        deps |= set(dependency_closure(REPORT_INPUTS, sections))
    deps |= _stage_refs(sec, name)
    return tuple(s.name for s in STAGES if s.name in deps)


# Optional packages some values need (not in every environment: see environment.yml)
OPTIONAL_PACKAGES = (  # (section, key, value, import name, pip name)
    ("pretrain", "attn_implementation", "flash_attention_2", "flash_attn", "flash-attn"),
    ("synth_tune", "method", "qlora", "bitsandbytes", "bitsandbytes"),
)


def missing_packages(sections: Mapping[str, Mapping[str, Any]], stages=None) -> list[str]:
    """One message per optional package a value asks for but this environment lacks
    (only for the sections of `stages`, default all)."""
    import importlib.util

    wanted = None if stages is None else {STAGE_BY_NAME[s].section for s in stages}
    out = []
    for section, key, value, module, pip_name in OPTIONAL_PACKAGES:
        if (wanted is None or section in wanted) and dict(sections.get(section) or {}).get(key) == value \
                and importlib.util.find_spec(module) is None:
            out.append(f"{section}.{key}: {value} needs the {pip_name} package, which is not installed "
                       f"(pip install {pip_name}; it is optional in environment.yml), or choose another {key}")
    return out


def dependency_closure(names, sections: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """`names` and every stage they need, transitively, in stage order."""
    needed, todo = set(), list(names)
    while todo:
        n = todo.pop()
        if n not in needed:
            needed.add(n)
            todo.extend(stage_deps(n, sections))
    return [s.name for s in STAGES if s.name in needed]


def default_stages(sections: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What `run` without --stages runs: the report and everything it needs (01 only when
    the run's synthesizer is tuned here)."""
    return dependency_closure([STAGES[-1].name], sections)


def params_class(section: str):
    """The `Params` dataclass of a stage section (lives at the top of its module)."""
    if section == "run":
        return RunParams
    return importlib.import_module(f"ipt_utils.{section}").Params


@dataclass
class RunParams:
    seed: int = spec(ge=0, help="global seed for data order, init and sampling")
    work_dir: str = spec(help="big artifacts (models, shards, caches); '' = <run_dir>/work")
    device: str = spec(choices=("auto", "cpu", "cuda"))
    offline: bool = spec(help="set HF_HUB_OFFLINE/HF_DATASETS_OFFLINE")
    dtype: str = spec(choices=("auto", "float32", "bfloat16"), help="auto = bf16 on GPU, fp32 on CPU")


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


def work_root_for(run_dir: Path, run: RunParams) -> Path:
    if run.work_dir:
        p = Path(run.work_dir).expanduser()
        return p if p.is_absolute() else REPO_ROOT / p
    return run_dir / "work"


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
    from . import progress

    progress.set_interactive(interactive)
    if interactive:
        _begin_interactive(ctx, st, cfg)
    return ctx, cfg


def _begin_interactive(ctx: StageContext, st: Stage, cfg) -> None:
    """What the runner does around a papermill run, for a notebook run by hand."""
    from .runner import run_header

    run, params = dataclasses.asdict(ctx.run), dataclasses.asdict(cfg)
    profile_path = REPO_ROOT / "params" / f"{ctx.profile}.yaml"
    # the other sections decide some dependencies (06 on 01): the profile's values, as the runner sees them
    prof = _load_profile(profile_path)
    sections = {**_profile_sections(prof, ctx.run_dir), "run": run, st.section: params}
    deps = stage_deps(st.name, sections)
    ctx.key = manifest.stage_key(manifest.params_hash(st.section, run, params), deps, ctx.run_dir)
    header = run_header(ctx.profile, profile_path if profile_path.exists() else "", ctx.run_dir,
                        ctx.work_root, {})
    if prof is not None:  # the runner's plan, for the profile with this notebook's values
        from .plan import estimate

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
    from .profiles import load_profile
    from .schema import SchemaError

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
    """Write the stage's metrics.json (atomically).

    Under papermill the runner then writes the completion marker; run interactively,
    this writes it and completes the stage's manifest entry (`"mode": "interactive"`).
    """
    path = io.write_json(ctx.stage_dir / "metrics.json", dict(metrics))
    if ctx.interactive and ctx.key:
        manifest.complete(ctx.run_dir, ctx.stage, key=ctx.key, wall_s=time.perf_counter() - ctx.started,
                          mode="interactive")
    return path
