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
# # 05 · Evaluate
#
# Scores every model of the run with lm-evaluation-harness (paper section 6): the general
# suite (ARC-e/c, BoolQ, SIQA, WinoGrande, PIQA, OBQA, HellaSwag, MMLU; the harness's acc and
# acc_norm) and the AdaptLLM domain suites (biomedicine, finance) by the authors' rules:
# options by the lowest mean loss per answer token, their NER, ConvFinQA and Headline metrics
# (docs/EVALUATION.md). `offline_tasks` swaps each task for its offline twin over local
# JSONL files (`ipt_utils/tasks/ipt_<task>.yaml`).
#
# - **Inputs:** `<work>/03_pretrain/<arm>/model`, `<work>/04_instruct_tune/<arm>/model`
#   (found on disk) and `external_models`; task data (hub, or `eval_data_dir`).
# - **Outputs (stage dir):** `results/<model_id>.json` (the harness's results + run ids),
#   `summary.csv` (model_id, arm, tuned, task, metric, value, n), `metrics.json` (with
#   `over_context`: documents whose multiple-choice input is longer than `max_length`; built by
#   `evaluate.build_metrics` from the declared `EvaluateMetrics`, docs/CONTRACTS.md).
#   A model whose results file matches the current settings is not evaluated again.

# %%
from ipt_utils import evaluate, stage

# %% tags=["parameters"]
profile = "ci-tiny"
run_dir = "../results/runs/ci-tiny"
interactive = True
run = {"seed": 0, "work_dir": "", "device": "auto", "offline": True, "dtype": "auto"}
tasks = ["arc_easy", "boolq", "piqa", "mmlu", "pubmedqa", "fpb"]
offline_tasks = True
eval_data_dir = ""
model_sets = ["pretrain", "instruct_tune"]
external_models = []
backend = "hf"
num_fewshot = 0
limit = 20
batch_size = 16
max_length = 512
add_bos_token = True
gpu_memory_utilization = 0.8
bootstrap_iters = 0

# %%
ctx, cfg = stage.open_stage("05_evaluate", globals())

# %% [markdown]
# Models found for this run (scanned on disk) and the lm-eval task behind each task name.

# %%
models = evaluate.find_models(ctx, cfg)
evaluate.harness_task_names(cfg), [(m.model_id, m.pretrained) for m in models]

# %%
summary, metrics = evaluate.run_all(ctx, cfg, models)

# %% [markdown]
# Headline metric per task (the paper's choice: acc_norm / acc / micro-F1 / weighted F1 ...).

# %%
evaluate.headline_table(summary).round(3)

# %%
stage.finish_stage(ctx, metrics)
