"""Stage 06: tables and figures of the paper from result files only.

Reads this run's stage directories (and those of `compare_runs`): 05_evaluate/results/*.json
(or summary.csv), 03_pretrain/metrics.json + loss_<arm>.csv, 04_instruct_tune/curve.csv,
02_synthesize/metrics.json + synthesis_stats.csv, 01_synth_tune/synth_eval.csv. Never
loads a model. Writes to the stage dir: tables/<name>.md|csv|tex, figures/<name>.png|pdf,
summary.md. Each table shows the paper's numbers (ipt_utils/reference/paper_numbers.csv)
beside ours with their source and confidence tag; cells we did not run read "not run",
paper cells the paper does not give read "not reported". A table whose inputs are missing
is listed as skipped with the missing file named; only when no input exists at all does
the stage fail.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from . import evaluate, io
from .evaluate import GENERAL_TASKS, TASKS
from .schema import resolve_path, spec

PAPER_NUMBERS = Path(__file__).resolve().parent / "reference" / "paper_numbers.csv"
NOT_RUN = "not run"
NOT_REPORTED = "not reported"
ARM_LABELS = {"vanilla": "Vanilla PT", "mix": "Mix PT", "instruct": "Instruct PT",
              "pairs_only": "Instruct PT w/o corpora", "continual": "Continual PT"}
ABLATIONS = {"full": "Instruct PT (full)", "wo_corpora": "w/o corpora (pairs only)",
             "rule_based": "rule-based synthesis", "one_shot": "1-shot synthesis (M=1)"}
PAPER_SIZES = ("500M", "1.3B")
DOMAINS = ("biomedicine", "finance")


@dataclass
class Params:
    compare_runs: list[str] = spec(help="other run dirs whose results join the tables (missing ones "
                                        "are reported, not fatal)")
    paper_size: str = spec(choices=PAPER_SIZES, help="paper model size this run is compared with "
                                                     "(compare runs: guessed from their profile name)")
    baselines: dict[str, str] = spec(help="evaluated external model_id -> paper name "
                                          "(Pythia-1B, BLOOM-3B, Llama3-8B, Llama3-70B)")
    ablation_runs: dict[str, str] = spec(help="rule_based / one_shot / wo_corpora -> run dir whose "
                                              "instruct arm is that ablation")
    tie_margin: float = spec(ge=0, help="points within which a difference counts as a tie")
    figure_formats: list[str] = spec(choices=("png", "pdf"))


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


def collect_inputs(run_dir: str | Path, cfg: Params) -> Inputs:
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


def _paper(pn, table, setting, task, who):
    hit = pn[(pn.table == table) & (pn.setting == setting) & (pn.task == task) & (pn.arm_or_model == who)]
    return (float(hit.value.iloc[0]), hit.source.iloc[0], hit.confidence.iloc[0]) if len(hit) else None


# ====================================================================== table helpers

@dataclass
class Table:
    name: str
    title: str
    df: object = None  # DataFrame of display strings
    notes: list[str] = field(default_factory=list)
    agreement: str = ""  # one sentence for summary.md
    skipped: str = ""  # reason, when not built
    extra: object = None  # optional second block (DataFrame) shown under the first


def _fmt(v, missing=NOT_RUN):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return missing
    return f"{v:.1f}"


def _provenance(p) -> dict:
    """The paper-source and confidence cells of a row, from a _paper(...) hit or None."""
    return {"paper source": p[1] if p else NOT_REPORTED, "paper confidence": p[2] if p else NOT_REPORTED}


def _mean(vals):
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


def _direction(diff, margin):
    if diff is None:
        return None
    return 0 if abs(diff) <= margin else (1 if diff > 0 else -1)


def _agree_word(ours_d, paper_d):
    if ours_d is None or paper_d is None:
        return "cannot judge"
    return "yes" if ours_d == paper_d else ("tie" if ours_d == 0 else "no")


def _size_of(run_label: str, default: str) -> str:
    low = run_label.lower()
    return "1.3B" if "1.3b" in low else "500M" if "500m" in low else default


def _eval_missing(inp: Inputs) -> str:
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


# ====================================================================== tables

def table1(inp: Inputs, cfg: Params, pn, tuned: bool = False) -> Table:
    """Vanilla vs Mix vs Instruct PT per general task + average, beside the paper's Table 1."""
    import pandas as pd

    name = "table1_general_tuned" if tuned else "table1_general"
    title = ("Table 1 (after instruction tuning, ours only)" if tuned else
             "Table 1: general pre-training from scratch (Vanilla / Mix / Instruct PT)")
    t = Table(name, title)
    if inp.evals is None:
        t.skipped = _eval_missing(inp)
        return t
    ev = inp.evals[(inp.evals.arm != "external") & (inp.evals.tuned == tuned)]
    if tuned and not len(ev):
        t.skipped = "no instruction-tuned models were evaluated (04_instruct_tune models absent)"
        return t
    arms = [a for a in ("vanilla", "mix", "instruct") if a in set(ev.arm)] or ["vanilla", "mix", "instruct"]
    tasks = list(GENERAL_TASKS)  # the paper's whole general suite: unrun rows say so
    rows, agree_counts = [], {}
    for task in tasks + ["average"]:
        row = {"task": TASKS[task].label if task in TASKS else "Average",
               "metric": TASKS[task].metric if task in TASKS else "mean"}
        for run in inp.runs:
            for arm in arms:
                if task == "average":
                    common = [x for x in tasks if all(ours(inp.evals, run, a, tuned, x) is not None for a in arms)]
                    v = _mean([ours(inp.evals, run, arm, tuned, x) for x in common])
                else:
                    v = ours(inp.evals, run, arm, tuned, task)
                row[f"{ARM_LABELS[arm]} (ours: {run})"] = _fmt(v)
        src = conf = ""
        for size in PAPER_SIZES:
            for arm in ("vanilla", "instruct"):
                if task == "average":
                    listed = [x for x in tasks if _paper(pn, "table1", size, x, arm)]
                    v = _mean([_paper(pn, "table1", size, x, arm)[0] for x in listed])
                else:
                    p = _paper(pn, "table1", size, task, arm)
                    v = p[0] if p else None
                    if p:
                        src, conf = p[1], p[2]
                row[f"{ARM_LABELS[arm]} (paper {size})"] = _fmt(v, NOT_REPORTED)
        if task == "average":
            src = "mean of the rows above (paper: of the listed tasks only)"
            conf = "derived"
        # direction: Instruct - Vanilla, ours vs the paper size this run stands for
        for run in inp.runs:
            size = _size_of(run, cfg.paper_size)
            if task == "average":
                common = [x for x in tasks if ours(inp.evals, run, "vanilla", tuned, x) is not None
                          and ours(inp.evals, run, "instruct", tuned, x) is not None
                          and _paper(pn, "table1", size, x, "instruct")]
                o = (_mean([ours(inp.evals, run, "instruct", tuned, x) for x in common]),
                     _mean([ours(inp.evals, run, "vanilla", tuned, x) for x in common]))
                pi = _mean([_paper(pn, "table1", size, x, "instruct")[0] for x in common])
                pv = _mean([_paper(pn, "table1", size, x, "vanilla")[0] for x in common])
            else:
                o = (ours(inp.evals, run, "instruct", tuned, task), ours(inp.evals, run, "vanilla", tuned, task))
                p_i, p_v = _paper(pn, "table1", size, task, "instruct"), _paper(pn, "table1", size, task, "vanilla")
                pi, pv = (p_i[0] if p_i else None), (p_v[0] if p_v else None)
            od = _direction(o[0] - o[1], cfg.tie_margin) if None not in o else None
            pd_ = _direction(pi - pv, 0.0) if None not in (pi, pv) else None
            word = _agree_word(od, pd_) if not tuned else NOT_REPORTED
            row[f"Instruct>Vanilla agrees with paper {size}? ({run})"] = word
            if task != "average":
                agree_counts.setdefault(run, []).append(word)
            else:
                agree_counts.setdefault(run + "#avg", word)
        row["paper source"] = src or NOT_REPORTED
        row["paper confidence"] = conf or NOT_REPORTED
        rows.append(row)
    t.df = pd.DataFrame(rows)
    t.notes.append("Ours: headline metric per task (acc_norm where the harness defines it, else acc), x100. "
                   + scoring_note(inp) + " Paper numbers: " + _conf_note(pn, "table1"))
    if tuned:
        t.agreement = "ours only (the paper reports no per-task table after instruction tuning)."
    else:
        parts = []
        for run in inp.runs:
            words = agree_counts.get(run, [])
            judged = [w for w in words if w != "cannot judge"]
            if not judged:
                parts.append(f"{run}: cannot judge (Instruct or Vanilla PT not run on the paper's tasks)")
                continue
            parts.append(f"{run}: Instruct-vs-Vanilla direction agrees with the paper on "
                         f"{judged.count('yes')}/{len(judged)} tasks ({judged.count('tie')} ties within "
                         f"{cfg.tie_margin} pt); average: {agree_counts.get(run + '#avg', 'n/a')}")
        t.agreement = "; ".join(parts)
    return t


