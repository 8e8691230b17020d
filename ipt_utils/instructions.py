"""Stage 04's instruction data: which rows a run trains on (streamed once from `data`, kept
in the work dir), how a row becomes (input_ids, labels) with the loss on the response only,
and the seeded example order of every optimizer step.

`cfg` below is the stage's section (instruct_tune.Params).
"""
from __future__ import annotations

from pathlib import Path

from . import io, packing, sources
from .packing import IGNORE, right_pad

SEP = "\n\n"  # between an instruction and its response
INSTRUCTIONS_VERSION = "1"  # part of the key of the prepared instruction file


def instruction_of(r: dict) -> dict | None:
    """{instruction, response, task} of one record, or None when it has no usable pair.

    Fixture rows: instruction/response; FLAN (Open-Orca/FLAN): inputs/targets; OpenOrca:
    question/response, a non-empty system_prompt put before the question."""
    ins = r.get("instruction") or r.get("inputs") or r.get("question")
    resp = r.get("response") or r.get("targets")
    if not (isinstance(ins, str) and isinstance(resp, str) and ins.strip() and resp.strip()):
        return None
    system = r.get("system_prompt")
    if "question" in r and "instruction" not in r and isinstance(system, str) and system.strip():
        ins = f"{system.strip()}{SEP}{ins}"
    return {"instruction": ins, "response": resp, "task": r.get("task") or r.get("_task_name") or ""}


def load_instructions(source: str, limit: int = 0, stats: dict | None = None) -> list[dict]:
    """Usable instruction rows of `source`, streamed; stops after `limit` rows (0 = all).
    `stats` receives records_read (records consumed), rows and records_skipped (no usable
    pair: instruction or response missing, not a string, empty or whitespace only)."""
    rows, read = [], 0
    for r in sources.records(source):
        read += 1
        row = instruction_of(r)
        if row is not None:
            rows.append(row)
            if limit and len(rows) >= limit:
                break  # not one record more: the rest of a hub collection is never fetched
    if stats is not None:
        stats.update(records_read=read, rows=len(rows), records_skipped=read - len(rows))
    if not rows:
        raise ValueError(f"{source}: no usable instruction rows (expected instruction/response, "
                         f"inputs/targets or question/response fields)")
    return rows


def examples_needed(cfg) -> int:
    """Examples the run draws: max_steps * batch_size (fewer rows are repeated in epochs)."""
    return cfg.max_steps * cfg.batch_size


def instructions_file(ctx, cfg) -> Path:
    key = packing.cache_key(sources.identity(cfg.data), examples_needed(cfg), INSTRUCTIONS_VERSION)
    return ctx.work / "data" / f"instructions-{key}.jsonl"


def training_instructions(ctx, cfg, accelerator=None) -> tuple[list[dict], dict]:
    """(rows, stats) the run trains on: the first examples_needed(cfg) usable rows of cfg.data.

    Read once, streamed (a hub collection of millions of rows is never read whole), by the
    main process into <work>/data/instructions-<key>.jsonl (atomic; the stats beside it);
    the other ranks wait at the barrier and read that file; later runs and arms reuse it."""
    path = instructions_file(ctx, cfg)
    meta = path.with_suffix(".json")

    def build():
        if path.exists() and meta.exists():
            return
        stats = {"source": cfg.data, "examples_needed": examples_needed(cfg)}
        rows = load_instructions(cfg.data, limit=examples_needed(cfg), stats=stats)
        io.write_json(meta, stats)  # before the rows: the rows file marks both complete
        io.write_jsonl(path, rows)

    if accelerator is None:
        build()
    else:
        with accelerator.main_process_first():  # main builds; the others enter after it
            if accelerator.is_main_process:
                build()
    if not (path.exists() and meta.exists()):
        raise FileNotFoundError(f"{path}: the main process did not write the instruction data")
    return io.read_jsonl(path), io.read_json(meta)


def encode_examples(tokenizer, rows: list[dict], max_len: int) -> tuple[list[tuple[list, list]], dict]:
    """(input_ids, labels) of every {instruction, response} row and {examples_truncated: n}:
    `<s> instruction SEP` masked, `response </s>` trained. The texts are tokenized as text in
    one batched call (packing.encode_texts): an instruction that spells "<s>" or "</s>" gets
    those characters' tokens; the only BOS/EOS are the two placed here.

    Too long: the prompt keeps at most max_len // 2 tokens (left-truncated after <s>), the
    response fills the rest (right-truncated); such examples are counted.
    """
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids = packing.encode_texts(tokenizer, [t for r in rows for t in (r["instruction"] + SEP, r["response"])])
    out, truncated = [], 0
    for prompt, resp in zip(ids[0::2], ids[1::2]):
        resp = resp + [eos]
        if 1 + len(prompt) + len(resp) > max_len:
            truncated += 1
            keep_p = min(len(prompt), max(max_len // 2, max_len - 1 - len(resp)))
            prompt = prompt[len(prompt) - keep_p:]
            resp = resp[:max_len - 1 - len(prompt)]
        out.append(([bos] + prompt + resp, [IGNORE] * (1 + len(prompt)) + resp))
    return out, {"examples_truncated": truncated}


def encode_example(tokenizer, instruction: str, response: str, max_len: int):
    """encode_examples of one example: (input_ids, labels)."""
    return encode_examples(tokenizer, [{"instruction": instruction, "response": response}], max_len)[0][0]


def example_order(n: int, step: int, batch_size: int, seed: int):
    """Example indices of optimizer step `step`: consecutive slices of seeded per-epoch permutations."""
    import numpy as np

    pos = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs = pos // n
    out = np.empty(len(pos), dtype=np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(n)
        sel = epochs == e
        out[sel] = perm[pos[sel] % n]
    return out


def tune_batches(encoded, batch_size: int, micro_batch_size: int, pad_id: int, seed: int):
    def batches(step, rank, world):
        idx = example_order(len(encoded), step, batch_size, seed)
        per_rank = batch_size // world
        mine = idx[rank * per_rank:(rank + 1) * per_rank]
        return [right_pad([encoded[i] for i in mine[j:j + micro_batch_size]], pad_id)
                for j in range(0, len(mine), micro_batch_size)]

    return batches
