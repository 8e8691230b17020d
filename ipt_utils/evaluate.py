"""Stage 05: evaluate every model the run produced with lm-evaluation-harness.

Models: <work>/03_pretrain/<arm>/model (untuned) and <work>/04_instruct_tune/<arm>/model
(tuned), found by scanning those directories, plus `external_models` (baselines by hub
name or local path). Tasks are named canonically (`arc_easy`, ..., `pubmedqa`, ...); each
maps to the harness's own task (general suite, online), to an offline twin over a local
JSONL file (`ipt_<task>`, YAMLs in ipt_utils/tasks/), or, for the AdaptLLM domain sets,
to a hub twin (`ipt_hub_<task>`). Outputs in the stage dir: results/<model_id>.json (the
harness's results dict + an "ipt" block naming model, arm, run) and summary.csv
(model_id,arm,tuned,task,metric,value,n) with canonical task names, so 06_report never
needs to know which twin ran.

Hub mirrors (rehearsals): when the environment variable IPT_HUB_MIRROR names a directory,
every hub dataset a task loads by name -- the hub twins' `dataset_path: AdaptLLM/...` and the
harness tasks' own (`allenai/ai2_arc`, `cais/mmlu`, ...) -- is read from
`$IPT_HUB_MIRROR/datasets/<dataset_path>` when that directory exists (ipt_utils.eval_mirror
writes them). Config name, splits and processing stay those of the task; only the location
changes: a generated YAML per task (mmlu: per subject) includes the task's own YAML by
absolute path and overrides `dataset_path`, and is indexed over the registered task of the
same name, as a later lm-eval include path would be (`mirror_overrides`, `task_manager`).
Unset, nothing changes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypedDict

from . import assets, contracts, io
from .eval_models import make_lm
from .hashing import digest
from .schema import HUB_PREFIX, resolve_path, spec

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
EVAL_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"
DATA_PLACEHOLDER = "__IPT_EVAL_DATA__"
SUMMARY_COLUMNS = ["model_id", "arm", "tuned", "task", "metric", "value", "n"]
# How the domain tasks are scored (part of every result's fingerprint: results scored by an
# older rule are never reused); docs/EVALUATION.md describes the rules.
SCORING = "adaptllm-2"  # 2: ConvFinQA tolerance purely absolute, unevaluable numbers match nothing
log = logging.getLogger(__name__)
MODEL_SETS = {"pretrain": ("03_pretrain", False), "instruct_tune": ("04_instruct_tune", True)}


@dataclass(frozen=True)
class TaskSpec:
    name: str  # canonical name used in summary.csv and the report
    label: str  # as printed in the paper's tables
    domain: str  # general | biomedicine | finance
    metric: str  # headline metric (the paper's choice, docs/PAPER.md §6)
    harness: str  # task name used online
    fixture: str  # eval/<fixture>.jsonl for the offline twin

    @property
    def twin(self) -> str:
        return f"ipt_{self.name}"


def _general(name, label, metric, fixture=None, harness=None):
    return TaskSpec(name, label, "general", metric, harness or name, fixture or name)


def _domain(name, label, domain, metric):
    return TaskSpec(name, label, domain, metric, f"ipt_hub_{name}", name)


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    _general("arc_easy", "ARC-e", "acc_norm"),
    _general("arc_challenge", "ARC-c", "acc_norm"),
    _general("boolq", "BoolQ", "acc"),
    _general("social_iqa", "SIQA", "acc", fixture="siqa"),
    _general("winogrande", "WinoGrande", "acc"),
    _general("piqa", "PIQA", "acc_norm"),
    _general("openbookqa", "OBQA", "acc_norm"),
    _general("hellaswag", "HellaSwag", "acc_norm"),
    _general("mmlu", "MMLU", "acc"),
    _domain("pubmedqa", "PubMedQA", "biomedicine", "acc"),
    _domain("chemprot", "ChemProt", "biomedicine", "micro_f1"),
    _domain("mqp", "MQP", "biomedicine", "acc"),
    _domain("rct", "RCT", "biomedicine", "micro_f1"),
    _domain("usmle", "USMLE", "biomedicine", "acc"),
    _domain("convfinqa", "ConvFinQA", "finance", "numeric_match"),
    _domain("fpb", "FPB", "finance", "weighted_f1"),
    _domain("fiqa_sa", "FiQA_SA", "finance", "weighted_f1"),
    _domain("headline", "Headline", "finance", "subtask_weighted_f1"),
    _domain("ner", "NER", "finance", "entity_f1"),
)}
GENERAL_TASKS = tuple(n for n, t in TASKS.items() if t.domain == "general")


@dataclass
class Params:
    tasks: list[str] = spec(choices=tuple(TASKS), help="canonical task names (see evaluate.TASKS)")
    offline_tasks: bool = spec(help="true: offline twins over local JSONL (ipt_<task>); "
                                    "false: harness tasks / AdaptLLM hub twins")
    eval_data_dir: str = spec(kind="optpath", help="dir of <task>.jsonl for the offline twins; "
                                                    "'' = ipt_utils/fixtures/eval")
    model_sets: list[str] = spec(choices=tuple(MODEL_SETS),
                                 help="which stage outputs to scan for models")
    external_models: list[str] = spec(kind="model", help="baselines: hf:NAME or a local dir")
    backend: str = spec(choices=("hf", "vllm"), help="lm-eval model backend (vllm: GPU only)")
    num_fewshot: int = spec(ge=0)
    limit: int = spec(ge=0, help="max docs per task; 0 = all")
    batch_size: int = spec(ge=1)
    max_length: int = spec(ge=16, help="context length for scoring (paper: 2048)")
    add_bos_token: bool = spec(help="prepend BOS to every request (AdaptLLM eval does)")
    gpu_memory_utilization: float = spec(gt=0, le=1, help="vllm backend only")
    bootstrap_iters: int = spec(ge=0, help="stderr bootstrap for non-mean metrics; 0 = none")


@contracts.metrics_schema("05_evaluate")
class EvaluateMetrics(TypedDict):
    """The models scored, how, and their headline numbers (all numbers: summary.csv, results/)."""
    models: Annotated[list[str], "model ids evaluated, in order: pt-<arm>, it-<arm>, then external models"]
    tasks: Annotated[dict[str, str], "canonical task -> the lm-eval task that ran (harness task or twin)"]
    offline_tasks: Annotated[bool, "the tasks ran as offline twins over local JSONL"]
    reused: Annotated[list[str], "models whose results file matched the settings: not evaluated again"]
    seconds_per_model: Annotated[dict[str, float], "model id -> evaluation seconds (models evaluated this time)"]
    harness_version: Annotated[list[str], "lm-evaluation-harness versions behind the results"]
    scoring: Annotated[str, "version of the domain tasks' scoring rules (docs/EVALUATION.md)"]
    task_metrics: Annotated[dict[str, str], "canonical task -> its headline metric (the paper's choice)"]
    over_context: Annotated[dict[str, dict[str, int]], "model id -> {task: documents whose multiple-choice "
                            "input is longer than max_length} (scored whole on hf, cut from the left on vllm)"]
    headline: Annotated[dict[str, dict[str, float]], "model id -> {task: headline metric value (0-1)}"]


# ---------------------------------------------------------------- tasks

def render_task_dir(out_dir: str | Path, data_dir: str | Path | None = None) -> Path:
    """Copy ipt_utils/tasks into `out_dir` with ABSOLUTE data paths filled in.

    lm-eval resolves relative `data_files` against the CWD, so the offline twins carry a
    placeholder that is replaced here by the absolute fixture directory.
    """
    data_dir = Path(data_dir) if data_dir else EVAL_FIXTURES
    data_dir = data_dir.resolve()
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for src in sorted(TASKS_DIR.iterdir()):
        if src.suffix == ".yaml":
            (out / src.name).write_text(
                src.read_text(encoding="utf-8").replace(DATA_PLACEHOLDER, data_dir.as_posix()),
                encoding="utf-8")
        elif src.name == "ipt_metrics.py":
            shutil.copy2(src, out / src.name)
    return out


def harness_task_names(cfg: Params) -> dict[str, str]:
    """canonical name -> the lm-eval task name that will run."""
    return {n: (TASKS[n].twin if cfg.offline_tasks else TASKS[n].harness) for n in cfg.tasks}


def check_task_data(cfg: Params) -> Path:
    """The offline twins' data dir; raise naming every missing <task>.jsonl."""
    data_dir = resolve_path(cfg.eval_data_dir) if cfg.eval_data_dir else EVAL_FIXTURES
    missing = [str(data_dir / f"{TASKS[n].fixture}.jsonl") for n in cfg.tasks
               if not (data_dir / f"{TASKS[n].fixture}.jsonl").exists()]
    if missing:
        raise FileNotFoundError("offline eval data missing (run `make fixtures` "
                                "or set evaluate.eval_data_dir): " + ", ".join(missing))
    return data_dir


