"""Stage 01: tune a base LM into the instruction synthesizer (docs/PAPER.md §2).

Data (ipt_utils/collection.py): the synthesizer-tuning collection, capped per source dataset,
whole datasets held out for the unseen evaluation, each example rendered exactly as the
synthesizer reads it at inference and concatenated per dataset up to `max_seq_len`; loss only
on the pairs (and the closing `</s>`). This module holds the stage: params, the base model,
training (in process or launched), the loss plot and the stage's metrics.

It keeps HF `Trainer` (unlike stages 03/04, ipt_utils/training.py): LoRA/QLoRA through peft
and Trainer's own checkpoint/resume fit a tuning run of one model on a few thousand
sequences, and it shares the final save (training.save_final: FSDP gather, LoRA merge) and
the step hooks (training.STEP_HOOKS) with the other trainers.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, NotRequired, TypedDict

from . import assets, collection, contracts, io
from .assets import ModelShape, model_fingerprint
from .hashing import digest
from .launch import CRASH_ENV, distributed_state, launch, maybe_crash, open_from_spec, record_errors
from .packing import tokenizer_fingerprint
from .schema import HUB_PREFIX, TINY, dataset_configs, spec
from .synth_eval import SynthEvalRow
from .training import save_final, stop_requested

SEQUENCES = "sequences.jsonl"  # <work>/01_synth_tune/: the training sequences handed to launched ranks


@dataclass
class Params:
    base_model: str = spec(kind="model", help="tiny | hf:NAME | local dir")
    tiny_model: ModelShape = spec(help="architecture when base_model is tiny")
    tiny_tokenizer: str = spec(kind="model", help="tokenizer a tiny base is built with: tiny (the run's) | hf:NAME "
                                                 "| local dir (e.g. one fitted to the corpus)")
    data: str = spec(kind="source", help="local JSONL in the collection's schema, or hf:NAME")
    datasets: list[str] = spec(help="source datasets (rc_name / hub configs); [] = all")
    heldout_datasets: list[str] = spec(help="datasets kept out of training (unseen eval)")
    max_per_dataset: int = spec(ge=1, help="cap per dataset, contexts with most pairs first")
    eval_per_dataset: int = spec(ge=0, help="contexts per seen dataset held out for evaluation")
    max_seq_len: int = spec(ge=64)
    method: str = spec(choices=("full", "lora", "qlora"), help="qlora: 4-bit base (bitsandbytes, GPU)")
    lora_r: int = spec(ge=1)
    lora_alpha: int = spec(ge=1)
    lora_dropout: float = spec(ge=0.0, lt=1.0)
    learning_rate: float = spec(gt=0.0)
    lr_scheduler: str = spec(choices=("cosine", "linear", "constant_with_warmup"))
    warmup_ratio: float = spec(ge=0.0, le=1.0)
    adam_beta1: float = spec(ge=0.0, lt=1.0)
    adam_beta2: float = spec(ge=0.0, lt=1.0)
    weight_decay: float = spec(ge=0.0)
    batch_size: int = spec(ge=1, help="sequences per device step")
    grad_accum_steps: int = spec(ge=1)
    max_steps: int = spec(ge=1)
    save_steps: int = spec(ge=1, help="checkpoint interval; an interrupted run resumes from the last")
    gradient_checkpointing: bool = spec()
    accelerate_config: str = spec(kind="optpath", help="'' = train in the notebook's process; else an "
                                                       "accelerate config (params/accelerate/fsdp.yaml) to launch with")
    eval_shots: int = spec(ge=0, help="demonstrations in the few-shot evaluation prompt (0 = zero-shot only)")
    eval_max_new_tokens: int = spec(ge=1)
    eval_backend: str = spec(choices=("auto", "vllm", "transformers"))

    def __post_init__(self):
        # A hub config name the collection lacks would only fail once the stage streams it.
        if not self.data.startswith(HUB_PREFIX):
            return
        valid = dataset_configs(self.data)
        for key in ("datasets", "heldout_datasets"):
            bad = [n for n in getattr(self, key) if valid is not None and n not in valid]
            if bad:
                raise ValueError(f"{key}: {bad} not config(s) of {self.data}; valid configs: {valid}")


# --------------------------------------------------------------------------- data

# --------------------------------------------------------------------------- model

def base_model_dir(ctx, cfg: Params) -> str:
    """Where the base model loads from; a tiny base is built (once) from config."""
    if cfg.base_model != TINY:
        return assets.resolve_model(ctx, cfg.base_model)
    # Named by what it is built from, so a changed shape or tokenizer never reuses an old base.
    tokenizer = assets.load_tokenizer(ctx, cfg.tiny_tokenizer)
    key = digest(json.dumps([asdict(cfg.tiny_model), tokenizer_fingerprint(tokenizer), ctx.seed]), n=12)
    path = ctx.work / f"base_tiny-{key}"
    if not (path / "model.safetensors").exists():
        assets.build_tiny_model(path, cfg.tiny_model, tokenizer, seed=ctx.seed)
    return str(path)


def base_tokenizer(ctx, cfg: Params):
    """The base model's tokenizer, without loading the model (a tiny base is built once)."""
    return assets.load_tokenizer(ctx, base_model_dir(ctx, cfg))