def _conf_note(pn, table) -> str:
    d = pn[pn.table == table]
    if not len(d):
        return NOT_REPORTED
    return f"{d.source.iloc[0]}; confidence: {d.confidence.iloc[0]}"


def _train_tokens(run_dir: Path, arm: str):
    p = run_dir / "03_pretrain" / "metrics.json"
    if p.exists():
        try:
            v = json.loads(p.read_text()).get("arms", {}).get(arm, {}).get("tokens")
            if v is not None:
                return float(v)
        except (ValueError, AttributeError):
            pass
    lp = run_dir / "03_pretrain" / f"loss_{arm}.csv"
    if lp.exists():
        import pandas as pd

        df = pd.read_csv(lp)
        if "tokens" in df and len(df):
            return float(df["tokens"].iloc[-1])
    return None


def _tok_fmt(tokens):
    if tokens is None:
        return NOT_RUN
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if tokens >= div:
            return f"{tokens / div:.3g}{unit}"
    return f"{tokens:.0f}"


def table2(inp: Inputs, cfg: Params, pn) -> Table:
    """Data efficiency: Instruct PT average vs larger external models trained on more tokens."""
    import pandas as pd

    t = Table("table2_data_efficiency", "Table 2: data efficiency (average over general tasks)")
    if inp.evals is None:
        t.skipped = _eval_missing(inp)
        return t
    ev = inp.evals[~inp.evals.tuned]
    rows, checks = [], []
    for run, rd in inp.runs.items():
        tasks = [x for x in GENERAL_TASKS if ours(ev, run, "instruct", False, x) is not None]
        inst = _mean([ours(ev, run, "instruct", False, x) for x in tasks])
        size = _size_of(run, cfg.paper_size)
        p = _paper(pn, "table2", size, "average", "instruct")
        ptok = _paper(pn, "table2", size, "train_tokens_B", "instruct")
        rows.append({"model": f"Instruct PT (ours: {run})", "training tokens": _tok_fmt(_train_tokens(rd, "instruct")),
                     "average (ours)": _fmt(inst), "tasks averaged": ", ".join(tasks) or NOT_RUN,
                     "paper model": f"Instruct PT {size}", "paper tokens": f"{ptok[0]:g}B" if ptok else NOT_REPORTED,
                     "average (paper)": _fmt(p[0] if p else None, NOT_REPORTED),
                     **_provenance(p)})
        for mid, pname in cfg.baselines.items():
            if pname not in set(pn[pn.table == "table2"].arm_or_model):
                continue
            pbase = next((s for s in PAPER_SIZES if _paper(pn, "table2", s, "average", pname)), None)
            pv = _paper(pn, "table2", pbase, "average", pname) if pbase else None
            ptk = _paper(pn, "table2", pbase, "train_tokens_B", pname) if pbase else None
            bvals = [ours(ev, run, task=x, model_id=mid) for x in tasks]
            base = _mean(bvals) if tasks and all(v is not None for v in bvals) else None
            rows.append({"model": f"{pname} ({mid}, evaluated in {run})",
                         "training tokens": f"{ptk[0]:g}B (paper)" if ptk else NOT_REPORTED,
                         "average (ours)": _fmt(base), "tasks averaged": ", ".join(tasks) or NOT_RUN,
                         "paper model": pname, "paper tokens": f"{ptk[0]:g}B" if ptk else NOT_REPORTED,
                         "average (paper)": _fmt(pv[0] if pv else None, NOT_REPORTED),
                         **_provenance(pv)})
            if inst is not None and base is not None and p and pv:
                checks.append((run, pname, inst - base, p[0] - pv[0]))
    # paper rows for sizes/baselines we did not run
    shown = {r["paper model"] for r in rows}
    for _, r in pn[(pn.table == "table2") & (pn.task == "average")].iterrows():
        pm = f"Instruct PT {r.setting}" if r.arm_or_model == "instruct" else r.arm_or_model
        if pm in shown:
            continue
        tk = _paper(pn, "table2", r.setting, "train_tokens_B", r.arm_or_model)
        rows.append({"model": pm, "training tokens": NOT_RUN, "average (ours)": NOT_RUN,
                     "tasks averaged": NOT_RUN, "paper model": pm,
                     "paper tokens": f"{tk[0]:g}B" if tk else NOT_REPORTED, "average (paper)": _fmt(r.value),
                     "paper source": r.source, "paper confidence": r.confidence})
    t.df = pd.DataFrame(rows)
    t.notes.append("Paper: Instruct PT with 100B tokens comes close to models trained on 3x more tokens. "
                   "Our averages cover only the tasks listed. " + _conf_note(pn, "table2"))
    if checks:
        t.agreement = "; ".join(
            f"{run}: Instruct PT minus {b} = {g:+.1f} pt (paper {pg:+.1f}); "
            f"{'within' if abs(g) <= max(abs(pg), cfg.tie_margin) + 1.0 else 'outside'} ~1 pt of the paper's gap"
            for run, b, g, pg in checks)
    else:
        t.agreement = ("cannot judge: no external baseline evaluated (evaluate.external_models / "
                       "report.baselines), so only the paper's rows are shown")
    return t


