"""Multi-GPU / multi-node training through `accelerate launch` (FSDP config in params/accelerate/).

A stage notebook that is given an accelerate config does not train in its own kernel:
it writes its validated parameters to <work>/<stage>/launch.json and runs
`accelerate launch --config_file CFG --num_processes N -m ipt_utils.<module> launch.json`;
every process re-opens the stage from that file, and the main process writes
launch_metrics.json, which the notebook reads back.

N follows the machine (`num_processes`): env IPT_NUM_PROCESSES if set, else the number of
CUDA devices (times num_machines), else the config's value. Without CUDA the launch runs
over gloo on CPU with mixed precision off. The launch's combined output is streamed to the
notebook as it comes and kept in <work>/<stage>/launch.log; a failed launch raises
LaunchError with the failing rank's traceback (each rank writes its own to
<work>/<stage>/launch_errors/rank-R.txt) and the log path.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import io, stage
from .schema import REPO_ROOT, resolve_path

NUM_PROCESSES_ENV = "IPT_NUM_PROCESSES"
# Tests only: "STEP" or "STEP:raise" makes the last rank of a multi-process run die right
# after the checkpoint of STEP (os._exit, like a killed process) or raise there.
CRASH_ENV = "IPT_TEST_CRASH"
TAIL_LINES = 40


class LaunchError(RuntimeError):
    """A launched training run exited non-zero; the message holds the failing rank's traceback."""


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover
        return 0


def num_processes(config: dict, config_file: str) -> tuple[int, str]:
    """-> (processes to launch, where that number came from)."""
    env = os.environ.get(NUM_PROCESSES_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"env {NUM_PROCESSES_ENV}={env!r}: expected a positive integer")
        return int(env), f"env {NUM_PROCESSES_ENV}"
    gpus = _cuda_count()
    if gpus:
        machines = int(config.get("num_machines") or 1)
        return gpus * machines, f"{gpus} CUDA devices x {machines} machine(s)"
    if "num_processes" not in config:
        raise ValueError(f"{config_file}: no num_processes and no CUDA device; set {NUM_PROCESSES_ENV}")
    return int(config["num_processes"]), f"{config_file} num_processes"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mixed_precision(ctx) -> str:
    """The one rule for every launched stage: bf16 autocast when the run is bf16 on CUDA, else none
    (a CPU rehearsal of a bf16 GPU profile runs without it)."""
    import torch

    return "bf16" if ctx.device == "cuda" and ctx.torch_dtype == torch.bfloat16 else "no"


def launch_command(config_file: str, module: str, spec_path: Path,
                   precision: str = "no") -> tuple[list[str], int, str]:
    """The `accelerate launch` command line -> (cmd, processes, why that many)."""
    import yaml

    path = resolve_path(config_file)
    config = yaml.safe_load(path.read_text()) or {}
    n, why = num_processes(config, str(path))
    # (on CPU, `--cpu` would pick a one-process launcher: gloo comes from the missing CUDA)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path),
           "--num_processes", str(n), "--mixed_precision", precision]
    if int(config.get("num_machines") or 1) == 1 and "main_process_port" not in config:
        cmd += ["--main_process_port", str(_free_port())]  # several launches may share a machine
    return cmd + ["-m", module, str(spec_path)], n, why


def launch(ctx, section: str, cfg, config_file: str, module: str) -> dict:
    spec_path = ctx.work / "launch.json"
    run = {**dataclasses.asdict(ctx.run), "work_dir": str(ctx.work_root)}  # the very same work dir
    io.write_json(spec_path, {"profile": ctx.profile, "run_dir": str(ctx.run_dir),
                              "run": run, section: dataclasses.asdict(cfg)})
    (ctx.work / "launch_metrics.json").unlink(missing_ok=True)
    errors = error_dir(spec_path)
    for old in errors.glob("rank-*.txt"):
        old.unlink()
    cmd, n, why = launch_command(config_file, module, spec_path, mixed_precision(ctx))
    log_path = ctx.work / "launch.log"
    rc = stream(cmd, log_path, f"[launch] {module}: {n} process(es) ({why}); log {log_path}")
    if rc != 0:
        raise LaunchError(failure_message(module, rc, log_path, errors))
    return io.read_json(ctx.work / "launch_metrics.json")


