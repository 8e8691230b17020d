"""Stage 02: synthesize instruction-response pairs for raw texts (docs/PAPER.md §4).

Steps (the notebook and `python -m ipt_utils synthesize` call the same ones, see run_shard):
  load_texts      raw corpus (local .jsonl/.parquet/.txt or hf:NAME streamed) -> this
                  shard's texts (io.record_text: stripped; empty texts skipped, counted); a
                  text's prompt copy has its markup tokens neutralised (counted), the text
                  itself, which the documents carry, keeps its bytes
  open_engine     a lazily started generation backend (ipt_utils.generation: vLLM or batched
                  transformers; or the model-free rules of ipt_utils.rule_based)
  synthesize_shard  multi-round (M-shot) synthesis (ipt_utils.multiround); each finished round
                  of the shard is written atomically to <work>/shard-i-of-n/round-r.jsonl and a
                  rerun skips finished rounds (greedy decoding -> identical output; ipt_utils.shards)
  write_augmented templify chains -> <work>/augmented.jsonl (one row per pre-training document,
                  ipt_utils.augmented) and its typed Parquet twin augmented.parquet
  write_stats / plot_stats   synthesis_stats.csv and synthesis.png (ipt_utils.synth_stats)
  run_variants    the same texts under each `variants` setting, into variants/<name>/
  finish_job      this job's metrics (`summarize`), its shard marked done, the stage's
                  metrics (`stage_metrics`, the declared `SynthesizeMetrics` schema)
  merge_stage     several shards: once all are done, merged into the stage's outputs and metrics
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, NotRequired, Sequence, TypedDict

from . import assets, contracts, io, rule_based, sources
from .augmented import build_rows, write_parquet_twin
from .format import neutralise
from .generation import Engine, choose_backend, make_engine
from .io import record_id, record_text
from .multiround import RawText, Synth, Tokenizer, synthesize_texts
from .registry import work_root_for
from .schema import HUB_PREFIX, REPO_ROOT, TINY, SchemaError, spec, validate
from .shards import (ShardsIncomplete, array_spec, augmented_path, finish_shard, fingerprint, load_done_rounds,
                     merge_shards, shard_dir, shard_job_commands, shard_name, shard_status)
from .stage import StageContext, finish_stage, setup_environment
from .synth_stats import document_metrics, draw_stats, stats_frame, stats_tally, synthesis_rates


BACKENDS = ("auto", "vllm", "transformers", "rule_based")
SHARD_BY = ("records", "files")


@dataclass
class Variant:
    """An extra synthesis setting of the same texts (ablations, paper Table 4)."""

    name: str = spec(help="-> <work>/02_synthesize/variants/<name>/augmented.jsonl (pretrain arm source)")
    rounds: int = spec(ge=1, help="M of this setting (1 = 1-shot)")
    backend: str = spec(choices=BACKENDS, help="rule_based = no model (ipt_utils.rule_based)")


@dataclass
class Params:
    model: str = spec(kind="model", help="the synthesizer: stage:01_synth_tune | hf:NAME | local dir "
                                         "(unused by backend rule_based)")
    corpus: str = spec(kind="source", help="raw texts: local .jsonl/.parquet/.txt or hf:NAME (streamed)")
    split: str = spec(help="split of an hf: corpus (ignored for local files)")
    text_column: str = spec(help="field holding the raw text")
    domain: str = spec(help="domain label for records without a 'domain' field")
    max_texts: int = spec(ge=0, help="records read from the corpus, 0 = all (shard_by records: before "
                                     "sharding; files: ceil(max_texts / num_shards) per job)")
    num_shards: int = spec(ge=1, help="split the corpus over this many independent jobs")
    shard_index: int = spec(ge=0, help="which shard this job synthesizes")
    shard_by: str = spec(choices=SHARD_BY, help="records: record k -> shard k % num_shards (every job "
                                                "reads the corpus up to max_texts); files: an hf: dataset's "
                                                "data files are split between the jobs (each reads only its "
                                                "own files, at most ceil(max_texts / num_shards) records)")
    rounds: int = spec(ge=1, help="M: contiguous rounds, M-shot history (2 general, 3 domain)")
    max_new_tokens: int = spec(ge=1)
    max_model_len: int = spec(ge=64, help="prompt + generation token limit")
    backend: str = spec(choices=BACKENDS, help="auto = vllm if importable; rule_based = model-free "
                                                "task mining (ipt_utils.rule_based)")
    batch_size: int = spec(ge=1, help="prompts per engine call; halved on out-of-memory")
    tensor_parallel_size: int = spec(ge=1, help="vLLM only")
    gpu_memory_utilization: float = spec(gt=0.0, le=1.0, help="vLLM only (GPU)")
    enable_prefix_caching: bool = spec(help="vLLM only")
    variants: list[Variant] = spec(help="extra settings synthesized from the same texts, each to "
                                        "variants/<name>/ (e.g. one_shot: rounds 1, rule_based)")

    def __post_init__(self):
        if self.shard_index >= self.num_shards:
            raise ValueError(f"shard_index {self.shard_index} must be < num_shards {self.num_shards}")
        names = [v.name for v in self.variants]
        bad = [n for n in names if not n.isidentifier()]
        if bad or len(set(names)) != len(names):
            raise ValueError(f"variant names must be distinct identifiers, got {names}")
        if self.shard_by == "files" and not self.corpus.startswith(HUB_PREFIX):
            raise ValueError(f"shard_by: files needs an hf: corpus (a hub dataset or a local dataset "
                             f"directory of data files), got {self.corpus!r}")
        if self.max_new_tokens >= self.max_model_len:
            raise ValueError(f"max_new_tokens {self.max_new_tokens} must be < max_model_len "
                             f"{self.max_model_len}")

    @property
    def budget(self) -> int:
        """Prompt tokens allowed (history + new context)."""
        return self.max_model_len - self.max_new_tokens


# --------------------------------------------------------------------------- data

def iter_records(cfg: Params) -> Iterator[tuple[str, dict]]:
    """(location, record) for every raw record this job reads (the whole corpus, or with
    shard_by files only this shard's data files); invalid UTF-8 raises with file:line.
    An hf: corpus without a config reads the dataset's default one (sources.located_records)."""
    shard = (cfg.shard_index, cfg.num_shards) if cfg.shard_by == "files" else None
    return sources.located_records(cfg.corpus, cfg.split, all_configs=False, text_column=cfg.text_column,
                                   shard=shard)


def load_texts(cfg: Params) -> tuple[list[RawText], dict]:
    """This shard's texts. Empty/whitespace texts are skipped and counted; texts whose prompt
    copy needs neutralising are counted (the text itself is kept as is, see plan_round).
    A record's id is its `id` field, else a hash of its text (io.record_id), so stage 03 finds
    it in the raw corpus however the corpus was sharded."""
    by_files = cfg.shard_by == "files"
    limit = -(-cfg.max_texts // cfg.num_shards) if by_files else cfg.max_texts
    texts: list[RawText] = []
    stats = {"records_read": 0, "texts_in": 0, "texts_skipped_empty": 0, "texts_neutralised": 0,
             "shard_by": cfg.shard_by}
    for k, (where, rec) in enumerate(iter_records(cfg)):
        if limit and k >= limit:
            break
        stats["records_read"] += 1
        if not by_files and k % cfg.num_shards != cfg.shard_index:
            continue
        stats["texts_in"] += 1
        if cfg.text_column not in rec:
            raise ValueError(f"{where}: no field {cfg.text_column!r} (fields: {sorted(rec)})")
        raw = rec[cfg.text_column]
        text = record_text(raw)
        if text is None:
            stats["texts_skipped_empty"] += 1
            continue
        changed = neutralise(text)[1]
        stats["texts_neutralised"] += changed
        texts.append(RawText(record_id(rec, raw), str(rec.get("domain") or cfg.domain), text, changed))
    return texts, stats


# --------------------------------------------------------------------------- engine and rounds

def open_engine(ctx, cfg: Params):
    """-> (Engine, Tokenizer) for the profile's synthesizer; the engine starts on first use."""
    if cfg.backend == "rule_based":  # no model: the rules mine each prompt's new text

        tok = rule_based.RuleTokenizer()
        return Engine(lambda: rule_based.RuleEngine(tok, ctx.seed), "rule_based", cfg.batch_size,
                      rule_based.version()), tok
    if cfg.model == TINY:
        raise ValueError("synthesize.model: 'tiny' is an untrained model; use stage:01_synth_tune")
    path = assets.resolve_model(ctx, cfg.model)
    hf_tok = assets.load_tokenizer(ctx, cfg.model)
    engine = make_engine(path, hf_tok, cfg, seed=ctx.seed, device=ctx.device, dtype=ctx.torch_dtype)
    return engine, Tokenizer(hf_tok)


def model_stamp(ctx, cfg: Params) -> str:
    """What identifies the synthesizer's weights (Engine.model_stamp of the engine open_engine starts)."""
    if cfg.backend == "rule_based":
        return rule_based.version()
    return assets.model_fingerprint(assets.resolve_model(ctx, cfg.model))


def synthesize_shard(ctx, cfg: Params, texts: Sequence[RawText], engine: Engine, tok) -> tuple[list[Synth], dict]:
    """Run (or resume) this shard's rounds; -> (synths, run info)."""
    sdir = shard_dir(ctx.work, cfg)
    done = load_done_rounds(sdir, fingerprint(cfg, texts, engine.model_stamp))
    info = {"rounds_resumed": len(done), "rounds_generated": 0, "generated_round_ids": []}

    def save(r, synths):
        io.write_jsonl(sdir / f"round-{r:03d}.jsonl", (dataclasses.asdict(s) for s in synths))
        info["rounds_generated"] += 1
        info["generated_round_ids"].append(r)

    prefix = f"{cfg.shard_index}-" if cfg.num_shards > 1 else ""
    synths = synthesize_texts(texts, cfg.rounds, tok, cfg.budget, engine, done, save, prefix)
    return synths, info


# --------------------------------------------------------------------------- outputs

def write_augmented(ctx, cfg: Params, synths: Sequence[Synth]) -> list[dict]:
    """<work>/augmented.jsonl (what stage 03 reads) and, for a whole corpus, its Parquet twin;
    a shard of several writes JSONL only (synth-merge writes the merged Parquet)."""
    rows = build_rows(synths, ctx.seed)
    path = augmented_path(ctx.work, cfg)
    io.write_jsonl(path, rows)
    if cfg.num_shards == 1:
        write_parquet_twin(path, rows)
    return rows


def stats_dir(ctx, cfg: Params | None = None) -> Path:
    """Where a job's statistics go: the stage dir, or its shard dir when the corpus is sharded
    (concurrent shard jobs must not overwrite each other; the merge writes the stage dir)."""
    if cfg is not None and cfg.num_shards > 1:
        d = shard_dir(ctx.work, cfg)
        d.mkdir(parents=True, exist_ok=True)
        return d
    return ctx.stage_dir


def write_stats(ctx, synths: Sequence[Synth], rows: Sequence[dict], cfg: Params | None = None):
    """synthesis_stats.csv (one line per text) -> its frame."""
    df = stats_frame(synths, rows)
    with io.atomic_open(stats_dir(ctx, cfg) / "synthesis_stats.csv") as f:
        df.to_csv(f, index=False)
    return df


def plot_stats(ctx, df, cfg: Params | None = None) -> Path:
    """synthesis.png: pairs per text, tokens per pair, mode and layout mix."""
    return draw_stats(stats_dir(ctx, cfg) / "synthesis.png", stats_tally(df))


# --------------------------------------------------------------------------- metrics (declared schema)

class OomRetry(TypedDict):
    batch_size: Annotated[int, "the batch size that ran out of memory (the retry used half)"]
    error: Annotated[str, "the error, first 300 characters"]
    shard: NotRequired[Annotated[int, "the shard it happened in (merged metrics)"]]


class SynthesisMetrics(TypedDict):
    """One synthesis run over the texts: a job (one shard), or every shard merged (merge_metrics:
    totals added up, rates recomputed from the totals by synth_stats.synthesis_rates)."""

    records_read: Annotated[int, "raw records read (shard_by records: each job reads up to max_texts, merged = the most; files: the sum)"]
    shard_by: Annotated[str, "records | files"]
    texts_in: Annotated[int, "records assigned to this job (merged: to every job)"]
    texts_skipped_empty: Annotated[int, "texts skipped as empty or whitespace"]
    texts_skipped: Annotated[int, "texts skipped (all of them empty)"]
    texts_neutralised: Annotated[int, "texts whose prompt copy had markup tokens neutralised (docs/TEXT.md)"]
    texts_synthesized: Annotated[int, "texts synthesized (each is a member of exactly one document)"]
    texts_truncated: Annotated[int, "texts cut by tokens for their prompt (longer than the prompt budget)"]
    texts_without_pairs: Annotated[int, "texts whose generation parsed to no pair"]
    pairs_total: Annotated[int, "instruction-response pairs parsed"]
    history_links_dropped: Annotated[int, "history examples dropped (oldest first) to fit the prompt budget"]
    items_total: Annotated[int, "<QUE>/<ANS> items in the generations (parsed or not)"]
    malformed_total: Annotated[int, "items that did not parse into a pair"]
    duplicates_total: Annotated[int, "duplicate pairs of a text dropped"]
    pair_tokens_total: Annotated[int, "tokens of every instruction + response"]
    inherited_total: Annotated[int, "texts with a history in their prompt that produced pairs"]
    fresh_input_tokens: Annotated[int, "prompt tokens of the rounds generated in this run (not resumed)"]
    fresh_output_tokens: Annotated[int, "generated tokens of the rounds generated in this run"]
    engine_calls: Annotated[int, "backend generate calls (batches)"]
    rounds_resumed: Annotated[int, "finished rounds reused from an earlier run"]
    rounds_generated: Annotated[int, "rounds generated in this run"]
    generated_round_ids: NotRequired[Annotated[list[int], "which rounds this job generated (a job's metrics only)"]]
    documents: Annotated[int, "pre-training documents (rows of augmented.jsonl)"]
    multi_text_documents: Annotated[int, "documents with more than one text (a chain's few-shot document)"]
    document_chars_total: Annotated[int, "characters of every document's text"]
    dropped_pairs_total: Annotated[int, "pairs templify dropped as malformed"]
    mode_mix: Annotated[dict[str, int], "texts per template mode"]
    layout_mix: Annotated[dict[str, int], "texts per document layout"]
    document_layout_mix: Annotated[dict[str, int], "documents per layout"]
    backend: Annotated[str, "vllm | transformers | rule_based (merged: the shards' backends, comma-separated)"]
    engine_init_s: Annotated[float, "seconds starting the backend"]
    generate_s: Annotated[float, "seconds in generation"]
    oom_retries: Annotated[list[OomRetry], "out-of-memory retries with a halved batch"]
    pairs_per_text: Annotated[float, "pairs_total / texts_synthesized"]
    tokens_per_pair: Annotated[float, "pair_tokens_total / pairs_total"]
    parse_failure_rate: Annotated[float, "malformed_total / items_total"]
    duplicate_rate: Annotated[float, "duplicates_total / items_total"]
    inherited_share: Annotated[float, "inherited_total / texts_synthesized"]
    input_tokens_per_s: Annotated[float, "fresh_input_tokens per generation second"]
    output_tokens_per_s: Annotated[float, "fresh_output_tokens per generation second"]
    mean_document_chars: Annotated[float, "document_chars_total / documents"]
    multi_text_share: Annotated[float, "multi_text_documents / documents"]
    texts_per_document: Annotated[float, "texts_synthesized / documents"]
    shards: NotRequired[Annotated[int, "shards merged (several shards only)"]]


class VariantMetrics(SynthesisMetrics):
    """A `variants` setting, synthesized from the same texts (also its variants/<name>/metrics.json)."""

    rounds: Annotated[int, "M of this setting"]


@contracts.metrics_schema("02_synthesize")
class SynthesizeMetrics(SynthesisMetrics):
    """02_synthesize/metrics.json: the main run, and each variant when the profile has any."""

    variants: NotRequired[Annotated[dict[str, VariantMetrics], "variant name -> its metrics (profiles with variants)"]]


def summarize(data_stats: dict, synths: Sequence[Synth], engine: Engine, info: dict, df) -> SynthesisMetrics:
    """This job's metrics: totals of its texts, the engine's timing, rates from the totals."""
    n = len(synths)
    fresh_rounds = set(info.get("generated_round_ids", ()))
    fresh = [s for s in synths if s.round in fresh_rounds]
    totals = {
        **data_stats,
        "texts_skipped": data_stats.get("texts_skipped_empty", 0),
        "texts_synthesized": n,
        "texts_truncated": sum(s.truncated for s in synths),
        "texts_without_pairs": sum(not s.pairs for s in synths),
        "pairs_total": sum(len(s.pairs) for s in synths),
        "history_links_dropped": sum(s.history_dropped for s in synths),
        "mode_mix": df["mode"].value_counts().to_dict() if n else {},
        "layout_mix": df["layout"].value_counts().to_dict() if n else {},
        **document_metrics(df),
        "backend": engine.backend,
        "engine_init_s": round(engine.init_s, 3),
        "generate_s": round(engine.gen_s, 3),
        "engine_calls": engine.calls,
        "oom_retries": engine.oom_retries,
        # raw totals: what the merge of several shards adds up
        "items_total": sum(s.items for s in synths),
        "malformed_total": sum(s.malformed for s in synths),
        "duplicates_total": sum(s.duplicates for s in synths),
        "pair_tokens_total": sum(s.pair_tokens for s in synths),
        "inherited_total": sum(s.inherited for s in synths),
        "fresh_input_tokens": sum(s.prompt_tokens for s in fresh),
        "fresh_output_tokens": sum(s.gen_tokens for s in fresh),
        **info,
    }
    return {**totals, **synthesis_rates(totals, engine.gen_s)}


def stage_metrics(main: SynthesisMetrics, variants: dict[str, VariantMetrics]) -> SynthesizeMetrics:
    """02_synthesize/metrics.json, however the stage ran (one job in the notebook or on the
    command line, or several shards merged): the main run's metrics and, when the profile has
    variants, theirs."""
    return {**main, "variants": variants} if variants else dict(main)


# --------------------------------------------------------------------------- variants (ablations)

VARIANTS_DIR = "variants"


def variant_params(cfg: Params, v: Variant) -> Params:
    return dataclasses.replace(cfg, rounds=v.rounds, backend=v.backend, variants=[])


def variant_context(ctx, name: str):
    """ctx whose work/stage dirs are <...>/02_synthesize/variants/<name> (same shard layout)."""
    return dataclasses.replace(ctx, stage=f"{ctx.stage}/{VARIANTS_DIR}/{name}")


def variant_augmented(work_root: Path, name: str) -> Path:
    """The (merged) augmented corpus of a variant, as stage 03 reads it."""
    return Path(work_root) / "02_synthesize" / VARIANTS_DIR / name / "augmented.jsonl"


def run_variants(ctx, cfg: Params, texts: Sequence[RawText], data_stats: dict, engine: Engine | None = None,
                 tok=None) -> dict[str, VariantMetrics]:
    """Synthesize every `cfg.variants` setting from the same texts (resumable like the main run);
    each goes through templify/stats into variants/<name>/ (work: augmented.jsonl; stage dir:
    synthesis_stats.csv, synthesis.png, metrics.json). A variant with the main run's backend
    reuses its started engine; each variant's shard is marked done (merge_variants merges
    several). -> {name: metrics}."""
    out = {}
    for v in cfg.variants:
        vcfg, vctx = variant_params(cfg, v), variant_context(ctx, v.name)
        same = engine is not None and choose_backend(v.backend) == engine.backend
        if same:  # share the loaded model; fresh timers for this variant
            eng, tk = engine.sharing(), tok
        else:
            eng, tk = open_engine(vctx, vcfg)
        synths, info = synthesize_shard(vctx, vcfg, texts, eng, tk)
        rows = write_augmented(vctx, vcfg, synths)
        df = write_stats(vctx, synths, rows, vcfg)
        plot_stats(vctx, df, vcfg)
        m = finish_shard(vctx, vcfg, summarize(data_stats, synths, eng, info, df), eng, merge=False)
        if cfg.num_shards == 1:
            io.write_json(vctx.stage_dir / "metrics.json", m)
        out[v.name] = {"rounds": v.rounds, **m}
    return out


def merge_variants(ctx, cfg: Params) -> dict[str, VariantMetrics]:
    """synth-merge for every variant (each like the main run, under variants/<name>/)."""
    out = {}
    for v in cfg.variants:
        vcfg, vctx = variant_params(cfg, v), variant_context(ctx, v.name)
        m = merge_shards(vctx, vcfg, model_stamp(vctx, vcfg))
        io.write_json(vctx.stage_dir / "metrics.json", m)
        out[v.name] = {"rounds": v.rounds, **m}
    return out


def variants_frame(main: dict, variants: dict):
    """One row per setting: the main run and each variant (pairs, tokens, timing)."""
    import pandas as pd

    cols = ("backend", "texts_synthesized", "pairs_per_text", "tokens_per_pair", "inherited_share",
            "texts_without_pairs", "generate_s")
    rows = [{"setting": "main", **{c: main.get(c) for c in cols}}]
    rows += [{"setting": k, **{c: m.get(c) for c in cols}} for k, m in variants.items()]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the stage: one job, or the merge

def finish_job(ctx, cfg: Params, data_stats: dict, synths: Sequence[Synth], engine: Engine, info: dict, df,
               variants: dict[str, VariantMetrics]) -> SynthesizeMetrics:
    """The end of one job (the notebook's in-kernel run, or a shard job): its shard marked done
    (done.json holds the main run's metrics), -> the stage's metrics (stage.finish_stage writes
    them when the corpus is one shard)."""
    main = summarize(data_stats, synths, engine, info, df)
    finish_shard(ctx, cfg, main, engine, merge=False)
    return stage_metrics(main, variants)


def merge_stage(ctx, cfg: Params) -> SynthesizeMetrics:
    """Several shards, every one done: merged into the stage's outputs (and each variant's) -> the
    stage's metrics. Raises ShardsIncomplete naming the shards that are not."""
    main = merge_shards(ctx, cfg, model_stamp(ctx, cfg))
    return stage_metrics(main, merge_variants(ctx, cfg) if cfg.variants else {})


def run_shard(ctx, cfg: Params, engine: Engine | None = None, tok=None) -> SynthesizeMetrics:
    """The notebook's steps for one shard (resumable): synthesize, templify, stats, variants,
    mark done. A single-shard job also writes the stage's metrics.json; -> the job's metrics.
    `engine`/`tok`: an engine opened for an earlier shard (its backend is reused, timers fresh)."""
    texts, data_stats = load_texts(cfg)
    engine, tok = (engine.sharing(), tok) if engine is not None else open_engine(ctx, cfg)
    synths, info = synthesize_shard(ctx, cfg, texts, engine, tok)
    rows = write_augmented(ctx, cfg, synths)
    df = write_stats(ctx, synths, rows, cfg)
    plot_stats(ctx, df, cfg)
    variants = run_variants(ctx, cfg, texts, data_stats, engine, tok)
    metrics = finish_job(ctx, cfg, data_stats, synths, engine, info, df, variants)
    if cfg.num_shards == 1:
        finish_stage(ctx, metrics)
    return metrics


def collect_shards(ctx, cfg: Params) -> SynthesizeMetrics:
    """Stage 02 in the notebook when num_shards > 1: nothing is synthesized in the kernel (one
    shard of a paper profile takes hours). Every shard done -> merge them (and the variants)
    and return the merged metrics; otherwise raise ShardsIncomplete naming the missing shards
    and the exact commands that make them."""
    stamp = model_stamp(ctx, cfg)
    done, problems = shard_status(ctx.work, cfg, stamp)
    if problems:
        finished = {int(d["shard"].split("-of-")[0]) for d in done}
        missing = [i for i in range(cfg.num_shards) if i not in finished]
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise ShardsIncomplete(
            f"stage 02 has num_shards {cfg.num_shards}: the shards are synthesized by separate jobs, not in "
            f"this notebook's kernel, and {len(missing)} of them are not complete under {ctx.work} "
            f"(shards {array_spec(missing)}):\n  " + "\n  ".join(shown)
            + "\nmake them with one of:\n" + shard_job_commands(ctx, cfg, missing))
    return merge_stage(ctx, cfg)


# --------------------------------------------------------------------------- command line (ipt_utils/cli.py)

def cli_context(profile, out: str | None = None, num_shards: int | None = None,
                shard_index: int | None = None):
    """(StageContext, Params) of stage 02 for a loaded profile, without papermill."""
    section = profile.section("synthesize")
    if num_shards is not None:
        section["num_shards"] = num_shards
    if shard_index is not None:
        section["shard_index"] = shard_index
    cfg = validate(Params, section, source="command line", prefix="synthesize")
    run = profile.sections["run"]
    run_dir = Path(out).resolve() if out else REPO_ROOT / "results" / "runs" / profile.name
    work_root = work_root_for(run_dir, run)
    setup_environment(work_root, run)
    ctx = StageContext(profile=str(profile.path), stage="02_synthesize", run_dir=run_dir,
                       work_root=work_root, run=run, interactive=False)
    ctx.stage_dir  # create
    return ctx, cfg


def cli_main(args, profile) -> int:
    """`python -m ipt_utils synthesize|synth-merge` (see cli.py)."""
    try:
        ctx, cfg = cli_context(profile, args.out, args.num_shards, getattr(args, "shard_index", None))
    except (SchemaError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "synthesize":
        # --all-shards: every shard in turn in this process (the backend starts once), then the
        # merge; one machine, memory bounded by a shard, finished rounds reused after a crash
        every = getattr(args, "all_shards", False)
        engine, tok = open_engine(ctx, cfg)
        for i in range(cfg.num_shards) if every else [cfg.shard_index]:
            m = run_shard(ctx, dataclasses.replace(cfg, shard_index=i), engine, tok)
            print(f"[synthesize] shard {shard_name(i, cfg.num_shards)} done: {m['texts_synthesized']} texts, "
                  f"{m['pairs_total']} pairs, rounds resumed {m['rounds_resumed']} / generated "
                  f"{m['rounds_generated']} -> {ctx.work}")
        if not every or cfg.num_shards == 1:
            return 0
    try:
        m = merge_stage(ctx, cfg)
    except ShardsIncomplete as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finish_stage(ctx, m)
    print(f"[synth-merge] {cfg.num_shards} shards: {m['texts_synthesized']} texts, {m['pairs_total']} pairs "
          f"-> {Path(ctx.work) / 'augmented.jsonl'}, {ctx.stage_dir / 'metrics.json'}")
    return 0
