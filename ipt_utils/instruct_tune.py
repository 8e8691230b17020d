"""Stage 04: instruction-tune each pre-trained arm and track MMLU-style accuracy (paper Figure 4).

For every arm, the model of stage:03_pretrain/<arm> is tuned on FLAN-style instruction
data ({id, task, instruction, response}) rendered as `<s>{instruction}\\n\\n{response}</s>`
with the loss on response tokens (and the closing `</s>`) only: prompt and padding
labels are -100. Instructions and responses are tokenized as text (packing.encode_texts):
the `<s>`/`</s>` are placed by encode_examples, never parsed out of the data; records without
a usable pair are skipped and counted, over-long examples truncated and counted (metrics).
Every `eval_every` steps (and at step 0 and the end) it scores
MMLU-style questions ({question, subject, choices[4], answer}) by the log-likelihood of
each answer continuation after a zero- or few-shot prompt, batched: `eval_format: letter`
is lm-eval's MMLU format (options listed, continuations " A".." D", accuracy), `choice`
scores each choice's text (accuracy of the per-byte normalised log-likelihood, acc_norm);
the curve goes to curve.csv (arm, step, task, accuracy) and each question's outcome to
eval_items.csv (arm, step, task, item, correct: intervals over items, ipt_utils.effect).
Rows that also hold a `context` (a cloze prefix, e.g. "Olga Lund was born in") are scored a
second way, task `cloze`: each choice's text right after that prefix, no question (does
the model hold the fact at all?).

Instruction data (reading, loss mask, example order): ipt_utils/instructions.py. The
training loop (AdamW, warmup + cosine, clipping, accumulation, checkpoints and
resume, finished arms) is ipt_utils/training.py, shared with stage 03; instruction and
evaluation data are read by ipt_utils/sources.py.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Mapping, TypedDict

from . import assets, io, launch, packing, sources
from .arms import arm_seed
from .contracts import metrics_schema
from .instructions import encode_examples, training_instructions, tune_batches
from .registry import ARMS
from .schema import spec
from .training import OptimConfig, complete_arm, finished_arm, make_accelerator, train_loop, write_loss_csv

LETTERS = "ABCDEFGHIJ"


@dataclass
class Params:
    arms: list[str] = spec(help="pre-trained arms (stage:03_pretrain/<arm>: built-in ARMS or a pretrain "
                                "arm_variants name) to tune; [] = none")
    data: str = spec(kind="source", help="instruction JSONL {id, task, instruction, response} or hf:NAME")
    eval_data: str = spec(kind="source", help="MMLU-style JSONL {question, subject, choices, answer} or hf:NAME")
    eval_shots: list[int] = spec(ge=0, help="few-shot settings evaluated (task name mmlu_<k>shot)")
    eval_format: str = spec(choices=("letter", "choice"),
                            help="letter: lm-eval MMLU (options listed, continuations ' A'..' D', acc); "
                                 "choice: 'Question: ..\\nAnswer:' + ' <choice text>', acc_norm by bytes")
    eval_limit: int = spec(ge=0, help="questions scored per evaluation; 0 = all")
    eval_every: int = spec(ge=1, help="steps between evaluations (also at step 0 and the end)")
    eval_batch_size: int = spec(ge=1)
    max_steps: int = spec(ge=1)
    max_len: int = spec(ge=32, help="tokens per example (prompt left-truncated first)")
    batch_size: int = spec(ge=1, help="examples per optimizer step (all devices)")
    micro_batch_size: int = spec(ge=1)
    learning_rate: float = spec(gt=0.0)
    min_lr_ratio: float = spec(ge=0.0, le=1.0)
    warmup_ratio: float = spec(ge=0.0, lt=1.0)
    weight_decay: float = spec(ge=0.0)
    adam_beta1: float = spec(ge=0.0, lt=1.0)
    adam_beta2: float = spec(ge=0.0, lt=1.0)
    grad_clip: float = spec(ge=0.0)
    save_steps: int = spec(ge=1)
    accelerate_config: str = spec(kind="optpath", help="'' = tune in-process; else an accelerate config "
                                                       "(e.g. params/accelerate/fsdp.yaml) to launch with")

    def __post_init__(self):
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size {self.batch_size} not a multiple of micro_batch_size {self.micro_batch_size}")
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms must not repeat, got {self.arms}")
        bad = [a for a in self.arms if a not in ARMS and not a.isidentifier()]
        if bad:
            raise ValueError(f"arms {bad}: expected built-in arms {list(ARMS)} or arm_variants names")


# =========================================================================== evaluation

def load_eval_rows(source: str, limit: int = 0) -> list[dict]:
    rows = [r for r in sources.records(source, split="test")
            if isinstance(r.get("choices"), list) and isinstance(r.get("answer"), int)]
    return rows[:limit] if limit else rows


def mmlu_question(row: dict, with_answer: bool) -> str:
    text = row["question"].strip() + "\n"
    text += "".join(f"{LETTERS[i]}. {c}\n" for i, c in enumerate(row["choices"]))
    text += "Answer:"
    if with_answer:
        text += f" {LETTERS[row['answer']]}\n\n"
    return text


def few_shot_pool(rows: list[dict], k: int) -> dict:
    """subject -> the first k + 1 questions of that subject (the question itself is skipped)."""
    pool: dict = {}
    if k:
        for i, r in enumerate(rows):
            lst = pool.setdefault(r.get("subject", ""), [])
            if len(lst) < k + 1:
                lst.append(i)
    return pool


def choice_question(row: dict, with_answer: bool) -> str:
    text = f"Question: {row['question'].strip()}\nAnswer:"
    return text + (f" {row['choices'][row['answer']]}\n\n" if with_answer else "")


def mmlu_requests(rows: list[dict], k: int, fmt: str = "letter"):
    """(context, [continuations], gold) per question.

    letter: lm-eval's MMLU layout (subject header, options A-D listed, continuations " A".." D");
    choice: "Question: ...\nAnswer:" with each choice's text as the continuation.
    Few-shot examples come from the same subject, never the question itself.
    """
    pool = few_shot_pool(rows, k)
    render = mmlu_question if fmt == "letter" else choice_question
    out = []
    for i, r in enumerate(rows):
        subject = str(r.get("subject", "")).replace("_", " ")
        ctx = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
        shots = [j for j in pool.get(r.get("subject", ""), []) if j != i][:k]
        ctx += "".join(render(rows[j], True) for j in shots) + render(r, False)
        conts = [f" {LETTERS[c]}" for c in range(len(r["choices"]))] if fmt == "letter" \
            else [f" {c}" for c in r["choices"]]
        out.append((ctx, conts, r["answer"]))
    return out


def continuation_logprobs(model, tokenizer, requests, batch_size: int, max_len: int) -> list[list[float]]:
    """Sum log P(continuation | <s> context) for every (context, continuations) request.

    Batched; a request whose continuations are all single tokens costs one forward pass of
    its context (the scores are read from the next-token distribution).
    """
    import torch

    device = next(model.parameters()).device
    bos = tokenizer.bos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos
    items = []  # (sequence ids, [(start, cont ids)] per continuation, request idx)
    for ri, (ctx, conts, *_) in enumerate(requests):
        # text is text here too: a question that spells "</s>" is not cut by a forged EOS
        p_ids, *c_ids = packing.encode_texts(tokenizer, [ctx, *conts])
        p_ids = [bos] + p_ids
        if all(len(c) == 1 for c in c_ids):
            p_ids = p_ids[-max_len:]
            items.append((p_ids, [(len(p_ids), c) for c in c_ids], ri, True))
        else:
            for ci, c in enumerate(c_ids):
                seq = (p_ids + c)[-max_len:]
                items.append((seq, [(len(seq) - len(c), c)], (ri, ci), False))
    scores = [[0.0] * len(r[1]) for r in requests]
    order = sorted(range(len(items)), key=lambda i: -len(items[i][0]))
    for b in range(0, len(order), batch_size):
        chunk = [items[i] for i in order[b:b + batch_size]]
        n = max(len(it[0]) for it in chunk)
        ids = torch.full((len(chunk), n), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), n), dtype=torch.long)
        for j, it in enumerate(chunk):
            ids[j, :len(it[0])] = torch.tensor(it[0])
            mask[j, :len(it[0])] = 1
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                           use_cache=False).logits.float(), dim=-1).cpu()
        for j, (seq, spans, key, single) in enumerate(chunk):
            if single:
                last = logp[j, len(seq) - 1]
                for ci, (_, c) in enumerate(spans):
                    scores[key][ci] = float(last[c[0]])
            else:
                start, c = spans[0]
                pos = torch.arange(start - 1, start - 1 + len(c))
                ri, ci = key
                scores[ri][ci] = float(logp[j, pos, torch.tensor(c)].sum())
    return scores


def cloze_requests(rows: list[dict]):
    """(context, [" choice"...], gold) for every row with a cloze prefix (`context`)."""
    return [(r["context"], [f" {c}" for c in r["choices"]], r["answer"])
            for r in rows if isinstance(r.get("context"), str) and r["context"].strip()]


def evaluate_mmlu(model, tokenizer, rows, shots: list[int], batch_size: int, max_len: int,
                  fmt: str = "letter", items: dict | None = None) -> dict:
    """task (mmlu_<k>shot, and cloze when rows hold a `context`) -> (accuracy, n); `choice`
    format and cloze score log-likelihood per byte (acc_norm). `items` receives task -> the
    0/1 outcome of each request, in row order."""
    tasks = {f"mmlu_{k}shot": (mmlu_requests(rows, k, fmt), fmt == "choice") for k in shots}
    cloze = cloze_requests(rows)
    if cloze:
        tasks["cloze"] = (cloze, True)
    out = {}
    for task, (reqs, per_byte) in tasks.items():
        scores = continuation_logprobs(model, tokenizer, reqs, batch_size, max_len)
        if per_byte:
            scores = [[s / max(1, len(c.encode())) for s, c in zip(sc, conts)] for sc, (_, conts, _) in zip(scores, reqs)]
        correct = [int(max(range(len(s)), key=s.__getitem__) == gold) for s, (_, _, gold) in zip(scores, reqs)]
        out[task] = (sum(correct) / len(reqs) if reqs else float("nan"), len(reqs))
        if items is not None:
            items[task] = correct
    return out


# =========================================================================== tuning

RUN_ONLY_KEYS = ("arms", "accelerate_config", "save_steps")  # do not change what an arm learns


class TuneArmMetrics(TypedDict):
    """One instruction-tuned arm."""

    final_loss: Annotated[float | None, "training loss at the last step"]
    steps: Annotated[int, "optimizer steps done"]
    tokens: Annotated[int, "tokens trained on (mean example length x examples)"]
    wall_s: Annotated[float, "seconds to tune the arm in this run"]
    accuracy_step0: Annotated[dict[str, float], "task -> accuracy before tuning (step 0)"]
    accuracy: Annotated[dict[str, float], "task -> accuracy at the last step"]
    completed: Annotated[bool, "false when the run stopped before max_steps"]
    instruction_rows: Annotated[int, "usable instruction rows trained on"]
    instruction_records_read: Annotated[int, "records read from `data` to find them"]
    instruction_records_skipped: Annotated[int, "records without a usable instruction/response pair"]
    examples_truncated: Annotated[int, "examples longer than max_len (prompt cut first)"]


@metrics_schema("04_instruct_tune")
class InstructTuneMetrics(TypedDict):
    """Stage 04: one entry per arm; the curves are curve.csv and eval_items.csv."""

    arms: Annotated[dict[str, TuneArmMetrics], "arm name -> its metrics"]


def arm_metrics(res, data_stats: dict, enc_stats: dict, wall_s: float) -> TuneArmMetrics:
    """The metrics of one arm from its training result (training.TrainResult) and data counts."""
    return TuneArmMetrics(
        final_loss=res.log[-1]["loss"] if res.log else None, steps=res.steps_done, tokens=res.tokens,
        wall_s=round(wall_s, 2),
        accuracy_step0={r["task"]: r["accuracy"] for r in res.evals if r["step"] == 0},
        accuracy={r["task"]: r["accuracy"] for r in res.evals if r["step"] == res.steps_done},
        completed=res.completed, instruction_rows=data_stats["rows"],
        instruction_records_read=data_stats["records_read"],
        # records without a usable pair (older instruction files lack the count)
        instruction_records_skipped=data_stats["records_read"] - data_stats["rows"],
        examples_truncated=enc_stats["examples_truncated"])


def stage_metrics(arms: Mapping[str, TuneArmMetrics]) -> InstructTuneMetrics:
    """metrics.json of stage 04 (the notebook, the launched run and finish_stage use this)."""
    return InstructTuneMetrics(arms=dict(arms))


def tune_arm(ctx, cfg: Params, arm: str, *, accelerator=None) -> dict:
    """Instruction-tune one arm (resuming if a checkpoint exists); returns {metrics, curve}
    (its TuneArmMetrics and evaluation rows).
    `accelerator`: the launched run's (FSDP across processes); default a fresh one-process one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    arm_dir = ctx.work / arm
    src = assets.resolve_model(ctx, f"stage:03_pretrain/{arm}")
    params = {k: v for k, v in asdict(cfg).items() if k not in RUN_ONLY_KEYS}
    weights = Path(src) / "model.safetensors"
    seed = arm_seed(ctx, arm)  # a seed replica <arm>_s<k> also tunes in its own order
    key = packing.cache_key(params, arm, seed, ctx.run.device, ctx.run.dtype,
                            weights if weights.exists() else src, packing.TEXT_POLICY)
    prev = finished_arm(ctx, arm, arm_dir, key)
    if prev:  # finished earlier: its loss log is restored, do not retune
        return prev
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(src)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.bos_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="sdpa",
                                                 use_safetensors=True)
    instructions, data_stats = training_instructions(ctx, cfg, accelerator)
    encoded, enc_stats = encode_examples(tok, instructions, cfg.max_len)
    eval_rows = load_eval_rows(cfg.eval_data, cfg.eval_limit)
    eval_len = getattr(model.config, "max_position_embeddings", 2048)

    def eval_fn(m, step):
        items: dict = {}
        res = evaluate_mmlu(m, tok, eval_rows, cfg.eval_shots, cfg.eval_batch_size, eval_len, cfg.eval_format, items)
        return [{"arm": arm, "step": step, "task": t, "accuracy": a, "n": n, "correct": items[t]}
                for t, (a, n) in res.items()]

    opt = OptimConfig(learning_rate=cfg.learning_rate, total_steps=cfg.max_steps,
                      warmup_steps=int(cfg.warmup_ratio * cfg.max_steps), min_lr_ratio=cfg.min_lr_ratio,
                      weight_decay=cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2), grad_clip=cfg.grad_clip)
    n_tok = sum(len(ids) for ids, _ in encoded) / len(encoded)
    ckpt_dir = arm_dir / f"ckpt-{key}"
    res, model, acc = train_loop(
        model, tune_batches(encoded, cfg.batch_size, cfg.micro_batch_size, pad, seed), opt,
        ckpt_dir=ckpt_dir, save_steps=cfg.save_steps, log_steps=1,
        tokens_per_step=int(round(n_tok * cfg.batch_size)), accelerator=accelerator or make_accelerator(ctx),
        eval_fn=eval_fn, eval_steps=cfg.eval_every)
    if acc.is_main_process:
        write_loss_csv(ctx.stage_dir / f"loss_{arm}.csv", res.log)
    result = {"metrics": arm_metrics(res, data_stats, enc_stats, time.time() - t0), "curve": res.evals}
    if res.completed:
        complete_arm(acc, model, tok, arm_dir, key, ckpt_dir, result, res.log)
    acc.free_memory()
    return result


