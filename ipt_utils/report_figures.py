"""Stage 06's figures: Table 1 as bars (ours beside the paper), accuracy over instruction
tuning (the paper's Figure 4), loss curves of stages 03 and 04, and the synthesis
distributions; written as figures/<name>.png|pdf. A figure whose input is missing is
returned skipped, with the missing file named. `cfg` arguments are the stage's report.Params.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .evaluate import GENERAL_TASKS, TASKS
from .report_inputs import ARM_LABELS, Inputs, eval_missing, ours, paper_cell, paper_numbers, paper_size_of


# ====================================================================== figures

@dataclass
class Figure:
    name: str
    title: str
    files: list[str] = field(default_factory=list)
    skipped: str = ""


def _save(fig, out: Path, name: str, cfg) -> list[str]:
    import matplotlib.pyplot as plt

    files = []
    fig.tight_layout()  # also makes room for a suptitle
    for ext in cfg.figure_formats:
        p = out / f"{name}.{ext}"
        fig.savefig(p, dpi=120, bbox_inches="tight")
        files.append(str(p))
    plt.close(fig)
    return files


def fig_instruct_curve(inp: Inputs, cfg, out: Path) -> Figure:
    import matplotlib.pyplot as plt
    import pandas as pd

    f = Figure("fig4_instruct_tune_curve", "Figure 4: accuracy vs instruction-tuning steps")
    path = inp.run_dir / "04_instruct_tune" / "curve.csv"
    if not path.exists():
        f.skipped = f"missing {path}"
        return f
    df = pd.read_csv(path)
    need = {"arm", "step", "task", "accuracy"}
    if not need <= set(df.columns) or not len(df):
        f.skipped = f"{path}: expected columns {sorted(need)} and rows, got {list(df.columns)}"
        return f
    tasks = sorted(df.task.unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for arm, d in df[df.task == task].groupby("arm"):
            d = d.sort_values("step")
            ax.plot(d.step, d.accuracy * (100 if d.accuracy.max() <= 1 else 1), marker="o",
                    label=ARM_LABELS.get(arm, arm))
        ax.set_title(task)
        ax.set_xlabel("instruction-tuning step")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=8)
    fig.suptitle(f"Accuracy during instruction tuning ({inp.label}); paper: Instruct PT rises faster")
    f.files = _save(fig, out, f.name, cfg)
    return f


def fig_loss(inp: Inputs, cfg, out: Path, stage: str = "03_pretrain") -> Figure:
    import matplotlib.pyplot as plt
    import pandas as pd

    name = "loss_pretrain" if stage == "03_pretrain" else "loss_instruct_tune"
    f = Figure(name, f"Training loss per arm ({stage})")
    files = sorted((inp.run_dir / stage).glob("loss_*.csv"))
    if not files:
        f.skipped = f"missing {inp.run_dir / stage}/loss_<arm>.csv"
        return f
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xlabel = "step"
    for p in files:
        df = pd.read_csv(p)
        if not {"step", "loss"} <= set(df.columns) or not len(df):
            continue
        arm = p.stem[len("loss_"):]
        use_tokens = "tokens" in df and df["tokens"].max() > 0
        xlabel = "tokens" if use_tokens else "step"
        ax.plot(df["tokens"] if use_tokens else df["step"], df["loss"], label=ARM_LABELS.get(arm, arm))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.set_title(f"{stage}: loss per arm ({inp.label})")
    ax.legend(fontsize=8)
    f.files = _save(fig, out, f.name, cfg)
    return f


def _pick(cols, *words, exclude=()):
    for c in cols:
        low = c.lower()
        if all(w in low for w in words) and not any(e in low for e in exclude):
            return c
    return None


def fig_synthesis(inp: Inputs, cfg, out: Path) -> list[Figure]:
    """Pairs-per-text and tokens-per-pair distributions, mode/layout mix (tolerant of column names)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    stats = inp.run_dir / "02_synthesize" / "synthesis_stats.csv"
    metrics = inp.run_dir / "02_synthesize" / "metrics.json"
    dist = Figure("synthesis_distributions", "Pairs per text and tokens per pair")
    mix = Figure("synthesis_mode_layout", "Mode / layout mix of templified pairs")
    if not stats.exists():
        dist.skipped = mix.skipped = f"missing {stats}"
        df = None
    else:
        df = pd.read_csv(stats)
    if df is not None:
        cols = list(df.columns)
        pairs = _pick(cols, "pair", exclude=("token",))
        tpp = _pick(cols, "token", "pair")
        panels = [(c, lab) for c, lab in ((pairs, "pairs per text"), (tpp, "tokens per pair"))
                  if c is not None and pd.api.types.is_numeric_dtype(df[c])]
        if panels:
            fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
            for ax, (c, lab) in zip(axes[0], panels):
                ax.hist(df[c].dropna(), bins=20)
                ax.set_xlabel(lab)
                ax.set_ylabel("count")
            fig.suptitle("paper: ~5 pairs per text, ~52 tokens per pair [sum]")
            dist.files = _save(fig, out, dist.name, cfg)
        else:
            dist.skipped = f"{stats}: no pairs/tokens-per-pair column among {cols}"
    # mode / layout counts: columns of synthesis_stats.csv, else dicts in metrics.json
    counts = {}
    if df is not None:
        weight = next((c for c in df.columns if c.lower() in ("count", "n", "texts")), None)
        for key in ("mode", "layout"):
            c = _pick(list(df.columns), key, exclude=("count",))
            if c is not None and not pd.api.types.is_numeric_dtype(df[c]):
                counts[key] = (df.groupby(c)[weight].sum() if weight else df[c].value_counts()).to_dict()
    if metrics.exists():
        m = json.loads(metrics.read_text())
        for key in ("mode", "layout"):
            if key not in counts:
                d = next((v for k, v in m.items() if key in k.lower() and isinstance(v, dict)), None)
                if d:
                    counts[key] = d
        if isinstance(m.get("document_layout_mix"), dict) and m["document_layout_mix"]:
            counts["layout per document"] = m["document_layout_mix"]  # the pre-training units
    if counts:
        fig, axes = plt.subplots(1, len(counts), figsize=(4.8 * len(counts), 3.2), squeeze=False)
        for ax, (key, d) in zip(axes[0], counts.items()):
            ax.bar([str(k) for k in d], [float(v) for v in d.values()])
            ax.set_title(key)
            ax.tick_params(axis="x", rotation=30, labelsize=7)
        mix.files = _save(fig, out, mix.name, cfg)
        mix.skipped = ""
    elif not mix.skipped:
        mix.skipped = f"no mode/layout columns in {stats} nor counts in {metrics}"
    return [dist, mix]


