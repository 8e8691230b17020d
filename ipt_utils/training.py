"""The training library of stages 03 and 04: optimizer and schedule, the loop with its
checkpoints and resume, the final save (also under FSDP) and finished-arm detection.

One resume convention for both stages: an arm trains in <arm_dir>/ckpt-<key>, where <key>
is a hash of everything that decides the trained model; `train_loop` checkpoints every
`save_steps` into ckpt-<key>/step-NNNNNNN (model, optimizer and trainer_state.json, written
last) and a rerun resumes from the newest complete one, with the same data order and LR
(both pure functions of the step). A finished arm is saved to <arm_dir>/model and
<arm_dir>/done.json {key, result, log} (`complete_arm`); `finished_arm` returns that result
(and restores its loss log) when the key still matches, so it is never retrained.

Stage 01 keeps HF `Trainer` (see ipt_utils/synth_tune.py); it shares `save_final` and the
step hooks.
"""
from __future__ import annotations

import contextlib
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import assets, io
from .launch import maybe_crash
from .packing import IGNORE
from .progress import bar

# Called as hook(step) after every optimizer step of every trainer (train_loop, and stage 01's
# Trainer through a callback); a hook returning True stops the run there, as a crash would
# (no checkpoint taken). Empty in production: tests add one (tests/conftest.py `stop_after`).
STEP_HOOKS: list[Callable[[int], bool]] = []


def stop_requested(step: int) -> bool:
    return any(hook(step) for hook in STEP_HOOKS)


@dataclass
class OptimConfig:
    learning_rate: float
    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0

    def lr_factor(self, step: int) -> float:
        """LR multiplier for optimizer step `step` (0-based): linear warmup, cosine decay."""
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class TrainResult:
    log: list  # rows {step, loss, lr, tokens}
    evals: list  # rows from eval_fn
    steps_done: int
    tokens: int  # tokens processed (all ranks) by the end
    step_seconds: float  # time spent in optimizer steps in this process's run (excludes ckpt/eval)
    completed: bool
    resumed_from: int


