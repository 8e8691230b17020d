"""Stage 03: pre-train one model per data arm on an equal token budget (docs/PAPER.md §6).

Arms (what differs is only the data; model, hyper-parameters and budget are shared):
  vanilla     raw corpus
  mix         raw corpus + synthesizer-tuning data x tuning_repeat (each record rendered by
              ipt_utils.templify like a one-text synthesized chain)
  instruct    raw corpus with every converted text replaced by the pre-training document
              it belongs to (<work>/02_synthesize/augmented.jsonl: one row per document, its
              `text` replacing all raw texts listed in `member_ids`, emitted once and whole)
              + synthesizer-tuning data x tuning_repeat (paper: 4)
  pairs_only  the synthesized pairs without the raw texts: per document, the usable pairs
              of its members in order (malformed ones dropped as templify drops them) as
              plain "Question: ...\nAnswer: ..." blocks, one text per document
  continual   instruction-augmented corpus from `base_model`, mixed with general
              instructions ("{question} {response}", BOS/EOS only, no chat template) at
              `general_ratio` of the tokens (paper: 1:1 = 0.5)
Arms start from a random Mistral `model` (init: scratch), except `continual`, and every
arm when init == base_model (domain continual pre-training: Vanilla PT-8B = vanilla arm);
arms that start from base_model use its tokenizer and mix in general instructions.
base_model may be `stage:03_pretrain/<arm>`: an arm of this same stage, trained first
(it must come earlier in `arms`). ci-tiny uses `stage:03_pretrain/vanilla`: the paper's
continual run starts from a model pre-trained on general raw text (Llama3-8B), and the
tiny vanilla arm is exactly that at tiny scale (a random init would not be "continual").
Its budget equals every other arm's (`train_tokens`), counted on top of the base's.

Other augmented corpora (ablations, paper Table 4): `arm_variants` maps a new arm name to
{recipe, augmented}: the arm follows the built-in recipe (instruct | pairs_only |
continual) with its augmented texts read from `augmented` ('' = this run's 02 output,
`variant:NAME` = <work>/02_synthesize/variants/NAME/augmented.jsonl written by the
synthesize.variants setting NAME, else a local JSONL path, e.g. another run's output):
    arms: [vanilla, instruct, pairs_only, instruct_1shot, instruct_rule]
    arm_variants:
      instruct_1shot: {recipe: instruct, augmented: "variant:one_shot"}
      instruct_rule: {recipe: instruct, augmented: "variant:rule_based"}
Such an arm has its own model (<work>/03_pretrain/<name>/model), loss curve and metrics;
04_instruct_tune and 05_evaluate take it by name like any other arm.

Seed replicas (intervals over seeds, params/cpu-effect.yaml): an arm named `<arm>_s<k>`
(k >= 1) follows <arm>'s recipe with seed run.seed + k for its init and document order (and
in stage 04 its example order); `<arm>` itself uses run.seed. Listed explicitly, they are
ordinary arms downstream.

Data (ipt_utils/arms.py): every source is streamed and read only as far as the arm's token
budget needs; each source is tokenized once into an on-disk cache, and each arm's documents
are drawn to fill `steps * batch_tokens` tokens and packed into seq_len rows (a memory-mapped
.npy); the metrics record per source what was read and skipped (`sources_read`).

Training: a plain torch loop driven by `accelerate` (one process here; FSDP across GPUs
with `accelerate_config`, see params/accelerate/): AdamW with decoupled weight decay,
linear warmup + cosine to min_lr_ratio, gradient clipping, gradient accumulation to
batch_tokens, bf16 autocast on GPU / fp32 on CPU, `attn_implementation` (sdpa default,
flash_attention_2 on GPUs with flash-attn installed), optional torch.compile (`compile`),
`doc_mask` (positions restart at every <s>, so attention never crosses a packed document
boundary: a block-diagonal causal mask on sdpa/eager, varlen kernels on flash_attention_2).
Checkpoints every
`save_steps` (model, optimizer, step, log); a rerun resumes from the newest one with the
same data order and LR (both are pure functions of the step): ipt_utils/training.py.

MFU of every arm: ipt_utils/flops.py (null on CPU).

Steps (notebook 03 and the launched run `python -m ipt_utils.pretrain` call the same ones):
  prepare_data / data_summary   every arm's packed rows (ipt_utils/arms.py) and a table of them
  train_arms                    every arm trained (or launched), -> the stage's metrics
                                (stage_metrics: the declared PretrainMetrics schema)
  plot_losses / metrics_frame   loss.png and a table of the metrics
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Annotated, Mapping, NotRequired, TypedDict

from . import assets, io, launch as launcher, packing
from .arms import ArmData, arm_seed, data_summary, from_base, load_tokenizer, own_base_arm, prepare_data, special_ids
from .assets import ModelShape
from .contracts import metrics_schema
from .flops import mfu
from .packing import IGNORE
from .registry import ARMS, AUGMENTED_RECIPES, split_replica
from .schema import HUB_PREFIX, TINY, spec
from .training import OptimConfig, complete_arm, finished_arm, make_accelerator, train_loop, write_loss_csv

ATTN_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "eager")


@dataclass
class ArmVariant:
    """An extra arm: a built-in recipe fed by another augmented corpus (ablations, Table 4)."""

    recipe: str = spec(choices=AUGMENTED_RECIPES, help="which built-in arm's data recipe to follow")
    augmented: str = spec(help="'' = this run's 02 output; variant:NAME = <work>/02_synthesize/variants/"
                               "NAME/augmented.jsonl; else a local augmented JSONL path")


@dataclass
class Params:
    arms: list[str] = spec(help="data arms to pre-train, in order: built-in ARMS or keys of arm_variants; "
                                "<arm>_s<k> (k >= 1) is a seed replica of <arm> (seed run.seed + k)")
    arm_variants: dict[str, ArmVariant] = spec(help="extra arm name -> {recipe, augmented} "
                                                    "(e.g. instruct_1shot: {recipe: instruct, augmented: variant:one_shot})")
    raw_corpus: str = spec(kind="source", help="local .jsonl/.parquet/.txt {id, domain, text} or hf:NAME "
                                                 "(no id field: a hash of its text is its id, io.record_id)")
    synth_collection: str = spec(kind="source", help="synthesizer-tuning data {context, QA_list} (mix/instruct)")
    general_instructions: str = spec(kind="source", help="{question, response} rows mixed into base-model arms")
    tuning_repeat: int = spec(ge=0, help="times the tuning data appears in the mix/instruct pool (paper: 4)")
    general_ratio: float = spec(ge=0.0, lt=1.0, help="token share of general instructions for arms from base_model")
    init: str = spec(choices=("scratch", "base_model"), help="start of non-continual arms")
    base_model: str = spec(kind="model", help="start of `continual` (tiny = random stand-in)")
    model: ModelShape = spec(help="architecture of models trained from scratch")
    tokenizer: str = spec(kind="model", help="tiny | hf:NAME | local dir (scratch arms)")
    seq_len: int = spec(ge=16)
    train_tokens: int = spec(ge=1, help="token budget of every arm")
    batch_tokens: int = spec(ge=16, help="tokens per optimizer step (all devices, after accumulation)")
    micro_batch_size: int = spec(ge=1, help="sequences per device forward pass")
    learning_rate: float = spec(gt=0.0)
    min_lr_ratio: float = spec(ge=0.0, le=1.0, help="cosine floor as a fraction of learning_rate")
    warmup_ratio: float = spec(ge=0.0, lt=1.0)
    weight_decay: float = spec(ge=0.0)
    adam_beta1: float = spec(ge=0.0, lt=1.0)
    adam_beta2: float = spec(ge=0.0, lt=1.0)
    grad_clip: float = spec(ge=0.0, help="max global grad norm; 0 = off")
    save_steps: int = spec(ge=1, help="checkpoint interval (steps)")
    log_steps: int = spec(ge=1)
    gradient_checkpointing: bool = spec()
    num_proc: int = spec(ge=1, help="tokenization worker processes")
    chunk_docs: int = spec(ge=1, help="documents per streamed tokenization/packing chunk (bounds memory)")
    doc_mask: bool = spec(help="document-masked attention: positions restart at every <s> and no "
                               "token attends across a packed document boundary (sdpa/eager/flash_attention_2)")
    attn_implementation: str = spec(choices=ATTN_IMPLEMENTATIONS, help="attention kernel of trained models")
    compile: bool = spec(help="torch.compile the model (accelerate dynamo_backend=inductor)")
    accelerate_config: str = spec(kind="optpath", help="'' = train in-process; else an accelerate "
                                                       "config (e.g. params/accelerate/fsdp.yaml) to launch with")

    def __post_init__(self):
        if self.batch_tokens % self.seq_len:
            raise ValueError(f"batch_tokens {self.batch_tokens} is not a multiple of seq_len {self.seq_len}")
        if self.train_tokens < self.batch_tokens:
            raise ValueError(f"train_tokens {self.train_tokens} < batch_tokens {self.batch_tokens}")
        if len(set(self.arms)) != len(self.arms) or not self.arms:
            raise ValueError(f"arms must be a non-empty list without repeats, got {self.arms}")
        for name in self.arm_variants:
            if name in ARMS or not name.isidentifier() or split_replica(name)[1]:
                raise ValueError(f"arm_variants: {name!r} must be a new identifier (not one of {list(ARMS)}, "
                                 f"not ending in _s<number>: that names a seed replica)")
        unknown = [a for a in self.arms if split_replica(a)[0] not in ARMS and split_replica(a)[0] not in self.arm_variants]
        if unknown:
            raise ValueError(f"arms {unknown}: expected one of {list(ARMS)} or a key of arm_variants")
        base_arm = own_base_arm(self)
        if base_arm is not None:
            users = [a for a in self.arms if from_base(self, a)]
            if base_arm in users or (users and (base_arm not in self.arms
                                                or self.arms.index(base_arm) > self.arms.index(users[0]))):
                raise ValueError(f"base_model {self.base_model}: arm {base_arm!r} must be trained "
                                 f"before {users} (list it earlier in arms) and not start from itself")

    @property
    def steps(self) -> int:
        return self.train_tokens // self.batch_tokens

    @property
    def batch_seqs(self) -> int:
        return self.batch_tokens // self.seq_len


# =========================================================================== model shape

def shape_of(model) -> ModelShape:
    c = model.config
    return ModelShape(hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                      num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads,
                      num_kv_heads=c.num_key_value_heads, max_position_embeddings=c.max_position_embeddings,
                      vocab_size=c.vocab_size)


# =========================================================================== pre-training

def init_model(ctx, cfg: Params, arm: str, tokenizer, acc=None):
    """A fresh model (shared seeded init across arms) or the base model, fp32 weights,
    cfg.attn_implementation (sdpa | flash_attention_2 | eager).

    acc: the run's accelerator. Launched, the init model is built and saved by the main
    process only while the others wait (ranks racing to replace the init dir crashed); then
    every rank loads it.
    """
    import torch
    from transformers import AutoModelForCausalLM

    attn = getattr(cfg, "attn_implementation", "sdpa")
    if from_base(cfg, arm) and cfg.base_model != TINY:
        return AutoModelForCausalLM.from_pretrained(
            assets.resolve_model(ctx, cfg.base_model), dtype=torch.float32, attn_implementation=attn,
            use_safetensors=True, trust_remote_code=False)
    seed = arm_seed(ctx, arm)
    init_dir = ctx.work / "init" / _init_key(cfg, tokenizer, seed)
    with acc.main_process_first() if acc is not None else contextlib.nullcontext():
        if not (init_dir / "config.json").exists():
            assets.build_tiny_model(init_dir, cfg.model, tokenizer, seed=seed)
            print(f"[pretrain] built the init model {init_dir}", flush=True)
    return AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32, attn_implementation=attn)


def _init_key(cfg: Params, tokenizer, seed: int) -> str:
    return packing.cache_key(asdict(cfg.model), packing.tokenizer_fingerprint(tokenizer), seed)


def pretrain_batches(rows, batch_seqs: int, micro_batch_size: int, bos: int, pad: int,
                     doc_mask: bool = False, flatten: bool = False):
    """batches(step, rank, world): rows [step*B, (step+1)*B) split over ranks and micro-batches.

    doc_mask: add position_ids restarting at every <s> (and row start) and no attention
    mask, so transformers masks attention across documents (block-diagonal causal mask on
    sdpa/eager). flatten (flash_attention_2): each micro-batch becomes one [1, B*T] row whose
    position_ids mark the documents, which FA2 runs as varlen sequences; the label of each
    row's first token is ignored so the targets equal the unflattened ones.
    """
    import numpy as np
    import torch

    def batches(step, rank, world):
        per_rank = batch_seqs // world
        start = step * batch_seqs + rank * per_rank
        block = np.asarray(rows[start:start + per_rank], dtype=np.int64)
        out = []
        for i in range(0, per_rank, micro_batch_size):
            ids = torch.from_numpy(block[i:i + micro_batch_size])
            m = {"input_ids": ids, "labels": packing.labels_for(ids, bos, pad)}
            if doc_mask:
                m["position_ids"] = packing.position_ids_for(ids, bos)
                if flatten:
                    m["labels"][:, 0] = IGNORE
                    m = {k: v.reshape(1, -1) for k, v in m.items()}
            out.append(m)
        return out

    return batches


# =========================================================================== metrics (contract)

class SourceRead(TypedDict):
    """What an arm read of one source and what it uses; the counters of the source's reader
    (which ones depends on the source: raw, tuning, instruct_corpus, pairs, general)."""

    cap_tokens: Annotated[int, "token cap of this source for the arm (arms.source_caps)"]
    docs_used: Annotated[int, "documents of the source the arm draws from"]
    tokens_used: Annotated[int, "tokens of those documents (without <s>/</s>)"]
    cache_docs: Annotated[int | None, "documents in the source's token cache"]
    cache_tokens: Annotated[int | None, "tokens in the source's token cache"]
    source_exhausted: Annotated[bool, "the whole source was read (else the cap stopped reading)"]
    records_read: NotRequired[Annotated[int, "records consumed from the file or hub dataset"]]
    texts_skipped_empty: NotRequired[Annotated[int, "raw records without text (not a string, empty, blank)"]]
    augmented_docs: NotRequired[Annotated[int, "instruct_corpus: augmented documents read"]]
    augmented_skipped_empty: NotRequired[Annotated[int, "instruct_corpus: augmented rows without text"]]
    converted_skipped: NotRequired[Annotated[int, "instruct_corpus: raw texts replaced by their augmented document"]]
    docs_without_pairs: NotRequired[Annotated[int, "pairs: augmented documents without a usable pair"]]
    records_malformed: NotRequired[Annotated[int, "tuning: records that are not a {context, QA_list} example"]]
    first_malformed: NotRequired[Annotated[str, "tuning: location (file:line) of the first malformed record"]]
    records_skipped: NotRequired[Annotated[int, "general: rows without a question or response"]]


class AugmentedShare(TypedDict):
    """Share of augmented texts in an arm that reads the augmented corpus."""

    augmented_docs_read: Annotated[int, "augmented documents read (the first part of instruct_corpus)"]
    raw_docs_read: Annotated[int, "unconverted raw documents read after them"]
    token_share: Annotated[float, "augmented texts' share of the arm's tokens"]
    doc_share_of_corpus: Annotated[float, "augmented share of the documents drawn from instruct_corpus"]


class ArmMetrics(TypedDict):
    """One pre-trained arm."""

    final_loss: Annotated[float | None, "training loss at the last logged step"]
    tokens: Annotated[int, "tokens trained on (all devices)"]
    steps: Annotated[int, "optimizer steps done"]
    tokens_per_s: Annotated[float, "training throughput of this process's run (steps only)"]
    mfu: Annotated[float | None, "model FLOPs utilisation (ipt_utils/flops.py); null on CPU"]
    packing_efficiency: Annotated[float, "non-pad share of the packed token slots"]
    source_tokens: Annotated[dict[str, int], "tokens (with <s>/</s>) drawn per source"]
    sources_read: Annotated[dict[str, SourceRead], "per source: cap, what was read, used and skipped"]
    augmented: Annotated[AugmentedShare | dict, "augmented texts' share ({} for arms without them)"]
    wall_s: Annotated[float, "seconds to train the arm in this run"]
    resumed_from: Annotated[int, "step of the checkpoint this run resumed from (0 = fresh)"]
    device: Annotated[str, "GPU name or cpu"]
    n_devices: Annotated[int, "processes that trained the arm"]
    completed: NotRequired[Annotated[bool, "false when the run stopped before the last step"]]


@metrics_schema("03_pretrain")
class PretrainMetrics(TypedDict):
    """Stage 03: one entry per arm."""

    arms: Annotated[dict[str, ArmMetrics], "arm name -> its metrics"]


def arm_metrics(cfg: Params, data: ArmData, res, model, acc, wall_s: float) -> ArmMetrics:
    """The metrics of one arm from its training result (TrainResult) and packed data."""
    import torch

    steps_run = res.steps_done - res.resumed_from
    tps = steps_run * cfg.batch_tokens / res.step_seconds if res.step_seconds > 0 else 0.0
    device_name = torch.cuda.get_device_name(0) if acc.device.type == "cuda" else None
    metrics = ArmMetrics(
        final_loss=res.log[-1]["loss"] if res.log else None, tokens=res.tokens, steps=res.steps_done,
        tokens_per_s=round(tps, 1),
        mfu=mfu(tps, shape_of(model), model.config.vocab_size, cfg.seq_len, device_name, acc.num_processes),
        packing_efficiency=data.efficiency, source_tokens=data.source_tokens, sources_read=data.sources,
        augmented=data.augmented, wall_s=round(wall_s, 2), resumed_from=res.resumed_from,
        device=device_name or "cpu", n_devices=acc.num_processes)
    if not res.completed:
        metrics["completed"] = False
    return metrics


def stage_metrics(arms: Mapping[str, ArmMetrics]) -> PretrainMetrics:
    """metrics.json of stage 03 (the notebook, the launched run and finish_stage use this)."""
    return PretrainMetrics(arms=dict(arms))


# =========================================================================== training

def train_arm(ctx, cfg: Params, data: ArmData, *, accelerator=None) -> ArmMetrics:
    """Pre-train one arm (resuming if a checkpoint exists); returns its metrics."""
    import torch

    arm = data.arm
    arm_dir = ctx.work / arm
    run_key = _arm_key(ctx, cfg, data)
    prev = finished_arm(ctx, arm, arm_dir, run_key)
    if prev:  # finished earlier: its loss log is restored, do not retrain
        return prev
    t0 = time.time()
    tok = load_tokenizer(ctx, data.tokenizer)
    bos, eos, pad = special_ids(tok)
    acc = accelerator or make_accelerator(ctx, compile=cfg.compile)
    if acc.num_processes > 1 and cfg.batch_seqs % (acc.num_processes * cfg.micro_batch_size):
        raise ValueError(f"batch of {cfg.batch_seqs} sequences does not split over "
                         f"{acc.num_processes} devices x micro_batch_size {cfg.micro_batch_size}")
    torch.manual_seed(arm_seed(ctx, arm))
    model = init_model(ctx, cfg, arm, tok, acc)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    opt = OptimConfig(learning_rate=cfg.learning_rate, total_steps=cfg.steps,
                      warmup_steps=int(cfg.warmup_ratio * cfg.steps), min_lr_ratio=cfg.min_lr_ratio,
                      weight_decay=cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2),
                      grad_clip=cfg.grad_clip)
    ckpt_dir = arm_dir / f"ckpt-{run_key}"
    res, model, acc = train_loop(
        model, pretrain_batches(data.rows(), cfg.batch_seqs, cfg.micro_batch_size, bos, pad, doc_mask=cfg.doc_mask,
                                flatten=cfg.attn_implementation == "flash_attention_2"), opt,
        ckpt_dir=ckpt_dir, save_steps=cfg.save_steps, log_steps=cfg.log_steps,
        tokens_per_step=cfg.batch_tokens, accelerator=acc)
    if acc.is_main_process:
        write_loss_csv(ctx.stage_dir / f"loss_{arm}.csv", res.log)
    metrics = arm_metrics(cfg, data, res, model, acc, time.time() - t0)
    if res.completed:
        complete_arm(acc, model, tok, arm_dir, run_key, ckpt_dir, metrics, res.log)
    acc.free_memory()  # drop the accelerator's references to this arm's model/optimizer
    return metrics


RUN_ONLY_KEYS = ("arms", "arm_variants", "num_proc", "chunk_docs", "accelerate_config", "log_steps", "save_steps")


def _arm_key(ctx, cfg: Params, data: ArmData) -> str:
    """What decides an arm's trained model: its data (packed file name = content key),
    tokenizer, seed, device/dtype and every training parameter (not which other arms run)."""

    params = {k: v for k, v in asdict(cfg).items() if k not in RUN_ONLY_KEYS}
    base = None  # the weights an arm starts from when they are not built from config
    if from_base(cfg, data.arm) and cfg.base_model != TINY and not cfg.base_model.startswith(HUB_PREFIX):
        base = assets.model_fingerprint(assets.resolve_model(ctx, cfg.base_model))
    return packing.cache_key(params, data.path.name, arm_seed(ctx, data.arm), data.tokenizer, ctx.run.device,
                             ctx.run.dtype, base)


def train_arms(ctx, cfg: Params, data: dict[str, ArmData], accelerator=None) -> PretrainMetrics:
    """Train every arm; the stage's metrics. With accelerate_config (and no accelerator yet:
    the notebook's process) this runs `accelerate launch`, whose ranks call it again."""
    if cfg.accelerate_config and accelerator is None:
        return launch(ctx, cfg)
    return stage_metrics({arm: train_arm(ctx, cfg, d, accelerator=accelerator) for arm, d in data.items()})


