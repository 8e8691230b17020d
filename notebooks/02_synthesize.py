# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
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
# - **Outputs:** `<work>/02_synthesize/augmented.jsonl` (one row per raw text), finished
#   rounds under `<work>/02_synthesize/shard-*/` (a rerun resumes), and in the stage
#   directory `synthesis_stats.csv`, `synthesis.png`, `metrics.json`.

# %%
from ipt_utils import stage, synthesize

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
rounds = 2
max_new_tokens = 96
max_model_len = 1024
backend = "auto"
batch_size = 64
tensor_parallel_size = 1
gpu_memory_utilization = 0.9
enable_prefix_caching = False

# %%
ctx, cfg = stage.open_stage("02_synthesize", globals())

# %% [markdown]
# ## Raw texts of this shard (empty texts skipped, markup tokens neutralised)

# %%
texts, data_stats = synthesize.load_texts(cfg)
data_stats

# %% [markdown]
# ## Multi-round synthesis (finished rounds are reused on a rerun)

# %%
engine, tokenizer = synthesize.open_engine(ctx, cfg)
synths, run_info = synthesize.synthesize_shard(ctx, cfg, texts, engine, tokenizer)
print(f"backend={engine.backend} init={engine.init_s:.1f}s generate={engine.gen_s:.1f}s", run_info)

# %% [markdown]
# ## Templify into pre-training text

# %%
rows = synthesize.write_augmented(ctx, cfg, synths)
print(rows[0]["text"][:1500])

# %% [markdown]
# ## Statistics

# %%
stats = synthesize.write_stats(ctx, synths, rows)
synthesize.plot_stats(ctx, stats)
stats.head()

# %%
metrics = synthesize.summarize(data_stats, synths, engine, run_info, stats)
stage.finish_stage(ctx, metrics)
metrics
