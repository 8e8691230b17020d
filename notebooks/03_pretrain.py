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
# # 03 · Pre-train the arms (Vanilla / Mix / Instruct PT, paper section 6)
#
# One model per data arm, all with the same architecture, hyper-parameters and token
# budget (`train_tokens`); only the data differs:
# `vanilla` raw corpus · `mix` raw + synthesizer-tuning data · `instruct` raw corpus with
# the converted texts replaced by their instruction-augmented versions + tuning data
# (x `tuning_repeat`) · `pairs_only` the synthesized pairs alone · `continual` augmented
# corpus from `base_model` (here this run's vanilla arm, trained first), 1:1 by tokens with
# general instructions `{question} {response}` · `arm_variants`: the same recipes over another
# augmented corpus (e.g. 1-shot or rule-based synthesis, paper Table 4).
#
# - **Inputs:** `raw_corpus`, `synth_collection`, `general_instructions`,
#   `<work>/02_synthesize/augmented.jsonl` (arms instruct / pairs_only / continual).
# - **Outputs:** `<work>/03_pretrain/<arm>/model`; in the stage directory
#   `loss_<arm>.csv` (step, loss, lr, tokens), `loss.png`, `metrics.json`
#   (per arm: final_loss, tokens, tokens_per_s, mfu, packing_efficiency, wall_s).
# - **Resume:** tokenized sources and packed arms are cached in `<work>/03_pretrain`;
#   an interrupted arm resumes from its last checkpoint (every `save_steps`), finished
#   arms are not retrained.
# - **Multi-GPU:** set `accelerate_config: params/accelerate/fsdp.yaml` (paper profiles);
#   the training cell then runs
#   `accelerate launch --config_file params/accelerate/fsdp.yaml -m ipt_utils.pretrain <work>/03_pretrain/launch.json`
#   (FSDP, bf16 autocast, one process per GPU; `--num_processes`/`--num_machines` in that file).

# %%
from ipt_utils import pretrain, stage

# %% tags=["parameters"]
profile = "ci-tiny"
run_dir = "../results/runs/ci-tiny"
interactive = True
run = {"seed": 0, "work_dir": "", "device": "auto", "offline": True, "dtype": "auto"}
arms = ["vanilla", "mix", "instruct", "continual"]
arm_variants = {}
raw_corpus = "ipt_utils/fixtures/raw_corpus.jsonl"
synth_collection = "ipt_utils/fixtures/synth_collection.jsonl"
general_instructions = "ipt_utils/fixtures/general_instructions.jsonl"
tuning_repeat = 4
general_ratio = 0.5
init = "scratch"
base_model = "stage:03_pretrain/vanilla"
model = {"hidden_size": 64, "intermediate_size": 256, "num_layers": 2, "num_heads": 2,
         "num_kv_heads": 2, "max_position_embeddings": 512, "vocab_size": 0}
tokenizer = "tiny"
seq_len = 256
train_tokens = 524288
batch_tokens = 4096
micro_batch_size = 8
learning_rate = 0.003
min_lr_ratio = 0.1
warmup_ratio = 0.05
weight_decay = 0.1
adam_beta1 = 0.9
adam_beta2 = 0.95
grad_clip = 1.0
save_steps = 64
log_steps = 2
gradient_checkpointing = False
num_proc = 1
chunk_docs = 256
doc_mask = False
attn_implementation = "sdpa"
compile = False
accelerate_config = ""

# %%
ctx, cfg = stage.open_stage("03_pretrain", globals())

# %% [markdown]
# ## Data: tokenize each source once, fill every arm's budget, pack with `<s>`/`</s>`

# %%
data = pretrain.prepare_data(ctx, cfg)
pretrain.data_summary(data)

# %% [markdown]
# ## Train every arm (same init, schedule and budget)

# %%
metrics = pretrain.train_arms(ctx, cfg, data)
pretrain.plot_losses(ctx, cfg)
pretrain.metrics_frame(metrics)

# %%
stage.finish_stage(ctx, metrics)