def base_model_and_tokenizer(ctx, cfg: Params):
    """The base LM to tune (4-bit quantised for QLoRA) on ctx.device, and its tokenizer."""
    return load_base_model(ctx, cfg), base_tokenizer(ctx, cfg)


def load_base_model(ctx, cfg: Params, device: str | None = None):
    """The base LM to tune on `device` (default ctx.device). A launched run passes "cpu":
    FSDP shards it across the ranks (with cpu_ram_efficient_loading only rank 0 reads the
    weights, the others get meta tensors), so no rank ever holds a full copy on its GPU."""
    path = base_model_dir(ctx, cfg)
    if cfg.method != "qlora":
        if device is None:
            return assets.load_causal_lm(ctx, path)
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, dtype=ctx.torch_dtype, use_safetensors=True,
                                                    trust_remote_code=False)
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if ctx.device != "cuda":
        raise RuntimeError("synth_tune.method 'qlora' needs a CUDA GPU and bitsandbytes; use 'lora' on CPU")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, dtype=torch.bfloat16,
                                                 use_safetensors=True, trust_remote_code=False)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)


def _wrap_lora(model, cfg: Params):
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _merged(ctx, cfg: Params, model, state_dict=None):
    """A plain checkpoint for stage 02: LoRA merged; QLoRA's adapter merged into a bf16 base.

    state_dict: the full weights gathered from an FSDP-sharded run (main process only); the
    LoRA weights are then loaded into a fresh CPU base and merged there, since the sharded
    model itself cannot be merged or saved from one rank.
    """
    if cfg.method == "full":
        return model
    if state_dict is not None:
        if cfg.method != "lora":
            raise ValueError(f"synth_tune.method {cfg.method!r} cannot be merged from a sharded run")
        peft_model = _wrap_lora(load_base_model(ctx, cfg, device="cpu"), cfg)
        peft_model.load_state_dict(state_dict, strict=True)
        return peft_model.merge_and_unload()
    if cfg.method == "lora":
        return model.merge_and_unload()
    import torch
    from peft import PeftModel

    adapter = ctx.work / "adapter"
    model.save_pretrained(adapter)
    base = assets.load_causal_lm(ctx, base_model_dir(ctx, cfg), dtype=torch.bfloat16)
    return PeftModel.from_pretrained(base, adapter).merge_and_unload()


def train(ctx, cfg: Params, sequences: list[dict], model=None, tokenizer=None) -> dict:
    """Tune in this process, or across GPUs with `accelerate launch` when accelerate_config is set.

    model None: loaded here (in-process) and dropped on return, so the caller's kernel never
    keeps one; with accelerate_config this process loads no model at all (the launched ranks
    do). Checkpoints go to <work>/checkpoints-<key> and an interrupted run resumes from the
    last one with the same data order. The final (LoRA-merged) model goes to <work>/model.
    """
    if cfg.accelerate_config:
        # the ranks train on exactly these sequences and never re-read the collection (rank 0
        # reading the hub behind a barrier would also risk the NCCL timeout of the others)
        io.write_jsonl(ctx.work / SEQUENCES, sequences)
        return launch(ctx, "synth_tune", cfg, cfg.accelerate_config, "ipt_utils.synth_tune")
    return _train_in_process(ctx, cfg, sequences, model, tokenizer)


def run_key(ctx, cfg: Params, sequences: list[dict]) -> str:
    """Identifies a training run: its params, seed, base weights and the exact token data.

    Checkpoints live under checkpoints-<key>, so a changed profile never resumes from
    the checkpoints of another configuration.
    """
    import dataclasses
    import json

    import numpy as np

    train_cfg = {k: v for k, v in dataclasses.asdict(cfg).items() if not k.startswith("eval_")}
    head = json.dumps([train_cfg, ctx.seed, ctx.run.dtype, model_fingerprint(base_model_dir(ctx, cfg))],
                      sort_keys=True)
    tokens = (np.asarray(seq[k], dtype=np.int64).tobytes() for seq in sequences for k in ("input_ids", "labels"))
    return digest(itertools.chain([head], tokens))