def _domain_tasks(domain):
    return [n for n, s in TASKS.items() if s.domain == domain]


def table3(inp: Inputs, cfg: Params, pn) -> Table:
    """Domain continual pre-training: base, Vanilla PT, Instruct PT, large baseline per domain task."""
    import pandas as pd

    t = Table("table3_domain", "Table 3: domain-adaptive continual pre-training")
    if inp.evals is None:
        t.skipped = _eval_missing(inp)
        return t
    ev = inp.evals[~inp.evals.tuned]
    roles = {"base": "Llama3-8B", "vanilla": "vanilla", "instruct": "instruct", "large": "Llama3-70B"}
    role_label = {"base": "base (Llama3-8B)", "vanilla": "Vanilla PT", "instruct": "Instruct PT",
                  "large": "large baseline (Llama3-70B)"}
    by_name = {v: k for k, v in cfg.baselines.items()}

    def arm_of(run, role):
        # Instruct PT-8B is a run's `continual` arm (domain profiles); from-scratch runs: `instruct`
        if role == "instruct" and ((ev.run == run) & (ev.arm == "continual")).any():
            return "continual"
        return role

    def val(run, role, task):
        if role in ("vanilla", "instruct"):
            return ours(ev, run, arm_of(run, role), False, task)
        mid = by_name.get(roles[role])
        return ours(ev, run, task=task, model_id=mid) if mid else None

    rows, parts = [], []
    for domain in DOMAINS:
        tasks = _domain_tasks(domain)
        for task in tasks + ["average"]:
            row = {"domain": domain, "task": TASKS[task].label if task in TASKS else "Average",
                   "metric": TASKS[task].metric if task in TASKS else "mean"}
            for run in inp.runs:
                for role in roles:
                    if task == "average":
                        vals = [val(run, role, x) for x in tasks]
                        v = _mean(vals) if all(x is not None for x in vals) else None
                    else:
                        v = val(run, role, task)
                    row[f"{role_label[role]} (ours: {run})"] = _fmt(v)
            p = None
            for role in roles:
                p_ = _paper(pn, "table3", domain, "average", roles[role]) if task == "average" else None
                p = p_ or p
                row[f"{role_label[role]} (paper)"] = _fmt(p_[0] if p_ else None, NOT_REPORTED)
            row.update(_provenance(p))
            rows.append(row)
        for run in inp.runs:
            done = [x for x in tasks if val(run, "instruct", x) is not None and val(run, "vanilla", x) is not None]
            if not done:
                continue
            o = _mean([val(run, "instruct", x) for x in done]) - _mean([val(run, "vanilla", x) for x in done])
            pp = (_paper(pn, "table3", domain, "average", "instruct")[0]
                  - _paper(pn, "table3", domain, "average", "vanilla")[0])
            word = _agree_word(_direction(o, cfg.tie_margin), _direction(pp, 0))
            parts.append(f"{run}/{domain}: Instruct minus Vanilla PT on {len(done)}/{len(tasks)} tasks "
                         f"= {o:+.1f} pt (paper average {pp:+.1f}); direction agrees: {word}")
    t.df = pd.DataFrame(rows)
    t.notes.append("Instruct PT (ours) = the run's continual arm when it has one, else its instruct arm. "
                   "Paper per-task domain numbers are not in our notes (only averages). "
                   "Average (ours) only when every task of the domain ran. " + scoring_note(inp) + " "
                   + _conf_note(pn, "table3"))
    t.agreement = "; ".join(parts) or "cannot judge: no domain task was run by both Vanilla and Instruct PT"
    return t