def write_curve(path: Path, rows: list[dict]) -> Path:
    with io.atomic_open(path) as f:
        f.write("arm,step,task,accuracy\n")
        for r in rows:
            f.write(f"{r['arm']},{r['step']},{r['task']},{r['accuracy']:.6f}\n")
    return path


def item_ids(rows: list[dict], task: str) -> list[str]:
    """Names of a task's requests in evaluate_mmlu's order: a row's `id`, else its position in rows."""
    return [str(r.get("id", i)) for i, r in enumerate(rows)
            if task != "cloze" or (isinstance(r.get("context"), str) and r["context"].strip())]


def write_items(path: Path, rows: list[dict], eval_rows: list[dict]) -> Path:
    """eval_items.csv: arm, step, task, item, correct (one line per question and evaluation)."""
    import csv

    with io.atomic_open(path) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["arm", "step", "task", "item", "correct"])
        for r in rows:
            ids = item_ids(eval_rows, r["task"])
            w.writerows([r["arm"], r["step"], r["task"], i, c] for i, c in zip(ids, r.get("correct", ())))
    return path


def tune_arms(ctx, cfg: Params, accelerator=None) -> InstructTuneMetrics:
    """Tune every arm; writes curve.csv and eval_items.csv (all arms) and loss_<arm>.csv;
    returns stage metrics.
    With `accelerate_config` (and no accelerator yet) this runs under `accelerate launch`."""
    if cfg.accelerate_config and accelerator is None:
        training_instructions(ctx, cfg)  # read once here: no rank streams the hub behind a barrier
        return launch.launch(ctx, "instruct_tune", cfg, cfg.accelerate_config, "ipt_utils.instruct_tune")
    main = accelerator is None or accelerator.is_main_process
    metrics, curve = {}, []
    eval_rows = load_eval_rows(cfg.eval_data, cfg.eval_limit) if main else []
    if main:
        write_curve(ctx.stage_dir / "curve.csv", curve)
    for arm in cfg.arms:
        result = tune_arm(ctx, cfg, arm, accelerator=accelerator)
        metrics[arm] = result["metrics"]
        curve += result["curve"]
        if main:
            write_curve(ctx.stage_dir / "curve.csv", curve)
            write_items(ctx.stage_dir / "eval_items.csv", curve, eval_rows)
    return stage_metrics(metrics)