def hub_mirror_root() -> Path | None:
    root = os.environ.get(assets.HUB_MIRROR_ENV)
    return Path(root) if root and Path(root).is_dir() else None


def mirror_dataset_dir(dataset_path: str | None, root: Path | None = None) -> Path | None:
    """`$IPT_HUB_MIRROR/datasets/<dataset_path>` if it exists, for a hub repo name."""
    root = root or hub_mirror_root()
    if root is None or not dataset_path or "/" not in dataset_path or dataset_path.startswith(("/", ".")):
        return None  # no mirror, a packaged builder ('json') or already a local path
    d = root / "datasets" / dataset_path
    return d if d.is_dir() else None


def _leaf_tasks(index: dict, names) -> list[str]:
    """Task names behind task/group/tag names (groups and tags expanded), in order."""
    out: list[str] = []
    for name in names:
        entry = index.get(name)
        if entry is None:
            continue
        kind = entry.kind.name
        if kind == "TAG":
            out += _leaf_tasks(index, sorted(entry.tags))
        elif kind == "GROUP":
            members = (entry.cfg or {}).get("task") or []
            members = members if isinstance(members, list) else [members]
            out += _leaf_tasks(index, [m if isinstance(m, str) else m.get("task") or m.get("group")
                                       for m in members])
        elif name not in out:
            out.append(name)
    return out