def table4(inp: Inputs, cfg: Params, pn) -> Table:
    """Ablations (domain averages): full, w/o corpora, rule-based synthesis, 1-shot synthesis."""
    import pandas as pd

    t = Table("table4_ablations", "Table 4: ablations (domain task averages)")
    if inp.evals is None and not cfg.ablation_runs:
        t.skipped = _eval_missing(inp)
        return t
    # this run's arms: full = instruct (continual in domain profiles without an instruct arm),
    # w/o corpora = pairs_only, the synthesis ablations = arms named rule_based / one_shot
    # (pretrain.arm_variants over 02's variants, see params/ci-ablation.yaml);
    # report.ablation_runs (another run's instruct arm) take precedence
    ev = inp.evals
    here = set(ev[(ev.run == inp.label) & ~ev.tuned].arm) if ev is not None else set()
    full_arm = "continual" if "instruct" not in here and "continual" in here else "instruct"
    sources = {"full": (inp.label, full_arm, ev), "wo_corpora": (inp.label, "pairs_only", ev),
               **{ab: (inp.label, ab, ev) for ab in ("rule_based", "one_shot")}}
    for ab, rd in cfg.ablation_runs.items():
        rd = resolve_path(rd)
        df = read_eval_results(rd)
        if df is None:
            inp.missing.append(f"{rd}/05_evaluate/results/*.json (ablation {ab})")
        sources[ab] = (None if df is None else df["run"].iloc[0], "instruct", df)
    rows, parts = [], []
    for ab in ABLATIONS:
        row = {"setting": ABLATIONS[ab]}
        for domain in DOMAINS:
            tasks = _domain_tasks(domain)
            run, arm, df = sources.get(ab, (None, None, None))
            vals = [ours(df, run, arm, False, x) for x in tasks] if df is not None else [None]
            v = _mean(vals) if all(x is not None for x in vals) else None
            row[f"{domain} (ours)"] = _fmt(v)
            p = _paper(pn, "table4", domain, "average", ab)
            row[f"{domain} (paper)"] = _fmt(p[0] if p else None, NOT_REPORTED)
            row["_v_" + domain] = v
        p = _paper(pn, "table4", "biomedicine", "average", ab)
        row.update(_provenance(p))
        rows.append(row)
    full = rows[0]
    for r, ab in zip(rows[1:], list(ABLATIONS)[1:]):
        for domain in DOMAINS:
            if full["_v_" + domain] is not None and r["_v_" + domain] is not None:
                d = full["_v_" + domain] - r["_v_" + domain]
                parts.append(f"{domain}: full minus {ab} = {d:+.1f} pt (paper: full is higher); "
                             f"agrees: {_agree_word(_direction(d, cfg.tie_margin), 1)}")
    df = pd.DataFrame(rows)
    t.df = df[[c for c in df.columns if not c.startswith("_v_")]]
    t.notes.append(f"Ours: average of every domain task's headline metric; 'full' = this run's {full_arm} arm, "
                   f"'w/o corpora' = its pairs_only arm, rule-based / 1-shot = its arms rule_based / one_shot "
                   f"(pretrain.arm_variants over synthesize.variants) unless report.ablation_runs names "
                   f"another run. Metrics: "
                   + ", ".join(f"{TASKS[x].label} {TASKS[x].metric}" for d in DOMAINS for x in _domain_tasks(d))
                   + ". " + scoring_note(inp) + " " + _conf_note(pn, "table4"))
    t.agreement = "; ".join(parts) or "cannot judge: no ablation was run on the full domain task set"
    return t


