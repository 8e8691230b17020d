"""Multi-GPU / multi-node training through `accelerate launch` (FSDP config in params/accelerate/).

A stage notebook that is given an accelerate config does not train in its own kernel:
it writes its validated parameters to <work>/<stage>/launch.json and runs
`accelerate launch --config_file CFG -m ipt_utils.<module> launch.json`; every process
re-opens the stage from that file, and the main process writes launch_metrics.json,
which the notebook reads back.
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys

from . import io
from .schema import REPO_ROOT, resolve_path


def launch(ctx, section: str, cfg, config_file: str, module: str) -> dict:
    spec_path = ctx.work / "launch.json"
    run = {**dataclasses.asdict(ctx.run), "work_dir": str(ctx.work_root)}  # the very same work dir
    io.write_json(spec_path, {"profile": ctx.profile, "run_dir": str(ctx.run_dir),
                              "run": run, section: dataclasses.asdict(cfg)})
    (ctx.work / "launch_metrics.json").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(resolve_path(config_file)), "-m", module, str(spec_path)]
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)
    return io.read_json(ctx.work / "launch_metrics.json")


def open_from_spec(path: str, stage_name: str, section: str):
    """In a launched process: -> (ctx, cfg) from the launch.json the notebook wrote."""
    from . import stage

    spec = io.read_json(path)
    ns = {"profile": spec["profile"], "run_dir": spec["run_dir"], "run": spec["run"],
          "interactive": False, **spec[section]}
    return stage.open_stage(stage_name, ns)