def mirror_overrides(index: dict, names, out_dir: Path, root: Path) -> dict[str, str]:
    """One YAML per task (group members included) whose dataset has a mirror under `root`:
    the task's own YAML included by absolute path, `dataset_path` replaced, tags dropped (the
    original tags still reach the task by name). -> {task: mirror dir}."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    done, missing = {}, []
    for task in _leaf_tasks(index, names):
        entry = index[task]
        path = (entry.cfg or {}).get("dataset_path")
        mirror = mirror_dataset_dir(path, root)
        if mirror is None or entry.yaml_path is None:
            if path and "/" in path and not Path(path).is_absolute():
                missing.append(f"{task} ({path})")
            continue
        (out_dir / f"{task}.yaml").write_text(
            f"# {task} reads {entry.cfg['dataset_path']} from its local mirror ({assets.HUB_MIRROR_ENV})\n"
            f"include: {json.dumps(str(Path(entry.yaml_path).resolve()))}\n"
            f"task: {json.dumps(task)}\ntag: []\ndataset_path: {json.dumps(str(mirror))}\n", encoding="utf-8")
        done[task] = str(mirror)
    if missing:
        log.warning("%s=%s has no mirror for %s: read from the hub", assets.HUB_MIRROR_ENV, root,
                    ", ".join(missing))
    return done


def task_manager(cfg: Params, include_dir: Path, names=None):
    """The TaskManager for `names` (harness task names); under IPT_HUB_MIRROR, with the
    mirror overrides written next to `include_dir` and indexed after it."""
    from lm_eval.tasks import TaskManager

    # built-in tasks are indexed only when they are needed (4 s instead of 0.5 s)
    tm = TaskManager(include_path=str(include_dir), include_defaults=not cfg.offline_tasks)
    root = hub_mirror_root()
    if root is None or cfg.offline_tasks or not names:
        return tm
    mirror_dir = include_dir.with_name(include_dir.name + "_mirror")
    if mirror_overrides(tm.task_index, list(names), mirror_dir, root):
        # same effect as TaskManager(include_path=[include_dir, mirror_dir]) (a later path
        # overrides a task of the same name) without indexing every built-in task twice
        tm.task_index.update(TaskManager(include_path=str(mirror_dir), include_defaults=False).task_index)
    return tm


# ---------------------------------------------------------------- models

@dataclass
class ModelEntry:
    model_id: str
    arm: str
    tuned: bool
    source: str  # stage name, or "external"
    pretrained: str  # what from_pretrained takes: a local dir or a hub name
    spec: str  # as written in the profile / found on disk


def external_model_id(spec_: str) -> str:
    name = spec_[len(HUB_PREFIX):] if spec_.startswith(HUB_PREFIX) else Path(spec_).name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--"))


def find_models(ctx, cfg: Params) -> list[ModelEntry]:
    """Every model this run produced (scanned on disk) + the profile's external baselines."""
    found = []
    for set_name in cfg.model_sets:
        stage, tuned = MODEL_SETS[set_name]
        root = ctx.work_root / stage
        if not root.is_dir():
            continue
        for cfg_file in sorted(root.glob("*/model/config.json")):
            arm = cfg_file.parent.parent.name
            found.append(ModelEntry(model_id=f"{'it' if tuned else 'pt'}-{arm}", arm=arm, tuned=tuned,
                                    source=stage, pretrained=str(cfg_file.parent),
                                    spec=f"stage:{stage}/{arm}"))
    for ext in cfg.external_models:
        pretrained = assets.hub_model(ext[len(HUB_PREFIX):]) if ext.startswith(HUB_PREFIX) \
            else str(resolve_path(ext))
        found.append(ModelEntry(model_id=external_model_id(ext), arm="external", tuned=False,
                                source="external", pretrained=pretrained, spec=ext))
    return found