def make_optimizer(model, opt: OptimConfig):
    """AdamW with decoupled weight decay on matrices only (not on norms and biases)."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": opt.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=opt.learning_rate, betas=tuple(opt.betas))


def make_accelerator(ctx, compile: bool = False):
    """bf16 autocast (fp32 master weights) when the run's dtype is bf16 on GPU; fp32 on CPU.
    compile: torch.compile the prepared model (dynamo backend inductor)."""
    import torch
    from accelerate import Accelerator

    mp = "bf16" if ctx.device == "cuda" and ctx.torch_dtype == torch.bfloat16 else "no"
    return Accelerator(mixed_precision=mp, cpu=ctx.device == "cpu", dynamo_backend="inductor" if compile else "no")


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint (trainer_state.json is written last), or None."""
    done = [p for p in ckpt_dir.glob("step-*") if (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def train_loop(model, batches: Callable, opt: OptimConfig, *, ckpt_dir: Path, save_steps: int,
               log_steps: int, tokens_per_step: int, accelerator=None, eval_fn: Callable | None = None,
               eval_steps: int = 0, on_log: Callable | None = None):
    """Train `model` for opt.total_steps optimizer steps, resuming from ckpt_dir.

    batches(step, rank, world) -> list of micro-batches (dicts with input_ids, labels and
    optionally attention_mask), the same for a step on every call: data order is a pure
    function of the step, so a resumed run sees exactly the data an uninterrupted one would.
    eval_fn(model, step) -> list of rows, run at step 0, every eval_steps and at the end.
    A STEP_HOOKS hook may stop the run after a step (TrainResult.completed is then False).
    Returns (TrainResult, unwrapped model, accelerator).
    """
    import torch
    from accelerate import Accelerator

    acc = accelerator or Accelerator()
    ckpt_dir = Path(ckpt_dir)
    optimizer = make_optimizer(model, opt)
    model, optimizer = acc.prepare(model, optimizer)
    state = {"step": 0, "log": [], "evals": []}
    resumed_from = 0
    latest = latest_checkpoint(ckpt_dir)
    if latest is not None:
        acc.load_state(str(latest))
        state = io.read_json(latest / "trainer_state.json")
        resumed_from = state["step"]
    model.train()
    step_seconds = 0.0

    def run_eval(step):
        if eval_fn is None:
            return
        model.eval()
        with torch.no_grad():
            rows = eval_fn(acc.unwrap_model(model), step)
        model.train()
        state["evals"].extend(rows)

    def save(step):
        out = ckpt_dir / f"step-{step:07d}"
        acc.save_state(str(out))
        acc.wait_for_everyone()  # every rank's shards are written before the checkpoint counts
        if acc.is_main_process:
            io.write_json(out / "trainer_state.json", state)
            for old in ckpt_dir.glob("step-*"):
                if old != out:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    progress = bar(total=opt.total_steps, initial=state["step"], desc=f"train {ckpt_dir.parent.name}",
                   unit="step", disable=not acc.is_main_process)
    if state["step"] == 0 and not state["evals"]:
        run_eval(0)
    while state["step"] < opt.total_steps:
        step = state["step"]
        t0 = time.perf_counter()
        lr = opt.learning_rate * opt.lr_factor(step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        micro = batches(step, acc.process_index, acc.num_processes)
        n_items = sum(int((m["labels"][:, 1:] != IGNORE).sum()) for m in micro)
        loss_sum = torch.zeros((), device=acc.device)
        for i, m in enumerate(micro):
            m = {k: v.to(acc.device) for k, v in m.items()}
            sync = acc.no_sync(model) if i < len(micro) - 1 else contextlib.nullcontext()
            with sync, acc.autocast():
                out = model(**m, num_items_in_batch=max(1, n_items), use_cache=False)
            acc.backward(out.loss)
            loss_sum += out.loss.detach()
        if opt.grad_clip > 0:
            acc.clip_grad_norm_(model.parameters(), opt.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss = acc.reduce(loss_sum, reduction="mean").item()
        step_seconds += time.perf_counter() - t0
        state["step"] = step = step + 1
        progress.update(1)
        progress.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if step % log_steps == 0 or step == opt.total_steps:
            row = {"step": step, "loss": loss, "lr": lr, "tokens": step * tokens_per_step}
            state["log"].append(row)
            if on_log:
                on_log(row)
        if eval_fn is not None and (step == opt.total_steps or (eval_steps and step % eval_steps == 0)):
            run_eval(step)
        if stop_requested(step):
            break
        if step % save_steps == 0 and step < opt.total_steps:
            save(step)
            maybe_crash(step)
    progress.close()
    completed = state["step"] >= opt.total_steps
    return TrainResult(log=state["log"], evals=state["evals"], steps_done=state["step"],
                       tokens=state["step"] * tokens_per_step, step_seconds=step_seconds,
                       completed=completed, resumed_from=resumed_from), acc.unwrap_model(model), acc


def save_final(acc, model, tokenizer, out_dir: Path, to_plain: Callable | None = None) -> Path:
    """Save the trained model with its tokenizer (safetensors, atomically). Every rank must call it.

    Distributed (FSDP): a full state dict is gathered on ALL ranks (a collective; saving the
    sharded model from rank 0 alone fails), then the main process writes it.
    to_plain(model, state_dict) -> the model to save, on the main process (e.g. LoRA merged);
    state_dict is None in one process, else the gathered full weights.
    """
    from accelerate.utils import DistributedType

    # FSDP gathers even in one process (a one-GPU launch still wraps the model)
    if acc.num_processes == 1 and acc.distributed_type != DistributedType.FSDP:
        return assets.save_model(to_plain(model, None) if to_plain else model, tokenizer, out_dir)
    state_dict = acc.get_state_dict(model)
    if acc.is_main_process:
        if to_plain is not None:
            assets.save_model(to_plain(acc.unwrap_model(model), state_dict), tokenizer, out_dir)
        else:
            assets.save_model(acc.unwrap_model(model), tokenizer, out_dir, state_dict=state_dict)
    acc.wait_for_everyone()
    return Path(out_dir)


def write_loss_csv(path: Path, log: list) -> Path:
    with io.atomic_open(path) as f:
        f.write("step,loss,lr,tokens\n")
        for r in log:
            f.write(f"{r['step']},{r['loss']:.6f},{r['lr']:.6g},{r['tokens']}\n")
    return path


DONE = "done.json"  # <arm_dir>/done.json {key, result, log}: the arm's completion record, written last


def finished_arm(ctx, arm: str, arm_dir: Path, key: str) -> dict | None:
    """The result of an arm trained earlier with the same key (its loss log is restored into
    the stage dir as loss_<arm>.csv), or None when the arm must be (re)trained."""
    done = arm_dir / DONE
    if not (done.exists() and (arm_dir / "model" / "config.json").exists()):
        return None
    prev = io.read_json(done)
    if prev.get("key") != key or "result" not in prev:
        return None
    write_loss_csv(ctx.stage_dir / f"loss_{arm}.csv", prev.get("log", []))
    return prev["result"]


def complete_arm(acc, model, tokenizer, arm_dir: Path, key: str, ckpt_dir: Path, result: dict, log: list) -> None:
    """A finished arm: its model to <arm_dir>/model (every rank takes part), then done.json
    (what finished_arm returns) and its checkpoints removed by the main process."""
    save_final(acc, model, tokenizer, arm_dir / "model")
    if acc.is_main_process:
        io.write_json(arm_dir / DONE, {"key": key, "result": result, "log": log})
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished: optimizer states are dead weight
    acc.wait_for_everyone()
