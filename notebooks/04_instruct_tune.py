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
# # 04 · Instruction-tune the pre-trained arms (paper Figure 4)
#
# Each arm's pre-trained model (`stage:03_pretrain/<arm>`) is tuned on instruction data
# with the loss on response tokens only (prompt tokens masked with -100). Every
# `eval_every` steps, and at step 0 and the end, MMLU-style questions are scored by the
# log-likelihood of each answer continuation, zero- and few-shot (`eval_shots`): option
# letters as in lm-eval's MMLU (`eval_format: letter`) or each choice's text (`choice`).
#
# - **Inputs:** `<work>/03_pretrain/<arm>/model`, `data` {instruction, response},
#   `eval_data` {question, subject, choices, answer}.
# - **Outputs:** `<work>/04_instruct_tune/<arm>/model`; in the stage directory
#   `curve.csv` (arm, step, task, accuracy), `curve.png`, `loss_<arm>.csv`, `metrics.json`.
# - **Multi-GPU:** with `accelerate_config` set, the tuning runs under `accelerate launch`
#   (FSDP) and this notebook reads its metrics back (README "GPU machines").

# %%
from ipt_utils import instruct_tune, stage

# %% tags=["parameters"]
profile = "ci-tiny"
run_dir = "../results/runs/ci-tiny"
interactive = True
run = {"seed": 0, "work_dir": "", "device": "auto", "offline": True, "dtype": "auto"}
arms = ["vanilla", "mix", "instruct", "continual"]
data = "ipt_utils/fixtures/instructions.jsonl"
eval_data = "ipt_utils/fixtures/eval/mmlu.jsonl"
eval_shots = [0, 1]
eval_format = "choice"
eval_limit = 0
eval_every = 25
eval_batch_size = 64
max_steps = 150
max_len = 256
batch_size = 16
micro_batch_size = 16
learning_rate = 0.001
min_lr_ratio = 0.1
warmup_ratio = 0.05
weight_decay = 0.0
adam_beta1 = 0.9
adam_beta2 = 0.999
grad_clip = 1.0
save_steps = 50
accelerate_config = ""

# %%
ctx, cfg = stage.open_stage("04_instruct_tune", globals())

# %% [markdown]
# ## Tune each arm; evaluate along the way

# %%
metrics = instruct_tune.tune_arms(ctx, cfg)
instruct_tune.plot_curve(ctx)
instruct_tune.curve_frame(ctx).pivot_table(index=["arm", "step"], columns="task", values="accuracy")

# %%
stage.finish_stage(ctx, metrics)
