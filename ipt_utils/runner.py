"""Run a profile's stages through papermill, in dependency order, resumably.

Per stage, under results/runs/<profile>/<stage>/: the executed notebook, the
metrics.json the notebook wrote, and `.complete` (the completion marker). A stage is
skipped when its marker's key matches: the key hashes the stage's params, the run
section and the keys of the stages it depends on, so changing an upstream stage's
params (or forcing it) re-runs everything downstream of it.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import manifest
from .assets import HUB_MIRROR_ENV
from .plan import estimate
from .profiles import Profile
from .registry import STAGE_BY_NAME, STAGES, Stage, default_stages, stage_deps, work_root_for
from .registry import missing_packages as stage_missing_packages
from .schema import REPO_ROOT
from .stage import setup_environment


class MissingPackages(RuntimeError):
    """A profile value needs an optional package this environment lacks (checked before any stage runs)."""


class StageFailed(RuntimeError):
    def __init__(self, stage: str, notebook: Path, error: str):
        self.stage, self.notebook, self.error = stage, notebook, error
        super().__init__(f"stage {stage} failed: {error}\n  executed notebook: {notebook}")


@dataclass
class RunReport:
    run_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def parse_stages(spec: str | None) -> list[Stage]:
    """'01_synth_tune,pretrain,05' -> Stage objects (by name, section or number)."""
    if not spec:
        return list(STAGES)
    chosen = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        number = token.zfill(2) if token.isdigit() else None  # "1" and "01" both mean 01_synth_tune
        match = [s for s in STAGES if token in (s.name, s.section) or s.name[:2] == number]
        if not match:
            raise ValueError(f"unknown stage {token!r}; expected one of {[s.name for s in STAGES]}")
        chosen.extend(m for m in match if m not in chosen)
    return sorted(chosen, key=STAGES.index)


def deps(profile: Profile, stage: Stage) -> tuple[str, ...]:
    """The stages this one reads under the profile (registry.stage_deps, as interactive runs use)."""
    return stage_deps(stage.name, profile.values())


def stage_key(profile: Profile, stage: Stage, run_dir: Path) -> str:
    """Params of this stage + the markers of its dependencies (their key and completion id)."""
    return manifest.completion_key(profile.stage_hash(stage), deps(profile, stage), run_dir)


def is_complete(profile: Profile, stage: Stage, run_dir: Path) -> bool:
    m = manifest.read_marker(run_dir, stage.name)
    return bool(m) and m.get("key") == stage_key(profile, stage, run_dir) \
        and (run_dir / stage.name / "metrics.json").exists()


def plan(profile: Profile, selected: list[Stage], run_dir: Path) -> list[Stage]:
    """Selected stages plus any dependency that is missing or stale, in order."""
    needed = {s.name for s in selected}
    for s in reversed(STAGES):  # pull in incomplete dependencies transitively
        if s.name in needed:
            for dep in deps(profile, s):
                if not is_complete(profile, STAGE_BY_NAME[dep], run_dir):
                    needed.add(dep)
    return [s for s in STAGES if s.name in needed]


KERNEL = "ipt"  # installed into the venv by scripts/setup_env.sh; the notebooks' kernelspec


def kernel_name() -> str:
    """The project kernel, or the environment's default one where it is not installed."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL if KERNEL in KernelSpecManager().find_kernel_specs() else "python3"


def _execute(stage: Stage, params: dict, out_nb: Path) -> None:
    import papermill as pm

    pm.execute_notebook(str(stage.notebook), str(out_nb), parameters=params,
                        cwd=str(stage.notebook.parent), kernel_name=kernel_name(),
                        progress_bar=True, log_output=False, report_mode=False)


def selected_stages(profile: Profile, stages: str | None, log=print) -> list[Stage]:
    """--stages, or (none given) everything the report needs: a stage nothing reads (01 with
    a hub synthesizer) is left out."""
    selected = parse_stages(stages)
    if stages:
        return selected
    wanted = default_stages(profile.values())
    for s in selected:
        if s.name not in wanted:
            log(f"{s.name}: not needed by this profile (no stage reads its output), not run; "
                f"ask for it with --stages {s.name[:2]}")
    return [s for s in selected if s.name in wanted]


def run(profile: Profile, stages: str | None = None, out: str | Path | None = None,
        force: bool = False, log=print) -> RunReport:
    run_dir = Path(out).resolve() if out else REPO_ROOT / "results" / "runs" / profile.name
    run_dir.mkdir(parents=True, exist_ok=True)
    if os.environ.get(HUB_MIRROR_ENV) and not manifest.read(run_dir).get("rehearsal"):
        raise ValueError(f"{HUB_MIRROR_ENV} is set: hub models and datasets would be read from tiny mirrors; "
                         f"only a rehearsal (run --rehearse) uses it. Unset it for a real run.")
    selected = selected_stages(profile, stages, log)
    todo = plan(profile, selected, run_dir)
    missing = stage_missing_packages(profile.values(), [s.name for s in todo])
    if missing:  # fail now, not days later when the stage that needs it starts
        raise MissingPackages(f"{profile.path}: " + "\n  ".join(missing))
    run_params = profile.sections["run"]
    work_root = work_root_for(run_dir, run_params)
    setup_environment(work_root, run_params)  # inherited by the kernels
    os.environ.setdefault("MPLBACKEND", "Agg")

    header = manifest.run_header(profile.name, profile.path, run_dir, work_root, profile.values())
    header["plan"] = estimate(profile)  # what this run was expected to download, write and cost
    manifest.update(run_dir, lambda m: m.update(header))

    report = RunReport(run_dir)
    for i, stage in enumerate(todo, 1):
        head = f"[{i}/{len(todo)}] {stage.name}"
        forced = force and stage in selected  # --force re-runs what was asked for, not its deps
        if not forced and is_complete(profile, stage, run_dir):
            log(f"{head}: up to date, skipped")
            manifest.update_entry(run_dir, stage.name, status="skipped (complete)")
            report.skipped.append(stage.name)
            continue
        stage_dir = run_dir / stage.name
        out_nb = stage_dir / f"{stage.name}.ipynb"
        params = {**profile.stage_parameters(stage), "run_dir": str(run_dir), "interactive": False}
        key = stage_key(profile, stage, run_dir)
        log(f"{head}: running {stage.notebook.relative_to(REPO_ROOT)} -> {out_nb}")
        manifest.begin(run_dir, stage.name, key=key, mode="papermill", notebook=str(out_nb))
        t0 = time.perf_counter()
        try:
            _execute(stage, params, out_nb)
            if not (stage_dir / "metrics.json").exists():
                raise RuntimeError("notebook finished without writing metrics.json")
        except Exception as e:  # noqa: BLE001 - reported with stage and notebook
            err = _describe_error(e)
            manifest.fail(run_dir, stage.name, wall_s=time.perf_counter() - t0, error=err)
            raise StageFailed(stage.name, out_nb, err) from None
        wall = time.perf_counter() - t0
        manifest.complete(run_dir, stage.name, key=key, wall_s=wall, mode="papermill")
        report.ran.append(stage.name)
        log(f"{head}: done in {wall:.1f} s")
    return report


def _describe_error(e: Exception) -> str:
    ename, evalue = getattr(e, "ename", None), getattr(e, "evalue", None)
    if ename:  # PapermillExecutionError: the notebook's own exception
        cell = getattr(e, "exec_count", None)
        return f"{ename}: {evalue}" + (f" (cell {cell})" if cell else "")
    return f"{type(e).__name__}: {e}"