def loss_frame(ctx, cfg: Params):
    import pandas as pd

    frames = []
    for arm in cfg.arms:
        path = ctx.stage_dir / f"loss_{arm}.csv"
        if path.exists():
            frames.append(pd.read_csv(path).assign(arm=arm))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["step", "loss", "lr", "tokens", "arm"])


def plot_losses(ctx, cfg: Params):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = loss_frame(ctx, cfg)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for arm, g in df.groupby("arm", sort=False):
        ax.plot(g["tokens"], g["loss"], label=arm)
    ax.set_xlabel("tokens")
    ax.set_ylabel("training loss")
    ax.set_title(f"03 pre-training ({ctx.profile})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(ctx.stage_dir / "loss.png", dpi=120)
    return fig


def metrics_frame(metrics: dict):
    import pandas as pd

    cols = ["final_loss", "tokens", "tokens_per_s", "mfu", "packing_efficiency", "wall_s"]
    return pd.DataFrame([{"arm": a, **{c: m.get(c) for c in cols}} for a, m in metrics["arms"].items()])


# =========================================================================== multi-GPU launch

def launch(ctx, cfg: Params) -> dict:
    """Run `accelerate launch --config_file <accelerate_config> -m ipt_utils.pretrain
    <work>/03_pretrain/launch.json` (ipt_utils.launch) and read back the metrics."""
    return launcher.launch(ctx, "pretrain", cfg, cfg.accelerate_config, "ipt_utils.pretrain")


def main(argv=None) -> int:
    """Entry point of a launched (possibly multi-process) pre-training: python -m ipt_utils.pretrain SPEC."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec", help="launch.json written by ipt_utils.pretrain.launch")
    args = ap.parse_args(argv)
    with launcher.record_errors(args.spec):
        ctx, cfg = launcher.open_from_spec(args.spec, "03_pretrain", "pretrain")
        launcher.distributed_state()
        acc = make_accelerator(ctx, compile=cfg.compile)
        with acc.main_process_first():
            data = prepare_data(ctx, cfg)
        metrics = train_arms(ctx, cfg, data, accelerator=acc)
        if acc.is_main_process:
            io.write_json(ctx.work / "launch_metrics.json", metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