def _fingerprint(ctx, cfg: Params, entry: ModelEntry) -> str:
    key = {"cfg": dataclasses.asdict(cfg), "model": assets.model_fingerprint(entry.pretrained),
           "dtype": ctx.run.dtype, "device": ctx.device, "seed": ctx.seed, "scoring": SCORING}
    if hub_mirror_root() is not None:  # numbers over mirrors are never reused for the real data
        key["hub_mirror"] = str(hub_mirror_root())
    return digest(json.dumps(key, sort_keys=True))


# ---------------------------------------------------------------- running

def model_args(ctx, cfg: Params, entry: ModelEntry) -> dict:
    dtype = {"auto": "bfloat16" if ctx.device == "cuda" else "float32"}.get(ctx.run.dtype, ctx.run.dtype)
    args = {"pretrained": entry.pretrained, "dtype": dtype, "add_bos_token": cfg.add_bos_token,
            "trust_remote_code": False}
    if cfg.backend == "hf":
        args.update(device=ctx.device, max_length=cfg.max_length)
    else:
        args.update(max_model_len=cfg.max_length, gpu_memory_utilization=cfg.gpu_memory_utilization,
                    seed=ctx.seed)
    return args


def _jsonable(obj):
    """Drop what JSON cannot hold (functions in task configs become their names)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if callable(obj):
        return getattr(obj, "__name__", repr(obj))
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)


def evaluate_model(ctx, cfg: Params, entry: ModelEntry, tm, names: dict[str, str]) -> dict:
    """Run lm-eval on one model; return its JSON-ready results dict (with the "ipt" block).

    The model is ipt_utils.eval_models' wrapper of the harness backend, so the domain tasks
    are scored by the authors' rules inside the harness's own batched calls; the inputs longer
    than `max_length` it met are counted per task in the "ipt" block (`over_context`).
    """
    import lm_eval

    t0 = time.time()
    args = model_args(ctx, cfg, entry)
    lm = make_lm(cfg.backend, args, cfg.batch_size)
    out = lm_eval.simple_evaluate(
        model=lm, tasks=list(names.values()),
        num_fewshot=cfg.num_fewshot, batch_size=cfg.batch_size, limit=cfg.limit or None,
        task_manager=tm, log_samples=False, bootstrap_iters=cfg.bootstrap_iters,
        random_seed=ctx.seed, numpy_random_seed=ctx.seed, torch_random_seed=ctx.seed,
        fewshot_random_seed=ctx.seed,
    )
    if out is None:  # non-zero rank under distributed launch
        return {}
    out.pop("samples", None)
    res = _jsonable(dict(out))
    canonical = {h: c for c, h in names.items()}
    res["ipt"] = {
        "model_id": entry.model_id, "arm": entry.arm, "tuned": entry.tuned, "source": entry.source,
        "model": entry.spec, "pretrained": entry.pretrained, "run": ctx.run_dir.name,
        "run_dir": str(ctx.run_dir), "profile": ctx.profile, "tasks": names,
        "offline_tasks": cfg.offline_tasks, "num_fewshot": cfg.num_fewshot, "limit": cfg.limit,
        "backend": cfg.backend, "model_args": args, "device": ctx.device,
        "seconds": round(time.time() - t0, 2),
        "fingerprint": _fingerprint(ctx, cfg, entry), "harness_version": lm_eval.__version__,
        "scoring": SCORING, "over_context": {canonical.get(t, t): s for t, s in sorted(lm.stats().items())},
    }
    return res


def _n_docs(res: dict, harness_name: str) -> int | None:
    ns = res.get("n-samples", {})
    if harness_name in ns:
        return ns[harness_name].get("effective")
    subs = res.get("group_subtasks", {}).get(harness_name)
    if subs:  # a group (the harness's mmlu): sum over its members
        counts = [_n_docs(res, s) for s in subs]
        return sum(c for c in counts if c is not None)
    return None


def summary_rows(res: dict) -> list[dict]:
    """Flatten one results file into summary.csv rows with canonical task names."""
    ipt = res["ipt"]
    rows = []
    for canonical, hname in ipt["tasks"].items():
        metrics = res.get("results", {}).get(hname, {})
        for key, value in sorted(metrics.items()):
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, _filter = key.split(",", 1)
            rows.append({"model_id": ipt["model_id"], "arm": ipt["arm"], "tuned": ipt["tuned"],
                         "task": canonical, "metric": metric, "value": float(value),
                         "n": _n_docs(res, hname)})
    return rows


def run_all(ctx, cfg: Params, models: list[ModelEntry]):
    """Evaluate every model (reusing a result whose fingerprint matches); write outputs.

    Returns (summary DataFrame, metrics dict for metrics.json).
    """
    import pandas as pd

    if not models:
        raise FileNotFoundError(
            f"no models to evaluate: nothing under {ctx.work_root}/03_pretrain/*/model or "
            f"{ctx.work_root}/04_instruct_tune/*/model (model_sets={cfg.model_sets}) "
            "and external_models is empty; run stages 03/04 first")
    data_dir = check_task_data(cfg) if cfg.offline_tasks else None
    include_dir = render_task_dir(ctx.work / "tasks", data_dir)
    names = harness_task_names(cfg)
    tm = task_manager(cfg, include_dir, names.values())
    results_dir = ctx.stage_dir / "results"
    results, reused = {}, []
    for entry in models:
        path = results_dir / f"{entry.model_id}.json"
        res = io.read_json(path) if path.exists() else {}
        if res.get("ipt", {}).get("fingerprint") == _fingerprint(ctx, cfg, entry):
            reused.append(entry.model_id)
        else:
            res = evaluate_model(ctx, cfg, entry, tm, names)
            io.write_json(path, res)
        results[entry.model_id] = res
    summary = pd.DataFrame([r for res in results.values() for r in summary_rows(res)], columns=SUMMARY_COLUMNS)
    with io.atomic_open(ctx.stage_dir / "summary.csv") as f:
        summary.to_csv(f, index=False)
    metrics = build_metrics(cfg, models, names, results, reused, summary)
    long_ones = {m: t for m, t in metrics["over_context"].items() if t}
    if long_ones:
        log.warning("inputs longer than max_length=%d (docs per task): %s", cfg.max_length, long_ones)
    return summary, metrics


def build_metrics(cfg: Params, models: list[ModelEntry], names: dict[str, str], results: dict[str, dict],
                  reused: list[str], summary) -> EvaluateMetrics:
    """Stage 05's metrics.json (the one place it is built): from each model's results dict
    (model id -> results/<model_id>.json content), the ids reused and the summary frame."""
    return EvaluateMetrics(
        models=[m.model_id for m in models], tasks=names, offline_tasks=cfg.offline_tasks, reused=reused,
        seconds_per_model={m: res["ipt"]["seconds"] for m, res in results.items() if m not in reused},
        harness_version=sorted({res["ipt"].get("harness_version", "") for res in results.values()}),
        scoring=SCORING, task_metrics={n: TASKS[n].metric for n in cfg.tasks},
        over_context={m: over_context_counts(res) for m, res in results.items()},
        headline=headline_table(summary).to_dict(orient="index") if len(summary) else {},
    )


def over_context_counts(res: dict) -> dict[str, int]:
    """{task: documents with an input longer than the context} of one results file (tasks
    with none left out)."""
    stats = res.get("ipt", {}).get("over_context", {})
    return {t: s["docs_over_context"] for t, s in stats.items() if s.get("docs_over_context")}


def headline_table(summary):
    """model_id x task table of each task's headline metric (the paper's choice)."""
    import pandas as pd

    if summary is None or not len(summary):
        return pd.DataFrame()
    keep = summary[[TASKS[t].metric == m if t in TASKS else False
                    for t, m in zip(summary["task"], summary["metric"])]]
    return keep.pivot_table(index="model_id", columns="task", values="value", aggfunc="first")