def _own_group_dies_with_parent() -> None:
    """In the launcher child, before exec: a new session, and SIGTERM when the kernel dies
    (Linux prctl PR_SET_PDEATHSIG); torchrun's agent passes the SIGTERM on to every rank."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the process group kill on interrupt still applies
        pass


def stream(cmd: list[str], log_path: Path, header: str = "") -> int:
    """Run cmd; its stdout+stderr go line by line to our stdout (the notebook) and log_path."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w", encoding="utf-8") as log:
        if header:
            print(header, flush=True)
            log.write(header + "\n")
        log.write("$ " + " ".join(cmd) + "\n")
        # own process group: an interrupted kernel stops the launcher and every rank together;
        # a kernel killed outright (restart, papermill shutdown) takes the launcher with it
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1, preexec_fn=_own_group_dies_with_parent)
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
                log.flush()
            return proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            sys.stdout.flush()


def failure_message(module: str, rc: int, log_path: Path, errors: Path) -> str:
    """The first failing rank's traceback tail (or the log's tail when no rank wrote one)."""
    found = sorted(errors.glob("rank-*.txt"), key=lambda p: p.stat().st_mtime_ns)
    if found:
        first = found[0]
        tail = first.read_text(encoding="utf-8", errors="replace").splitlines()[-TAIL_LINES:]
        others = [p.stem for p in found[1:]]
        head = f"{first.stem} failed first" + (f" (also failed: {', '.join(others)})" if others else "")
    else:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines() if log_path.exists() else []
        tail = lines[-TAIL_LINES:]
        head = "no rank recorded a traceback (killed?); last lines of the launch log"
    return (f"accelerate launch of {module} exited with code {rc}; {head}:\n" + "\n".join(tail)
            + f"\n  full launch log: {log_path}")


def error_dir(spec_path: str | Path) -> Path:
    return Path(spec_path).parent / "launch_errors"


@contextlib.contextmanager
def record_errors(spec_path: str | Path):
    """In a launched process: write this rank's traceback where the launcher reads it, re-raise."""
    try:
        yield
    except BaseException as e:
        if isinstance(e, SystemExit) and not e.code:
            raise
        import traceback

        path = error_dir(spec_path) / f"rank-{os.environ.get('RANK', '0')}.txt"
        with contextlib.suppress(OSError):
            io.write_text(path, traceback.format_exc())
        raise


def maybe_crash(step: int) -> None:
    """Tests only (env IPT_TEST_CRASH): the last rank of a multi-process run dies after `step`.

    Called right after a checkpoint; all ranks first wait for each other so the checkpoint
    is complete on every rank, as after a real crash between two checkpoints.
    """
    spec_ = os.environ.get(CRASH_ENV, "")
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if not spec_ or world < 2:
        return
    at, _, mode = spec_.partition(":")
    if step != int(at):
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    if rank != world - 1:
        return
    if mode == "raise":
        raise RuntimeError(f"injected failure at step {step} on rank {rank} ({CRASH_ENV})")
    print(f"[launch] {CRASH_ENV}: rank {rank} exits at step {step}", flush=True)
    time.sleep(0.2)
    os._exit(17)


def distributed_state():
    """In a launched process: the accelerate state, process group included, before any model loads.

    accelerate applies an FSDP config only on accelerators: over gloo on CPU it silently
    trains with DDP instead. For a CPU rehearsal of a GPU launch (no CUDA, FSDP config, more
    than one process) the shared state is switched to FSDP with the config's plugin, so
    sharding, wrapping, sharded checkpoints and the gathered final save all run for real
    (torch FSDP2 `fully_shard` works on a CPU mesh). A no-op on GPU machines.
    """
    from accelerate import Accelerator, PartialState

    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp and not _cuda_count() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate.state import AcceleratorState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        Accelerator(cpu=True, mixed_precision="no")  # process group over gloo; state MULTI_CPU
        state = AcceleratorState()
        state.fsdp_plugin = FullyShardedDataParallelPlugin()  # the FSDP_* settings of the config
        state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    state = PartialState()
    if state.is_main_process:
        print(f"[launch] {state.num_processes} process(es), {state.distributed_type}, device {state.device}", flush=True)
    return state


def open_from_spec(path: str, stage_name: str, section: str):
    """In a launched process: -> (ctx, cfg) from the launch.json the notebook wrote."""
    spec = io.read_json(path)
    ns = {"profile": spec["profile"], "run_dir": spec["run_dir"], "run": spec["run"],
          "interactive": False, **spec[section]}
    return stage.open_stage(stage_name, ns)
