"""The paper's two pre-training claims, measured with intervals on stage 04's per-question outcomes.

Input: <run_dir>/04_instruct_tune/eval_items.csv (arm, step, task, item, correct; written by
ipt_utils.instruct_tune). An arm and its seed replicas `<arm>_s<k>` (registry.split_replica)
are the seeds of one arm; seed k of two arms is paired (same seed number).

  claim 1 (paper Table 1): at step 0 -- the pre-trained base models, before any instruction
           tuning -- Instruct PT answers more held-out questions than Vanilla PT and Mix PT;
  claim 2 (paper Figure 4): at the last tuning step Instruct PT is still ahead.

For each claim and comparison (instruct_minus_vanilla, instruct_minus_mix): the mean over
seeds and items of the accuracy difference, and a 95% percentile interval from a bootstrap
that resamples items and seeds together (paired: the same draw for both arms). The `cloze`
task (the fact right after "X was born in", no question) is the stored-facts check: a
question can only be answered about a fact the model holds.

Outputs (`write_effect`): effect.json, effect_curve.png (accuracy over tuning steps per arm,
band = lowest..highest seed), effect_table.md (each comparison beside the paper's direction).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import io
from .registry import split_replica

QA_TASK = "mmlu_0shot"  # stage 04's zero-shot question format
CLOZE_TASK = "cloze"
COMPARISONS = (("instruct_minus_vanilla", "instruct", "vanilla"), ("instruct_minus_mix", "instruct", "mix"))
CLAIMS = {
    "claim1_base": ("first", "Table 1: the Instruct PT base model beats Vanilla PT and Mix PT (equal tokens)"),
    "claim2_tuned": ("last", "Figure 4: after instruction tuning, Instruct PT stays ahead"),
}
BOOTSTRAP = 2000


def read_items(stage_dir: str | Path):
    import pandas as pd

    path = Path(stage_dir) / "eval_items.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no per-question outcomes (stage 04 writes them)")
    df = pd.read_csv(path, dtype={"item": str})
    split = df["arm"].map(split_replica)
    return df.assign(base_arm=[b for b, _ in split], seed=[k for _, k in split])


def outcome_matrix(df, arm: str, step: int, task: str):
    """seed -> outcome vector over items (sorted item ids) of `arm` at `step`."""
    sel = df[(df["base_arm"] == arm) & (df["step"] == step) & (df["task"] == task)]
    table = sel.pivot_table(index="seed", columns="item", values="correct", aggfunc="first")
    return table.sort_index().sort_index(axis=1)


def paired_difference(a, b, n_boot: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Mean of a - b over the seeds and items both hold; 95% bootstrap interval (items and
    seeds resampled with replacement, the same draw for both)."""
    seeds = sorted(set(a.index) & set(b.index))
    items = sorted(set(a.columns) & set(b.columns))
    if not seeds or not items:
        return {"mean": None, "ci95": [None, None], "seeds": len(seeds), "items": len(items)}
    d = a.loc[seeds, items].to_numpy(float) - b.loc[seeds, items].to_numpy(float)  # seeds x items
    rng = np.random.default_rng(seed)
    s_idx = rng.integers(0, d.shape[0], size=(n_boot, d.shape[0]))
    i_idx = rng.integers(0, d.shape[1], size=(n_boot, d.shape[1]))
    boot = d[s_idx[:, :, None], i_idx[:, None, :]].mean(axis=(1, 2))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"mean": float(d.mean()), "ci95": [float(lo), float(hi)], "seeds": len(seeds), "items": len(items),
            "per_seed": {int(s): float(v) for s, v in zip(seeds, d.mean(axis=1))}}


def verdict(diff: dict) -> str:
    lo, hi = diff["ci95"]
    if lo is None:
        return "not measured"
    return "ahead" if lo > 0 else "behind" if hi < 0 else "no clear difference"


def arm_scores(df, step: int, task: str) -> dict:
    """arm -> {mean, per_seed} accuracy at `step` (missing arms are left out)."""
    out = {}
    for arm, g in df[(df["step"] == step) & (df["task"] == task)].groupby("base_arm"):
        per_seed = g.groupby("seed")["correct"].mean()
        out[arm] = {"mean": float(per_seed.mean()), "per_seed": {int(s): float(v) for s, v in per_seed.items()},
                    "items": int(g["item"].nunique())}
    return out


