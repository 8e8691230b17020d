"""Stage 02 in shards: where a shard's files go, resuming its finished rounds, its completion
marker, and the merge of every shard into the stage's outputs.

A shard job (`python -m ipt_utils synthesize --shard-index I`, scripts/slurm/) writes
<work>/shard-i-of-n/round-r.jsonl per finished round (a rerun reuses them while the
`fingerprint` of its params, texts and weights is unchanged), its augmented-i-of-n.jsonl and
statistics, then `done.json` last. `merge_shards` refuses unless every shard is done with the
same params and weights (`params_key`), then concatenates them in index order and adds up
their metrics (`merge_metrics`). `cfg` is stage 02's Params (synthesize.Params).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Sequence

from . import io
from .augmented import write_parquet_twin
from .generation import Engine
from .hashing import digest
from .multiround import RawText, Synth
from .packing import TEXT_POLICY
from .schema import REPO_ROOT
from .synth_stats import draw_stats, merge_stats_csv, synthesis_rates

DONE = "done.json"  # a shard's completion marker, written last (after its augmented file and stats)
SUM_KEYS = ("texts_in", "texts_skipped_empty", "texts_skipped", "texts_neutralised",
            "texts_synthesized", "texts_truncated", "texts_without_pairs", "pairs_total",
            "history_links_dropped", "items_total", "malformed_total", "duplicates_total",
            "pair_tokens_total", "inherited_total", "fresh_input_tokens", "fresh_output_tokens",
            "engine_calls", "rounds_resumed", "rounds_generated",
            "documents", "multi_text_documents", "document_chars_total", "dropped_pairs_total")


class ShardsIncomplete(RuntimeError):
    """Some shards are missing, unfinished or stale; the message names them."""


def shard_dir(work: Path, cfg) -> Path:
    return Path(work) / f"shard-{cfg.shard_index:05d}-of-{cfg.num_shards:05d}"


def augmented_path(work: Path, cfg) -> Path:
    name = "augmented.jsonl" if cfg.num_shards == 1 else \
        f"augmented-{cfg.shard_index:05d}-of-{cfg.num_shards:05d}.jsonl"
    return Path(work) / name


def fingerprint(cfg, texts: Sequence[RawText], model_stamp: str = "") -> str:
    keys = ("model", "corpus", "split", "text_column", "domain", "max_texts", "num_shards",
            "shard_index", "shard_by", "rounds", "max_new_tokens", "max_model_len")
    # the text policy decides how prompts become ids (docs/TEXT.md): rounds made under another are redone
    head = json.dumps({**{k: getattr(cfg, k) for k in keys}, "weights": model_stamp, "text_policy": TEXT_POLICY},
                      sort_keys=True)
    return digest(itertools.chain([head], (json.dumps([t.id, t.domain, t.text]) for t in texts)), n=20)


def load_done_rounds(sdir: Path, fp: str) -> dict[int, list[Synth]]:
    """Finished round files of this shard; stale ones (other params/inputs) are removed."""
    marker = sdir / "fingerprint.json"
    if marker.exists() and io.read_json(marker).get("fingerprint") != fp:
        print(f"[synthesize] {sdir}: inputs or params changed; discarding finished rounds")
        for p in sdir.glob("round-*.jsonl"):
            p.unlink()
        (sdir / DONE).unlink(missing_ok=True)
    io.write_json(marker, {"fingerprint": fp})
    for p in sdir.glob(".round-*.tmp"):  # half-written by a killed job (atomic writes never trust them)
        p.unlink(missing_ok=True)
    done: dict[int, list[Synth]] = {}
    r = 0
    while (sdir / f"round-{r:03d}.jsonl").exists():  # only a prefix of rounds is reusable
        done[r] = [Synth.from_dict(d) for d in io.iter_jsonl(sdir / f"round-{r:03d}.jsonl")]
        r += 1
    return done


def params_key(cfg, model_stamp: str) -> str:
    """What every shard of one job must share (all synthesis params but shard_index, and the weights)."""
    skip = ("shard_index", "batch_size", "tensor_parallel_size", "gpu_memory_utilization", "enable_prefix_caching")
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip}
    return digest(json.dumps({**d, "weights": model_stamp}, sort_keys=True))


def shard_name(i: int, n: int) -> str:
    return f"{i:05d}-of-{n:05d}"


def finish_shard(ctx, cfg, metrics: dict, engine: Engine, merge: bool = True) -> dict:
    """Mark this shard complete. With several shards and `merge`, assemble all of them
    (raises ShardsIncomplete naming the missing ones) and return the merged metrics;
    otherwise return `metrics`."""
    io.write_json(shard_dir(ctx.work, cfg) / DONE, {
        "shard": shard_name(cfg.shard_index, cfg.num_shards), "params_key": params_key(cfg, engine.model_stamp),
        "rows": metrics.get("documents", metrics["texts_synthesized"]), "metrics": metrics})
    if merge and cfg.num_shards > 1:
        return merge_shards(ctx, cfg, engine.model_stamp)
    return metrics


def shard_status(work: Path, cfg, model_stamp: str) -> tuple[list[dict], list[str]]:
    """-> (done markers of complete shards in order, problems naming every other shard)."""
    done, problems = [], []
    want = params_key(cfg, model_stamp)
    for i in range(cfg.num_shards):
        c = dataclasses.replace(cfg, shard_index=i)
        marker, aug = shard_dir(work, c) / DONE, augmented_path(work, c)
        name = shard_name(i, cfg.num_shards)
        if not marker.exists():
            state = "unfinished" if shard_dir(work, c).exists() else "missing"
            problems.append(f"shard {name}: {state} (no {marker.name})")
            continue
        d = io.read_json(marker)
        if d.get("params_key") != want:
            problems.append(f"shard {name}: stale (synthesized with other params or weights)")
        elif not aug.exists():
            problems.append(f"shard {name}: {aug.name} missing")
        else:
            with open(aug, "rb") as f:
                lines = sum(1 for _ in f)
            if lines != d["rows"]:
                problems.append(f"shard {name}: {aug.name} has {lines} rows, expected {d['rows']}")
            else:
                done.append(d)
    return done, problems


def merge_metrics(shard_metrics: Sequence[dict]) -> dict:
    """Add up shard metrics; rates are recomputed from the totals, throughput per engine-second."""
    m = {k: sum(s.get(k, 0) for s in shard_metrics) for k in SUM_KEYS}
    # shard_by records: every shard reads the same records; files: each reads its own
    reads = [s.get("records_read", 0) for s in shard_metrics]
    by_files = any(s.get("shard_by") == "files" for s in shard_metrics)
    m["records_read"] = sum(reads) if by_files else max(reads)
    m["shard_by"] = "files" if by_files else "records"
    gen_s = sum(s.get("generate_s", 0.0) for s in shard_metrics)
    m.update({k: dict(sum((Counter(s.get(k, {})) for s in shard_metrics), Counter()))
              for k in ("mode_mix", "layout_mix", "document_layout_mix")})
    m.update({
        "backend": ",".join(sorted({s.get("backend", "") for s in shard_metrics})),
        "engine_init_s": round(sum(s.get("engine_init_s", 0.0) for s in shard_metrics), 3),
        "generate_s": round(gen_s, 3),
        "oom_retries": [dict(r, shard=i) for i, s in enumerate(shard_metrics) for r in s.get("oom_retries", [])],
        "shards": len(shard_metrics),
        **synthesis_rates(m, gen_s),
    })
    return m


def merge_shards(ctx, cfg, model_stamp: str) -> dict:
    """Assemble <work>/augmented.jsonl (shards in index order), synthesis_stats.csv and the
    figure in the stage dir; -> merged metrics. Refuses (ShardsIncomplete) unless every shard
    is complete and was synthesized with the same params and weights."""
    done, problems = shard_status(ctx.work, cfg, model_stamp)
    if problems:
        raise ShardsIncomplete(
            f"cannot merge {cfg.num_shards} shards under {ctx.work}: {len(problems)} not complete:\n  "
            + "\n  ".join(problems) + "\nrun each with `python -m ipt_utils synthesize --profile "
            f"{ctx.profile} --num-shards {cfg.num_shards} --shard-index I`, then merge again")
    if cfg.num_shards == 1:
        return done[0]["metrics"]
    shards = [dataclasses.replace(cfg, shard_index=i) for i in range(cfg.num_shards)]
    with io.atomic_open(Path(ctx.work) / "augmented.jsonl", "wb") as out:
        for c in shards:
            with open(augmented_path(ctx.work, c), "rb") as f:
                shutil.copyfileobj(f, out)
    write_parquet_twin(Path(ctx.work) / "augmented.jsonl")
    tally = merge_stats_csv([(c.shard_index, shard_dir(ctx.work, c) / "synthesis_stats.csv") for c in shards],
                            ctx.stage_dir / "synthesis_stats.csv")
    draw_stats(ctx.stage_dir / "synthesis.png", tally)
    return merge_metrics([d["metrics"] for d in done])


def array_spec(indices: Sequence[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8' (sbatch --array syntax)."""
    parts, idx = [], sorted(indices)
    start = prev = None
    for i in idx + [None]:
        if start is not None and i != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if start is None:
            start = i
        prev = i
    return ",".join(parts)