def main(argv=None) -> int:
    """Entry point of a launched run: accelerate launch ... -m ipt_utils.instruct_tune launch.json."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec", help="launch.json written by ipt_utils.launch")
    spec_path = ap.parse_args(argv).spec
    with launch.record_errors(spec_path):
        ctx, cfg = launch.open_from_spec(spec_path, "04_instruct_tune", "instruct_tune")
        launch.distributed_state()
        acc = make_accelerator(ctx)
        metrics = tune_arms(ctx, cfg, accelerator=acc)
        if acc.is_main_process:
            io.write_json(ctx.work / "launch_metrics.json", metrics)
    return 0


def curve_frame(ctx):
    import pandas as pd

    return pd.read_csv(ctx.stage_dir / "curve.csv")


def plot_curve(ctx):
    """Figure 4 analogue: accuracy over tuning steps, one line per arm, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = curve_frame(ctx)
    tasks = list(dict.fromkeys(df["task"]))
    if not tasks:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for arm, g in df[df["task"] == task].groupby("arm", sort=False):
            ax.plot(g["step"], g["accuracy"], marker="o", label=arm)
        ax.set_title(task)
        ax.set_xlabel("instruction-tuning step")
        ax.set_ylabel("accuracy")
        ax.legend()
    fig.tight_layout()
    fig.savefig(ctx.stage_dir / "curve.png", dpi=120)
    return fig


if __name__ == "__main__":
    raise SystemExit(main())