class _StepHooks:
    """Trainer callback running training.STEP_HOOKS after every step; a hook asking to stop
    ends the run there (after the step's scheduled checkpoint, if any)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Hooks(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if stop_requested(state.global_step):
                    control.should_training_stop = True

        return Hooks()


class _CrashHook:
    """Trainer callback for tests (env launch.CRASH_ENV): a rank dies right after a checkpoint."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Crash(TrainerCallback):
            def on_save(self, args, state, control, **kw):
                maybe_crash(state.global_step)

        return Crash()


def _train_in_process(ctx, cfg: Params, sequences: list[dict], model, tokenizer, launched: bool = False) -> dict:
    """launched: under `accelerate launch`, with the state of launch.distributed_state()."""
    import os
    import shutil

    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    set_seed(ctx.seed)
    if tokenizer is None:
        tokenizer = base_tokenizer(ctx, cfg)
    if model is None:
        model = load_base_model(ctx, cfg)
    if cfg.method in ("lora", "qlora"):
        model = _wrap_lora(model, cfg)
    key = run_key(ctx, cfg, sequences)
    ckpt_dir = ctx.work / f"checkpoints-{key}"
    if int(os.environ.get("RANK", "0")) == 0:
        for stale in ctx.work.glob("checkpoints-*"):
            if stale != ckpt_dir:  # another configuration's checkpoints can never be resumed
                shutil.rmtree(stale, ignore_errors=True)
    # complete checkpoints only: the Trainer writes trainer_state.json last
    done = sorted(int(p.name.split("-")[1]) for p in ckpt_dir.glob("checkpoint-*")
                  if (p / "trainer_state.json").exists())
    start_step = done[-1] if done else 0
    if launched:  # the launch decided mixed precision (none on a CPU rehearsal); the Trainer must agree
        bf16 = os.environ.get("ACCELERATE_MIXED_PRECISION", "no") == "bf16"
    else:
        bf16 = ctx.torch_dtype == torch.bfloat16
    args = TrainingArguments(
        output_dir=str(ckpt_dir), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum_steps, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=math.ceil(cfg.warmup_ratio * cfg.max_steps),
        adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, weight_decay=cfg.weight_decay,
        max_grad_norm=1.0, bf16=bf16, logging_steps=max(1, cfg.max_steps // 50), save_steps=cfg.save_steps,
        save_total_limit=2, report_to=[], seed=ctx.seed, data_seed=ctx.seed,
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=False,
        gradient_checkpointing=cfg.gradient_checkpointing, use_cpu=ctx.device == "cpu",
        # launched: keep the configured (FSDP) state instead of building a fresh one
        accelerator_config={"use_configured_state": launched},
    )
    data = [{"input_ids": s["input_ids"], "labels": s["labels"]} for s in sequences]
    callbacks = [_StepHooks()]
    if os.environ.get(CRASH_ENV):
        callbacks.append(_CrashHook())
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      data_collator=collection.data_collator(tokenizer), callbacks=callbacks)
    del model  # the trainer holds it (sharded under FSDP)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(ckpt_dir / f"checkpoint-{done[-1]}") if done else None)
    wall = time.perf_counter() - t0
    if trainer.state.global_step < cfg.max_steps:  # a step hook stopped it
        return {"steps": trainer.state.global_step, "completed": False}
    # every rank takes part (gathering FSDP shards); the main process merges LoRA and writes
    save_final(trainer.accelerator, trainer.model, tokenizer, ctx.work / "model",
               to_plain=None if cfg.method == "full" else lambda m, state_dict: _merged(ctx, cfg, m, state_dict))
    main = trainer.is_world_process_zero()
    if main:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished: optimizer states are dead weight

    log = [r for r in trainer.state.log_history if "loss" in r]
    if main:
        io.write_text(ctx.stage_dir / "train_log.csv",
                      "step,loss,lr\n" + "".join(f"{r['step']},{r['loss']},{r.get('learning_rate', '')}\n"
                                                 for r in log))
    mean_len = sum(len(s["input_ids"]) for s in sequences) / max(len(sequences), 1)
    steps_run = trainer.state.global_step - start_step
    return {
        "method": cfg.method, "steps": trainer.state.global_step, "resumed_from_step": start_step,
        "train_loss": result.training_loss, "first_loss": log[0]["loss"] if log else None,
        "final_loss": log[-1]["loss"] if log else None, "wall_s": round(wall, 2),
        # padded batches: an estimate from the mean sequence length
        "tokens_per_s": round(steps_run * cfg.batch_size * cfg.grad_accum_steps * mean_len / wall, 1),
        "model_dir": str(ctx.work / "model"),
    }


