"""Stage 06's inputs: the result files of the runs it reports, the paper's numbers, and the
lookups every table and figure shares (one cell of ours, one cell of the paper's, how to print
them, whether two directions agree).

Reads 05_evaluate/results/*.json (else summary.csv) of this run and of `compare_runs`, and
ipt_utils/reference/paper_numbers.csv (the paper's numbers with their source and confidence
tag). `cfg` arguments are the stage's report.Params.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from . import evaluate, io
from .evaluate import TASKS
from .schema import resolve_path

PAPER_NUMBERS = Path(__file__).resolve().parent / "reference" / "paper_numbers.csv"
NOT_RUN = "not run"
NOT_REPORTED = "not reported"
ARM_LABELS = {"vanilla": "Vanilla PT", "mix": "Mix PT", "instruct": "Instruct PT",
              "pairs_only": "Instruct PT w/o corpora", "continual": "Continual PT"}
ABLATIONS = {"full": "Instruct PT (full)", "wo_corpora": "w/o corpora (pairs only)",
             "rule_based": "rule-based synthesis", "one_shot": "1-shot synthesis (M=1)"}
PAPER_SIZES = ("500M", "1.3B")
DOMAINS = ("biomedicine", "finance")


# ====================================================================== inputs

@dataclass
class Inputs:
    run_dir: Path
    runs: dict[str, Path]  # label -> run dir (this run first)
    evals: object  # DataFrame: run,profile + evaluate.SUMMARY_COLUMNS (value in points)
    missing: list[str] = field(default_factory=list)  # files looked for and not found
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return next(iter(self.runs))


def read_eval_results(run_dir: Path):
    """One run's evaluation rows (value x100), from results/*.json, else summary.csv; None if absent."""
    import pandas as pd

    stage = Path(run_dir) / "05_evaluate"
    files = sorted((stage / "results").glob("*.json"))
    if files:
        rows = []
        for f in files:
            res = io.read_json(f)
            if "ipt" not in res:
                continue
            for r in evaluate.summary_rows(res):
                rows.append({"run": Path(run_dir).name, "profile": res["ipt"].get("profile", ""), **r})
        df = pd.DataFrame(rows)
    elif (stage / "summary.csv").exists():
        df = pd.read_csv(stage / "summary.csv")
        df.insert(0, "profile", "")
        df.insert(0, "run", Path(run_dir).name)
    else:
        return None
    if not len(df):
        return None
    df["value"] = df["value"].astype(float) * 100.0
    df["tuned"] = df["tuned"].astype(str).str.lower().isin(["true", "1"])
    return df


def _run_label(run_dir: Path, df) -> str:
    prof = [p for p in (df["profile"].unique() if df is not None else []) if p]
    return prof[0] if prof else Path(run_dir).name


def collect_inputs(run_dir: str | Path, cfg) -> Inputs:
    """Find every result file; raise only if nothing at all exists."""
    import pandas as pd

    run_dir = Path(run_dir)
    frames, runs, missing, notes = [], {}, [], []
    for i, rd in enumerate([run_dir] + [Path(p) for p in cfg.compare_runs]):
        rd = resolve_path(str(rd))
        df = read_eval_results(rd)
        if df is None:
            missing.append(f"{rd}/05_evaluate/results/*.json (or summary.csv)")
            if i == 0:
                runs[run_dir.name] = run_dir
            continue
        label = _run_label(rd, df)
        if label in runs:
            label = f"{label} ({rd.name})"
        df["run"] = label
        runs[label] = rd
        frames.append(df)
    evals = pd.concat(frames, ignore_index=True) if frames else None
    inp = Inputs(run_dir=run_dir, runs=runs, evals=evals, missing=missing, notes=notes)
    others = [run_dir / p for p in ("01_synth_tune/synth_eval.csv", "02_synthesize/metrics.json",
                                    "02_synthesize/synthesis_stats.csv", "03_pretrain/metrics.json",
                                    "04_instruct_tune/curve.csv")]
    others += list((run_dir / "03_pretrain").glob("loss_*.csv"))
    if evals is None and not any(p.exists() for p in others):
        raise FileNotFoundError(
            "06_report: no result files at all. Looked for " + ", ".join(missing + [str(p) for p in others])
            + f" and {run_dir}/03_pretrain/loss_<arm>.csv; run stages 01-05 first")
    return inp


def paper_numbers():
    import pandas as pd

    return pd.read_csv(PAPER_NUMBERS, dtype={"setting": str})


def paper_cell(pn, table, setting, task, who):
    hit = pn[(pn.table == table) & (pn.setting == setting) & (pn.task == task) & (pn.arm_or_model == who)]
    return (float(hit.value.iloc[0]), hit.source.iloc[0], hit.confidence.iloc[0]) if len(hit) else None


# ====================================================================== cells

def fmt(v, missing=NOT_RUN):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return missing
    return f"{v:.1f}"


def provenance(p) -> dict:
    """The paper-source and confidence cells of a row, from a paper_cell(...) hit or None."""
    return {"paper source": p[1] if p else NOT_REPORTED, "paper confidence": p[2] if p else NOT_REPORTED}


def mean_of(vals):
    vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def ours(evals, run, arm=None, tuned=False, task=None, model_id=None):
    """Headline-metric value (points) of one run/arm (or model_id)/task; None if not run."""
    if evals is None:
        return None
    d = evals[(evals.run == run) & (evals.task == task) & (evals.tuned == tuned)]
    d = d[d.model_id == model_id] if model_id else d[(d.arm == arm) & (d.arm != "external")]
    if task in TASKS:
        d = d[d.metric == TASKS[task].metric]
    return float(d.value.iloc[0]) if len(d) else None


def direction(diff, margin):
    if diff is None:
        return None
    return 0 if abs(diff) <= margin else (1 if diff > 0 else -1)


def agree_word(ours_d, paper_d):
    if ours_d is None or paper_d is None:
        return "cannot judge"
    return "yes" if ours_d == paper_d else ("tie" if ours_d == 0 else "no")


def paper_size_of(run_label: str, default: str) -> str:
    low = run_label.lower()
    return "1.3B" if "1.3b" in low else "500M" if "500m" in low else default


def eval_missing(inp: Inputs) -> str:
    return "missing " + "; ".join(inp.missing) if inp.missing else "no evaluation results"


def scoring_note(inp: Inputs) -> str:
    """How the rows were scored: the harness version of each run (from its results files) and
    whose metric definitions apply."""
    versions = {}
    for run, rd in inp.runs.items():
        for f in sorted((Path(rd) / "05_evaluate" / "results").glob("*.json")):
            res = io.read_json(f)
            v = res.get("ipt", {}).get("harness_version") or res.get("lm_eval_version") or "unrecorded"
            versions.setdefault(run, set()).add(str(v))
    used = "; ".join(f"{run}: {', '.join(sorted(v))}" for run, v in versions.items()) or "no results files"
    return (f"Scored with lm-evaluation-harness ({used}): general tasks by the harness's own metric "
            "definitions, domain tasks by the authors' AdaptLLM rules (docs/EVALUATION.md).")


def conf_note(pn, table) -> str:
    d = pn[pn.table == table]
    if not len(d):
        return NOT_REPORTED
    return f"{d.source.iloc[0]}; confidence: {d.confidence.iloc[0]}"
