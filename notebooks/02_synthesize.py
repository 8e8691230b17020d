# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python (ipt)
#     language: python
#     name: ipt
# ---

# %% [markdown]
# # 02 · Synthesize instruction–response pairs
#
# Runs the instruction synthesizer over raw texts (paper section 4): the texts are split
# into `rounds` contiguous rounds; each text is prompted with the chain of earlier
# examples of its slot (M-shot), generated greedily, and its pairs parsed. The chains are
# then templified into pre-training text (section 5).
#
# - **Inputs:** the synthesizer (`model`, from stage 01 in ci-tiny), the raw corpus (`corpus`).
# - **Several shards** (`num_shards > 1`, the paper profiles): the shards are synthesized by
#   separate jobs (`scripts/slurm/submit_synthesis.sh`, or `python -m ipt_utils synthesize
#   --all-shards` on one machine), never in this kernel; this notebook merges them once all
#   are done, and otherwise stops naming the missing shards and the commands that make them.
# - **Outputs:** `<work>/02_synthesize/augmented.jsonl` (one row per pre-training document:
#   a chain of texts with pairs, or one raw text) and its typed
#   twin `augmented.parquet`, finished
#   rounds under `<work>/02_synthesize/shard-*/` (a rerun resumes; several shards are merged,
#   see README "Synthesis at scale"), and in the stage
#   directory `synthesis_stats.csv`, `synthesis.png`, `metrics.json`.

# %%
from ipt_utils import explore, rule_based, stage, synthesize

# %% tags=["parameters"]
profile = "ci-tiny"
run_dir = "../results/runs/ci-tiny"
interactive = True
run = {"seed": 0, "work_dir": "", "device": "auto", "offline": True, "dtype": "auto"}
model = "stage:01_synth_tune"
corpus = "ipt_utils/fixtures/raw_corpus.jsonl"
split = "train"
text_column = "text"
domain = "general"
max_texts = 96
num_shards = 1
shard_index = 0
shard_by = "records"
rounds = 2
max_new_tokens = 96
max_model_len = 1024
backend = "auto"
batch_size = 64
tensor_parallel_size = 1
gpu_memory_utilization = 0.9
enable_prefix_caching = False
variants = []

# %%
ctx, cfg = stage.open_stage("02_synthesize", globals())

# %% [markdown]
# ## Several shards: merge the jobs' outputs
# With `num_shards > 1` this merges the finished shards (`merged` holds the stage's metrics)
# and the synthesis cells below are skipped; a missing shard stops here with the commands
# that make it. With one shard (`merged` is None) the cells below synthesize in this kernel.

# %%
merged = synthesize.collect_shards(ctx, cfg) if cfg.num_shards > 1 else None
in_kernel = merged is None

# %% [markdown]
# ## Raw texts of this shard (empty texts skipped; markup neutralised in the prompts only, docs/TEXT.md)

# %%
if in_kernel:
    texts, data_stats = synthesize.load_texts(cfg)
    display(data_stats)

# %% [markdown]
# ## Rule-based pairs in seconds (no model)
# Before the synthesizer runs: what the model-free baseline (`backend: rule_based`, paper
# Table 4 "rule-based synthesis") mines from the first texts, and one text turned into its
# pre-training document. The same rules run as a backend or as a `variants` entry.

# %%
if in_kernel:
    print(rule_based.preview_document(texts[0], seed=ctx.seed))
    display(rule_based.preview(texts[:3], seed=ctx.seed))

# %% [markdown]
# ## Multi-round synthesis (finished rounds are reused on a rerun)

# %%
if in_kernel:
    engine, tokenizer = synthesize.open_engine(ctx, cfg)
    synths, run_info = synthesize.synthesize_shard(ctx, cfg, texts, engine, tokenizer)
    print(f"backend={engine.backend} init={engine.init_s:.1f}s generate={engine.gen_s:.1f}s", run_info)

# %% [markdown]
# ## Templify into pre-training text

# %%
if in_kernel:
    rows = synthesize.write_augmented(ctx, cfg, synths)
    print(rows[0]["text"][:1500])

# %% [markdown]
# ## Explore the synthesized data
# Pick a text to see side by side its raw text, the prompt actually sent to the
# synthesizer (inherited history examples, oldest first, then the text itself), the
# pairs parsed from the generation, and the final pre-training text with its template
# mode and layout. Filter by mode, layout and whether the text inherited a history.
# (Interactive widgets in JupyterLab; static tables in the papermill run's notebook.)

# %%
explore.explorer(ctx, cfg)

# %% [markdown]
# ## Statistics

# %%
if in_kernel:
    stats = synthesize.write_stats(ctx, synths, rows, cfg)
    synthesize.plot_stats(ctx, stats, cfg)
else:  # the merged statistics of every shard
    import pandas as pd

    stats = pd.read_csv(ctx.stage_dir / "synthesis_stats.csv", nrows=1000)
stats.head()

# %% [markdown]
# ## Variants: the same texts under other settings (ablations)
# Each `variants` entry (e.g. `one_shot`: rounds 1; `rule_based`: no model) is synthesized,
# templified and summarised like the main run, into `<work>/02_synthesize/variants/<name>/`
# (pre-training arms read them; see the ablation profile). Empty in most profiles.

# %%
if in_kernel:
    variant_metrics = synthesize.run_variants(ctx, cfg, texts, data_stats, engine, tokenizer)

# %% [markdown]
# ## Finish the stage
# One shard: mark it complete (`<work>/02_synthesize/shard-*/done.json`); the stage's metrics
# are those `python -m ipt_utils synthesize` writes for the same shard (`synthesize.finish_job`).
# Several shards: the merged metrics from above. One row per setting: the main run and each variant.

# %%
if in_kernel:
    metrics = synthesize.finish_job(ctx, cfg, data_stats, synths, engine, run_info, stats, variant_metrics)
else:
    metrics = merged
stage.finish_stage(ctx, metrics)
synthesize.variants_frame(metrics, metrics.get("variants", {}))
