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
# # 06 · Report
#
# Rebuilds the paper's tables and figures from result files only (no model is loaded):
# Table 1 (Vanilla / Mix / Instruct PT), Table 2 (data efficiency), Table 3 (domain),
# Table 4 (ablations), Table 5 (synthesizer evaluation), synthesis statistics, Figure 4
# (accuracy over instruction tuning), loss curves, synthesis distributions. The paper's
# numbers (`ipt_utils/reference/paper_numbers.csv`, tagged with source and confidence)
# stand beside ours; cells we did not run read "not run".
#
# - **Inputs:** this run's stage dirs 01–05 (and `compare_runs`, `ablation_runs`).
# - **Outputs (stage dir):** `tables/*.md|csv|tex`, `figures/*.png|pdf`, `summary.md`
#   (per table: built or skipped with the missing file, and whether our direction agrees
#   with the paper), `metrics.json`.

# %%
from ipt_utils import effect, explore, report, stage

# %% tags=["parameters"]
profile = "ci-tiny"
run_dir = "../results/runs/ci-tiny"
interactive = True
run = {"seed": 0, "work_dir": "", "device": "auto", "offline": True, "dtype": "auto"}
compare_runs = []
paper_size = "500M"
baselines = {}
ablation_runs = {}
tie_margin = 0.5
figure_formats = ["png"]

# %%
ctx, cfg = stage.open_stage("06_report", globals())

# %%
inputs = report.collect_inputs(ctx.run_dir, cfg)
inputs.missing

# %%
tables = report.build_tables(inputs, cfg, ctx.stage_dir)
[(t.name, t.skipped or "built") for t in tables]

# %%
figures = report.build_figures(inputs, cfg, ctx.stage_dir)
[(f.name, f.skipped or "built") for f in figures]

# %% [markdown]
# ## Tables and figures

# %%
explore.show_report(tables, figures)

# %% [markdown]
# ## The effect with intervals (claims 1 and 2)
# Where stage 04 wrote per-question outcomes: Instruct PT minus Vanilla PT and minus Mix PT on
# held-out questions, before tuning (claim 1) and after (claim 2), with 95% bootstrap intervals
# over seeds and items; the cloze check says whether the facts are stored at all
# (`effect.json`, `effect_table.md`, `effect_curve.png`; ipt_utils/effect.py).

# %%
effect_summary = effect.write_effect_if_measured(ctx.run_dir, ctx.stage_dir)
print((ctx.stage_dir / "effect_table.md").read_text() if effect_summary else "no per-question outcomes from stage 04")

# %%
print(report.write_summary(inputs, tables, figures, ctx.stage_dir).read_text())

# %% [markdown]
# ## metrics.json
# Built by `report.build_metrics` from the declared `report.ReportMetrics` (docs/CONTRACTS.md);
# `report.make_report` runs the same steps in one call.

# %%
metrics = report.build_metrics(inputs, tables, figures)

# %%
stage.finish_stage(ctx, metrics)