def table5(inp: Inputs, cfg: Params, pn) -> Table:
    """Synthesizer evaluation (our stage 01 synth_eval.csv) + the paper's pair-quality numbers."""
    import pandas as pd

    t = Table("table5_synthesizer", "Table 5: synthesizer evaluation (ours) and pair quality (paper Table 6)")
    path = inp.run_dir / "01_synth_tune" / "synth_eval.csv"
    if not path.exists():
        t.skipped = f"missing {path}"
        return t
    df = pd.read_csv(path)
    for c in df.columns:
        if pd.api.types.is_float_dtype(df[c]):
            df[c] = df[c].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    df.insert(0, "source", f"ours ({inp.label})")
    q = pn[pn.table == "table6"]
    paper = pd.DataFrame([{"source": f"paper ({r.confidence})", "setting": r.setting, "metric": r.task,
                           "value": _fmt(r.value), "ours": NOT_RUN} for _, r in q.iterrows()])
    t.df = df
    t.extra = paper
    t.notes.append("Paper Table 5 (synthesizer vs base model, response F1) numbers were not obtained "
                   "(docs/PAPER.md §7): no paper values to set beside ours. Paper Table 6 (LLM-judged quality "
                   "of synthesized pairs) follows; we did not run an LLM judge. " + _conf_note(pn, "table6"))
    t.agreement = "no paper numbers to compare (paper Table 5 values not obtained)"
    return t