def plot_loss(ctx) -> Path:
    """Loss curve figure from train_log.csv (headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(ctx.stage_dir / "train_log.csv")
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(df["step"], df["loss"])
    ax.set(xlabel="step", ylabel="loss (pairs only)", title="Synthesizer tuning")
    fig.tight_layout()
    out = ctx.stage_dir / "loss.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


@contracts.metrics_schema("01_synth_tune")
class SynthTuneMetrics(TypedDict):
    """01_synth_tune/metrics.json: the collection read, the training data, the run, Table 5."""

    records_read: Annotated[int, "collection records read"]
    records_malformed: Annotated[int, "records that are not a {context, QA_list} example (skipped)"]
    first_malformed: NotRequired[Annotated[str, "where the first malformed record is (file:line)"]]
    records_neutralised: Annotated[int, "examples whose context or pairs spelled markup (neutralised)"]
    train_examples: Annotated[int, "examples left for training (capped per dataset, held-out ones out)"]
    eval_seen: Annotated[int, "held-out contexts of training datasets"]
    eval_unseen: Annotated[int, "contexts of the held-out datasets"]
    examples_used: Annotated[int, "training examples packed into sequences"]
    examples_too_long: Annotated[int, "examples longer than max_seq_len on their own (skipped)"]
    sequences: Annotated[int, "training sequences (examples of one dataset up to max_seq_len)"]
    tokens: Annotated[int, "tokens of the sequences"]
    loss_tokens: Annotated[int, "tokens carrying loss (the pairs and the closing </s>)"]
    method: Annotated[str, "full | lora | qlora"]
    steps: Annotated[int, "optimizer steps done"]
    resumed_from_step: Annotated[int, "the checkpoint this run resumed from (0 = none)"]
    train_loss: Annotated[float, "mean training loss (HF Trainer)"]
    first_loss: Annotated[float | None, "first logged loss"]
    final_loss: Annotated[float | None, "last logged loss"]
    wall_s: Annotated[float, "seconds training"]
    tokens_per_s: Annotated[float, "training throughput (padded batches: from the mean sequence length)"]
    model_dir: Annotated[str, "the tuned synthesizer (<work>/01_synth_tune/model)"]
    synth_eval: Annotated[list[SynthEvalRow], "Table 5: one row per (model, prompt, split)"]


def stage_metrics(read_stats: dict, seq_stats: dict, train_metrics: dict, eval_metrics: dict,
                  splits: tuple[list, list, list]) -> SynthTuneMetrics:
    """01_synth_tune/metrics.json from the steps' outputs (collection.load_collection, collection.build_sequences,
    train, synth_eval.write_table) and the (train, eval_seen, eval_unseen) split; a count
    nothing raised is 0."""
    train, seen, unseen = splits
    zero = dict.fromkeys(("records_read", "records_malformed", "records_neutralised", "examples_used",
                          "examples_too_long"), 0)
    return {**zero, **read_stats, **seq_stats, **train_metrics, **eval_metrics,
            "train_examples": len(train), "eval_seen": len(seen), "eval_unseen": len(unseen)}


def main(argv=None) -> int:
    """Entry point of a launched run: accelerate launch ... -m ipt_utils.synth_tune launch.json."""
    import sys

    spec_path = (argv or sys.argv[1:])[0]
    with record_errors(spec_path):
        ctx, cfg = open_from_spec(spec_path, "01_synth_tune", "synth_tune")
        state = distributed_state()  # the process group exists before any model is loaded
        if cfg.method == "qlora" and state.num_processes > 1:
            raise ValueError("synth_tune.method 'qlora' is not supported across processes (4-bit weights "
                             "under FSDP); use method 'lora', or a single process")
        with state.main_process_first():  # one rank builds a tiny base and tokenizer, the rest read them
            tokenizer = base_tokenizer(ctx, cfg)
        sequences = io.read_jsonl(ctx.work / SEQUENCES)  # what the notebook built (train())
        # loaded on CPU (meta on ranks > 0 with cpu_ram_efficient_loading): FSDP shards it
        metrics = _train_in_process(ctx, cfg, sequences, load_base_model(ctx, cfg, device="cpu"), tokenizer,
                                    launched=True)
        if state.is_main_process:
            io.write_json(ctx.work / "launch_metrics.json", metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