def _profile_arg(ctx) -> str:
    """The profile as the commands should name it: the YAML a runner recorded for this run
    (a profile outside params/), else the name the notebook got."""
    try:
        path = str(io.read_json(Path(ctx.run_dir) / "manifest.json").get("profile_path") or "")
    except (FileNotFoundError, ValueError):
        path = ""
    name = Path(str(ctx.profile)).stem
    if not path or Path(path).stem != name or Path(path).parent == REPO_ROOT / "params":
        return str(ctx.profile)
    return path


def shard_job_commands(ctx, cfg, missing: Sequence[int]) -> str:
    """The commands that make the missing shards of this run (and then the merge)."""
    p, out, n = _profile_arg(ctx), ctx.run_dir, cfg.num_shards
    return (f"  Slurm (from the repository root), one GPU per shard + the merge job: bash scripts/slurm/submit_synthesis.sh {p} {out}\n"
            f"    (only these shards: ARRAY={array_spec(missing)} bash scripts/slurm/submit_synthesis.sh {p} {out})\n"
            f"  one machine, every shard in turn: python -m ipt_utils synthesize --profile {p} --out {out} "
            f"--num-shards {n} --all-shards\n"
            f"  one shard per job: python -m ipt_utils synthesize --profile {p} --out {out} --num-shards {n} "
            f"--shard-index I\n"
            f"then run this stage again (python -m ipt_utils run --profile {p} --out {out} --stages 02): "
            f"it merges the shards.")