DOC_LAYOUTS = ("classic", "pairs_first", "dialog", "numbered", "inline", "next_turn")


def _document_rows(m: dict, pn) -> list[dict]:
    """Pre-training document statistics (stage 02 metrics) beside the authors' release run on
    the same kind of chains (M=2 and M=3 columns; reference rows of paper_numbers.csv)."""
    docs = m.get("documents")
    if not isinstance(docs, (int, float)) or not docs:
        return [{"statistic": "documents", "ours": NOT_RUN, "paper": NOT_REPORTED, **_provenance(None)}]
    lay = m.get("document_layout_mix") or {}
    with_pairs = sum(v for k, v in lay.items() if k != "raw")
    modes = m.get("mode_mix") or {}
    n_modes = sum(modes.values())
    stats = [("documents", docs), ("texts_per_document", m.get("texts_per_document")),
             ("mean_document_chars", m.get("mean_document_chars")), ("multi_text_share", m.get("multi_text_share")),
             ("dropped_pairs_total", m.get("dropped_pairs_total"))]
    stats += [(f"layout_share_{k}", lay.get(k, 0) / with_pairs if with_pairs else None) for k in DOC_LAYOUTS]
    stats += [(f"mode_share_{k}", v / n_modes) for k, v in sorted(modes.items())] if n_modes else []
    out = []
    for k, v in stats:
        r2, r3 = (_paper(pn, "synthesis", s, k, "release") for s in ("M=2", "M=3"))
        out.append({"statistic": k, "ours": f"{v:.4g}" if isinstance(v, (int, float)) else NOT_RUN,
                    "paper": NOT_REPORTED, "release M=2": f"{r2[0]:.4g}" if r2 else NOT_REPORTED,
                    "release M=3": f"{r3[0]:.4g}" if r3 else NOT_REPORTED,
                    **_provenance(r2 or r3)})
    return out