def fig_table1(inp: Inputs, cfg, out: Path) -> Figure:
    """Bar chart: ours (each arm) beside the paper per general task."""
    import matplotlib.pyplot as plt
    import numpy as np

    f = Figure("table1_bars", "Table 1 as bars: ours vs paper")
    if inp.evals is None:
        f.skipped = eval_missing(inp)
        return f
    pn = paper_numbers()
    run = inp.label
    tasks = [x for x in GENERAL_TASKS if any(ours(inp.evals, run, a, False, x) is not None
                                             for a in ("vanilla", "mix", "instruct"))]
    if not tasks:
        f.skipped = "no general task was evaluated on this run's arms"
        return f
    size = paper_size_of(run, cfg.paper_size)
    series = [(f"{ARM_LABELS[a]} (ours)", [ours(inp.evals, run, a, False, x) for x in tasks])
              for a in ("vanilla", "mix", "instruct")]
    series += [(f"{ARM_LABELS[a]} (paper {size})",
                [(paper_cell(pn, "table1", size, x, a) or (None,))[0] for x in tasks]) for a in ("vanilla", "instruct")]
    fig, ax = plt.subplots(figsize=(1.6 * len(tasks) + 2, 3.6))
    w = 0.8 / len(series)
    xs = np.arange(len(tasks))
    for i, (lab, vals) in enumerate(series):
        ax.bar(xs + i * w, [v if v is not None else 0 for v in vals], w, label=lab,
               hatch="//" if "paper" in lab else None)
    ax.set_xticks(xs + 0.4 - w / 2, [TASKS[x].label for x in tasks])
    ax.set_ylabel("score (%)")
    ax.set_title("missing bars = not run / not reported; paper numbers unverified [sum]", fontsize=8)
    ax.legend(fontsize=7)
    f.files = _save(fig, out, f.name, cfg)
    return f


def build_figures(inp: Inputs, cfg, out_dir: str | Path) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    figs = [fig_table1(inp, cfg, out), fig_instruct_curve(inp, cfg, out), fig_loss(inp, cfg, out),
            fig_loss(inp, cfg, out, "04_instruct_tune")]
    figs += fig_synthesis(inp, cfg, out)
    return figs
