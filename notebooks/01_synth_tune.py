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
# # 01 · Tune the instruction synthesizer
#
# Fine-tunes a base LM into the *instruction synthesizer* (paper section 2): it reads a raw
# text and writes instruction–response pairs about it.
#
# - **Inputs:** the synthesizer-tuning collection (`data`), a base model (`base_model`).
# - **Outputs:** `<work>/01_synth_tune/model` (plain safetensors checkpoint, LoRA merged),
#   `train_log.csv`, `loss.png`, `metrics.json` in the stage directory.

# %%
from ipt_utils import collection, stage, synth_eval, synth_tune

# %% tags=["parameters"]
profile = "ci-tiny"
run_dir = "../results/runs/ci-tiny"
interactive = True
run = {"seed": 0, "work_dir": "", "device": "auto", "offline": True, "dtype": "auto"}
base_model = "tiny"
tiny_model = {"hidden_size": 128, "intermediate_size": 384, "num_layers": 2, "num_heads": 4,
              "num_kv_heads": 2, "max_position_embeddings": 2048, "vocab_size": 0}
tiny_tokenizer = "tiny"
data = "ipt_utils/fixtures/synth_collection.jsonl"
datasets = []
heldout_datasets = ["logiqa_like"]
max_per_dataset = 10000
eval_per_dataset = 3
max_seq_len = 768
method = "full"
lora_r = 16
lora_alpha = 32
lora_dropout = 0.0
learning_rate = 0.003
lr_scheduler = "cosine"
warmup_ratio = 0.05
adam_beta1 = 0.9
adam_beta2 = 0.95
weight_decay = 0.0
batch_size = 8
grad_accum_steps = 1
max_steps = 150
save_steps = 50
gradient_checkpointing = False
accelerate_config = ""
eval_shots = 1
eval_max_new_tokens = 96
eval_backend = "transformers"

# %%
ctx, cfg = stage.open_stage("01_synth_tune", globals())

# %% [markdown]
# ## Data: cap per dataset, hold out, render with the synthesizer markup, pack per dataset

# %%
examples, read_stats = collection.load_collection(cfg)
train, eval_seen, eval_unseen = collection.split_examples(examples, cfg, ctx.seed)
tokenizer = synth_tune.base_tokenizer(ctx, cfg)  # no model in this kernel: `train` loads it (or launches)
sequences, seq_stats = collection.build_sequences(tokenizer, train, cfg.max_seq_len, ctx.seed)
print(read_stats, seq_stats, f"eval: {len(eval_seen)} seen / {len(eval_unseen)} unseen contexts")

# %% [markdown]
# ## Train (loss on pairs only)
# In this process, or with `accelerate_config` across processes/GPUs (`accelerate launch`, FSDP;
# the launch's output shows below and is kept in `<work>/01_synth_tune/launch.log`). Either
# way the trained model is written to disk and not kept here.

# %%
train_metrics = synth_tune.train(ctx, cfg, sequences, None, tokenizer)
synth_tune.plot_loss(ctx)
train_metrics

# %% [markdown]
# ## Evaluate the synthesizer (paper Table 5)
# Held-out contexts of seen and unseen datasets; the tuned synthesizer against its base
# model, zero-shot and few-shot. `response_f1`: its response to each gold instruction (given
# after the context and the earlier gold pairs) against the gold response, SQuAD token F1.
# `own_*`: the pairs it writes from the context alone, matched to the gold pairs by
# instruction (docs/EVALUATION.md).

# %%
eval_sets = {"seen": eval_seen, "unseen": eval_unseen}
models = {"tuned": train_metrics["model_dir"], "base": synth_tune.base_model_dir(ctx, cfg)}
table = synth_eval.evaluate_models(ctx, cfg, models, eval_sets, synth_eval.demo_pool(examples, eval_sets))
eval_metrics = synth_eval.write_table(ctx, table)
table

# %%
stage.finish_stage(ctx, synth_tune.stage_metrics(read_stats, seq_stats, train_metrics, eval_metrics,
                                                 (train, eval_seen, eval_unseen)))