def synthesis_table(inp: Inputs, cfg: Params, pn) -> Table:
    import pandas as pd

    t = Table("synthesis_stats", "Synthesis statistics (stage 02)")
    path = inp.run_dir / "02_synthesize" / "metrics.json"
    if not path.exists():
        t.skipped = f"missing {path}"
        return t
    m = json.loads(path.read_text())

    def row(k, ours):
        p = _paper(pn, "synthesis", "general", k, "synthesizer")
        return {"statistic": k, "ours": ours, "paper": _fmt(p[0] if p else None, NOT_REPORTED),
                **_provenance(p)}

    doc_rows = _document_rows(m, pn)
    shown = {r["statistic"] for r in doc_rows}
    rows = [row(k, f"{v:.4g}") for k, v in sorted(m.items())
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in shown]
    for k in ("pairs_per_text", "tokens_per_pair"):
        if k not in m or not isinstance(m[k], (int, float)):
            val = m.get(k)
            if isinstance(val, dict):  # e.g. {"mean": .., "median": ..}
                val = val.get("mean")
            rows.append(row(k, f"{val:.4g}" if isinstance(val, (int, float)) else NOT_RUN))
    rows += doc_rows
    t.df = pd.DataFrame(rows).fillna("–")  # the release columns exist for the document rows only
    agree = []
    for k in ("pairs_per_text", "tokens_per_pair"):
        r = t.df[t.df.statistic == k]
        if len(r) and r.ours.iloc[0] != NOT_RUN:
            agree.append(f"{k} {r.ours.iloc[0]} (paper ~{r.paper.iloc[0]})")
    t.agreement = ("magnitudes: " + ", ".join(agree)) if agree else "no comparable statistic"
    return t


TABLES = (table1, lambda i, c, p: table1(i, c, p, tuned=True), table2, table3, table4, table5, synthesis_table)


def build_tables(inp: Inputs, cfg: Params, out_dir: str | Path) -> list[Table]:
    """Build every table; write tables/<name>.md|csv|tex for the built ones."""
    pn = paper_numbers()
    out = Path(out_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    tables = []
    for fn in TABLES:
        t = fn(inp, cfg, pn)
        if not t.skipped:
            write_table(t, out)
        tables.append(t)
    return tables


# ====================================================================== writers

def _md(df) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in row) + " |")
    return "\n".join(lines)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _tex_escape(s) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def _tex(df, caption) -> str:
    cols = list(df.columns)
    body = [" & ".join(_tex_escape(c) for c in cols) + r" \\ \midrule"]
    for row in df.itertuples(index=False):
        body.append(" & ".join(_tex_escape(v) for v in row) + r" \\")
    return ("\\begin{table}[t]\n\\centering\\small\n\\caption{" + _tex_escape(caption) + "}\n"
            "\\begin{tabular}{" + "l" * len(cols) + "}\n\\toprule\n" + "\n".join(body)
            + "\n\\bottomrule\n\\end{tabular}\n\\end{table}\n")


def write_table(t: Table, out: Path) -> None:
    extra = t.extra
    md = [f"## {t.title}", "", _md(t.df)]
    if extra is not None and len(extra):
        md += ["", _md(extra)]
    md += [""] + [f"_{n}_" for n in t.notes]
    io.write_text(out / f"{t.name}.md", "\n".join(md) + "\n")
    with io.atomic_open(out / f"{t.name}.csv") as f:
        t.df.to_csv(f, index=False)
    tex = _tex(t.df, t.title)
    if extra is not None and len(extra):
        tex += _tex(extra, t.title + " (paper)")
        with io.atomic_open(out / f"{t.name}_paper.csv") as f:
            extra.to_csv(f, index=False)
    io.write_text(out / f"{t.name}.tex", tex)


# ====================================================================== figures

@dataclass
class Figure:
    name: str
    title: str
    files: list[str] = field(default_factory=list)
    skipped: str = ""


def _save(fig, out: Path, name: str, cfg: Params) -> list[str]:
    import matplotlib.pyplot as plt

    files = []
    fig.tight_layout()  # also makes room for a suptitle
    for ext in cfg.figure_formats:
        p = out / f"{name}.{ext}"
        fig.savefig(p, dpi=120, bbox_inches="tight")
        files.append(str(p))
    plt.close(fig)
    return files


def fig_instruct_curve(inp: Inputs, cfg: Params, out: Path) -> Figure:
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


def fig_loss(inp: Inputs, cfg: Params, out: Path, stage: str = "03_pretrain") -> Figure:
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


