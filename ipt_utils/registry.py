"""The stages of a run and its `run` section: which stages exist, which profile section
(and ipt_utils module) each reads, which earlier outputs it reads under given values, and
where the run's big files go.

Everything here is plain data and arithmetic on profile values: the runner, the plan,
profile loading and the notebooks' `stage.open_stage` all decide dependencies and paths
with these functions, so they agree.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .schema import REPO_ROOT, STAGE_PREFIX, spec

# Stage 03's built-in data arms (its `arms`, stage 04's `arms` and stage 05's model sets name them)
ARMS = ("vanilla", "mix", "instruct", "pairs_only", "continual")
AUGMENTED_RECIPES = ("instruct", "pairs_only", "continual")  # recipes that read stage 02's augmented corpus
REPLICA_SEP = "_s"  # arm `mix_s2`: arm mix trained again from seed run.seed + 2 (init and data order)


def split_replica(arm: str) -> tuple[str, int]:
    """`<arm>_s<k>` (k >= 1, no leading zero) -> (arm, k), a seed replica of `arm`; else (arm, 0)."""
    base, sep, k = arm.rpartition(REPLICA_SEP)
    if sep and base and k.isdigit() and k[0] != "0":
        return base, int(k)
    return arm, 0


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
        variants = {k: dict(v) for k, v in (sec.get("arm_variants") or {}).items()}
        for arm in (split_replica(a)[0] for a in sec.get("arms") or ()):
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


def work_root_for(run_dir: Path, run: RunParams) -> Path:
    if run.work_dir:
        p = Path(run.work_dir).expanduser()
        return p if p.is_absolute() else REPO_ROOT / p
    return run_dir / "work"