def summarize(df, n_boot: int = BOOTSTRAP) -> dict:
    """effect.json's content from stage 04's per-question outcomes."""
    steps = sorted(df["step"].unique())
    if not steps or QA_TASK not in set(df["task"]):
        raise ValueError(f"eval_items.csv holds no {QA_TASK} outcomes")
    out = {"qa_task": QA_TASK, "bootstrap": n_boot, "steps": [int(s) for s in steps], "claims": {}}
    for claim, (which, text) in CLAIMS.items():
        step = int(steps[0] if which == "first" else steps[-1])
        entry = {"paper": text, "step": step, "accuracy": arm_scores(df, step, QA_TASK)}
        for name, a, b in COMPARISONS:
            diff = paired_difference(outcome_matrix(df, a, step, QA_TASK), outcome_matrix(df, b, step, QA_TASK),
                                     n_boot)
            entry[name] = {**diff, "verdict": verdict(diff)}
        out["claims"][claim] = entry
    if CLOZE_TASK in set(df["task"]):
        out["stored_facts"] = {"task": CLOZE_TASK, "base": arm_scores(df, int(steps[0]), CLOZE_TASK),
                               "tuned": arm_scores(df, int(steps[-1]), CLOZE_TASK)}
    return out


def effect_table(summary: dict) -> str:
    """Markdown: each comparison beside the paper's direction."""
    lines = ["| claim | comparison | paper | measured (mean, 95% CI) | seeds x items | verdict |",
             "|---|---|---|---|---|---|"]
    for claim, e in summary["claims"].items():
        for name, *_ in COMPARISONS:
            d = e[name]
            shown = "–" if d["mean"] is None else \
                f"{100 * d['mean']:+.1f} pts [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]"
            lines.append(f"| {claim} (step {e['step']}) | {name} | instruct ahead | {shown} | "
                         f"{d['seeds']} x {d['items']} | {d['verdict']} |")
    facts = summary.get("stored_facts")
    if facts:
        lines += ["", "| stored facts (cloze) | " + " | ".join(sorted(facts["base"])) + " |",
                  "|---|" + "---|" * len(facts["base"])]
        for when in ("base", "tuned"):
            lines.append(f"| {when} | " + " | ".join(f"{100 * facts[when][a]['mean']:.1f}%"
                                                      for a in sorted(facts["base"]) if a in facts[when]) + " |")
    return "\n".join(lines) + "\n"


def plot_effect(df, path: str | Path, task: str = QA_TASK):
    """Accuracy over instruction-tuning steps, one line per arm (mean over seeds), band = seed range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    per_seed = df[df["task"] == task].groupby(["base_arm", "seed", "step"])["correct"].mean().reset_index()
    for arm, g in per_seed.groupby("base_arm"):
        s = g.groupby("step")["correct"].agg(["mean", "min", "max"])
        line, = ax.plot(s.index, 100 * s["mean"], marker="o", label=f"{arm} ({g['seed'].nunique()} seeds)")
        ax.fill_between(s.index, 100 * s["min"], 100 * s["max"], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("instruction-tuning step")
    ax.set_ylabel("held-out questions correct (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return fig


def write_effect(run_dir: str | Path, out_dir: str | Path | None = None, n_boot: int = BOOTSTRAP) -> dict:
    """effect.json, effect_table.md and effect_curve.png (in out_dir, default <run>/06_report)."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "06_report"
    df = read_items(run_dir / "04_instruct_tune")
    summary = summarize(df, n_boot)
    io.write_json(out / "effect.json", summary)
    io.write_text(out / "effect_table.md", effect_table(summary))
    plot_effect(df, out / "effect_curve.png")
    return summary


def write_effect_if_measured(run_dir: str | Path, out_dir: str | Path | None = None) -> dict | None:
    """write_effect when stage 04 left per-question outcomes of instruct and vanilla or mix
    (any profile: the numbers mean something in cpu-effect); else None."""
    path = Path(run_dir) / "04_instruct_tune" / "eval_items.csv"
    if not path.exists():
        return None
    arms = set(read_items(path.parent)["base_arm"])
    if "instruct" not in arms or not arms & {"vanilla", "mix"}:
        return None
    return write_effect(run_dir, out_dir)