def fig_synthesis(inp: Inputs, cfg: Params, out: Path) -> list[Figure]:
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


def fig_table1(inp: Inputs, cfg: Params, out: Path) -> Figure:
    """Bar chart: ours (each arm) beside the paper per general task."""
    import matplotlib.pyplot as plt
    import numpy as np

    f = Figure("table1_bars", "Table 1 as bars: ours vs paper")
    if inp.evals is None:
        f.skipped = _eval_missing(inp)
        return f
    pn = paper_numbers()
    run = inp.label
    tasks = [x for x in GENERAL_TASKS if any(ours(inp.evals, run, a, False, x) is not None
                                             for a in ("vanilla", "mix", "instruct"))]
    if not tasks:
        f.skipped = "no general task was evaluated on this run's arms"
        return f
    size = _size_of(run, cfg.paper_size)
    series = [(f"{ARM_LABELS[a]} (ours)", [ours(inp.evals, run, a, False, x) for x in tasks])
              for a in ("vanilla", "mix", "instruct")]
    series += [(f"{ARM_LABELS[a]} (paper {size})",
                [(_paper(pn, "table1", size, x, a) or (None,))[0] for x in tasks]) for a in ("vanilla", "instruct")]
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


def build_figures(inp: Inputs, cfg: Params, out_dir: str | Path) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    figs = [fig_table1(inp, cfg, out), fig_instruct_curve(inp, cfg, out), fig_loss(inp, cfg, out),
            fig_loss(inp, cfg, out, "04_instruct_tune")]
    figs += fig_synthesis(inp, cfg, out)
    return figs


# ====================================================================== summary

def write_summary(inp: Inputs, cfg: Params, tables: list[Table], figures: list[Figure],
                  out_dir: str | Path) -> dict:
    """summary.md (per table: built/skipped, direction vs paper) and the stage metrics."""
    out = Path(out_dir)
    lines = [f"# Report: {inp.label}", "",
             f"Runs: {', '.join(f'{k} ({v})' for k, v in inp.runs.items())}", "",
             "Paper numbers are from secondary summaries of arXiv 2406.14491 and are tagged "
             "`paper-reported (unverified) [sum]` until checked against the PDF."]
    if any("tiny" in k for k in inp.runs):
        lines[-1] += (" Runs of the ci-tiny profile use tiny models trained for seconds on fixture data: "
                      "they exercise the pipeline and say nothing about the paper's claims.")
    lines += ["", "## Tables", ""]
    for t in tables:
        if t.skipped:
            lines.append(f"- **{t.title}**: skipped — {t.skipped}")
        else:
            lines.append(f"- **{t.title}** (`tables/{t.name}.md`): {t.agreement}")
    lines += ["", "## Figures", ""]
    for f in figures:
        lines.append(f"- **{f.title}**: " + (f"skipped — {f.skipped}" if f.skipped
                                             else ", ".join(f"`figures/{Path(p).name}`" for p in f.files)))
    missing = sorted(set(inp.missing + [t.skipped[len('missing '):] for t in tables
                                        if t.skipped.startswith("missing ")]
                         + [f.skipped[len('missing '):] for f in figures if f.skipped.startswith("missing ")]))
    if missing:
        lines += ["", "## Missing inputs", ""] + [f"- {m}" for m in missing]
    io.write_text(out / "summary.md", "\n".join(lines) + "\n")
    return {
        "runs": {k: str(v) for k, v in inp.runs.items()},
        "tables_built": [t.name for t in tables if not t.skipped],
        "tables_skipped": {t.name: t.skipped for t in tables if t.skipped},
        "figures_built": [f.name for f in figures if not f.skipped],
        "figures_skipped": {f.name: f.skipped for f in figures if f.skipped},
        "agreement": {t.name: t.agreement for t in tables if not t.skipped},
        "missing_inputs": missing,
    }


def make_report(run_dir: str | Path, out_dir: str | Path, cfg: Params) -> dict:
    """All of stage 06 in one call (the notebook calls the steps one by one)."""
    inp = collect_inputs(run_dir, cfg)
    tables = build_tables(inp, cfg, out_dir)
    figures = build_figures(inp, cfg, out_dir)
    return write_summary(inp, cfg, tables, figures, out_dir)

