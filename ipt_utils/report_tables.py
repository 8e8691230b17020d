"""Stage 06's tables: the paper's Tables 1-5 and the synthesis statistics, ours beside the
paper's numbers, written as tables/<name>.md|csv|tex.

Each table builder takes (inputs, cfg, paper numbers) and returns a `Table`: its rows as
display strings, notes, one sentence on whether our direction agrees with the paper, or the
reason it was skipped (the missing file). Cells we did not run read "not run", paper cells the
paper does not give "not reported". `cfg` arguments are the stage's report.Params.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import io
from .evaluate import GENERAL_TASKS, TASKS
from .report_inputs import (ABLATIONS, ARM_LABELS, DOMAINS, NOT_REPORTED, NOT_RUN, PAPER_SIZES, Inputs, agree_word,
                            conf_note, direction, eval_missing, fmt, mean_of, ours, paper_cell, paper_numbers,
                            paper_size_of, provenance, read_eval_results, scoring_note)
from .schema import resolve_path


@dataclass
class Table:
    name: str
    title: str
    df: object = None  # DataFrame of display strings
    notes: list[str] = field(default_factory=list)
    agreement: str = ""  # one sentence for summary.md
    skipped: str = ""  # reason, when not built
    extra: object = None  # optional second block (DataFrame) shown under the first


# ====================================================================== tables

def table1(inp: Inputs, cfg, pn, tuned: bool = False) -> Table:
    """Vanilla vs Mix vs Instruct PT per general task + average, beside the paper's Table 1."""
    import pandas as pd

    name = "table1_general_tuned" if tuned else "table1_general"
    title = ("Table 1 (after instruction tuning, ours only)" if tuned else
             "Table 1: general pre-training from scratch (Vanilla / Mix / Instruct PT)")
    t = Table(name, title)
    if inp.evals is None:
        t.skipped = eval_missing(inp)
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
                    v = mean_of([ours(inp.evals, run, arm, tuned, x) for x in common])
                else:
                    v = ours(inp.evals, run, arm, tuned, task)
                row[f"{ARM_LABELS[arm]} (ours: {run})"] = fmt(v)
        src = conf = ""
        for size in PAPER_SIZES:
            for arm in ("vanilla", "instruct"):
                if task == "average":
                    listed = [x for x in tasks if paper_cell(pn, "table1", size, x, arm)]
                    v = mean_of([paper_cell(pn, "table1", size, x, arm)[0] for x in listed])
                else:
                    p = paper_cell(pn, "table1", size, task, arm)
                    v = p[0] if p else None
                    if p:
                        src, conf = p[1], p[2]
                row[f"{ARM_LABELS[arm]} (paper {size})"] = fmt(v, NOT_REPORTED)
        if task == "average":
            src = "mean of the rows above (paper: of the listed tasks only)"
            conf = "derived"
        # direction: Instruct - Vanilla, ours vs the paper size this run stands for
        for run in inp.runs:
            size = paper_size_of(run, cfg.paper_size)
            if task == "average":
                common = [x for x in tasks if ours(inp.evals, run, "vanilla", tuned, x) is not None
                          and ours(inp.evals, run, "instruct", tuned, x) is not None
                          and paper_cell(pn, "table1", size, x, "instruct")]
                o = (mean_of([ours(inp.evals, run, "instruct", tuned, x) for x in common]),
                     mean_of([ours(inp.evals, run, "vanilla", tuned, x) for x in common]))
                pi = mean_of([paper_cell(pn, "table1", size, x, "instruct")[0] for x in common])
                pv = mean_of([paper_cell(pn, "table1", size, x, "vanilla")[0] for x in common])
            else:
                o = (ours(inp.evals, run, "instruct", tuned, task), ours(inp.evals, run, "vanilla", tuned, task))
                p_i = paper_cell(pn, "table1", size, task, "instruct")
                p_v = paper_cell(pn, "table1", size, task, "vanilla")
                pi, pv = (p_i[0] if p_i else None), (p_v[0] if p_v else None)
            od = direction(o[0] - o[1], cfg.tie_margin) if None not in o else None
            pd_ = direction(pi - pv, 0.0) if None not in (pi, pv) else None
            word = agree_word(od, pd_) if not tuned else NOT_REPORTED
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
                   + scoring_note(inp) + " Paper numbers: " + conf_note(pn, "table1"))
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


def table2(inp: Inputs, cfg, pn) -> Table:
    """Data efficiency: Instruct PT average vs larger external models trained on more tokens."""
    import pandas as pd

    t = Table("table2_data_efficiency", "Table 2: data efficiency (average over general tasks)")
    if inp.evals is None:
        t.skipped = eval_missing(inp)
        return t
    ev = inp.evals[~inp.evals.tuned]
    rows, checks = [], []
    for run, rd in inp.runs.items():
        tasks = [x for x in GENERAL_TASKS if ours(ev, run, "instruct", False, x) is not None]
        inst = mean_of([ours(ev, run, "instruct", False, x) for x in tasks])
        size = paper_size_of(run, cfg.paper_size)
        p = paper_cell(pn, "table2", size, "average", "instruct")
        ptok = paper_cell(pn, "table2", size, "train_tokens_B", "instruct")
        rows.append({"model": f"Instruct PT (ours: {run})", "training tokens": _tok_fmt(_train_tokens(rd, "instruct")),
                     "average (ours)": fmt(inst), "tasks averaged": ", ".join(tasks) or NOT_RUN,
                     "paper model": f"Instruct PT {size}", "paper tokens": f"{ptok[0]:g}B" if ptok else NOT_REPORTED,
                     "average (paper)": fmt(p[0] if p else None, NOT_REPORTED),
                     **provenance(p)})
        for mid, pname in cfg.baselines.items():
            if pname not in set(pn[pn.table == "table2"].arm_or_model):
                continue
            pbase = next((s for s in PAPER_SIZES if paper_cell(pn, "table2", s, "average", pname)), None)
            pv = paper_cell(pn, "table2", pbase, "average", pname) if pbase else None
            ptk = paper_cell(pn, "table2", pbase, "train_tokens_B", pname) if pbase else None
            bvals = [ours(ev, run, task=x, model_id=mid) for x in tasks]
            base = mean_of(bvals) if tasks and all(v is not None for v in bvals) else None
            rows.append({"model": f"{pname} ({mid}, evaluated in {run})",
                         "training tokens": f"{ptk[0]:g}B (paper)" if ptk else NOT_REPORTED,
                         "average (ours)": fmt(base), "tasks averaged": ", ".join(tasks) or NOT_RUN,
                         "paper model": pname, "paper tokens": f"{ptk[0]:g}B" if ptk else NOT_REPORTED,
                         "average (paper)": fmt(pv[0] if pv else None, NOT_REPORTED),
                         **provenance(pv)})
            if inst is not None and base is not None and p and pv:
                checks.append((run, pname, inst - base, p[0] - pv[0]))
    # paper rows for sizes/baselines we did not run
    shown = {r["paper model"] for r in rows}
    for _, r in pn[(pn.table == "table2") & (pn.task == "average")].iterrows():
        pm = f"Instruct PT {r.setting}" if r.arm_or_model == "instruct" else r.arm_or_model
        if pm in shown:
            continue
        tk = paper_cell(pn, "table2", r.setting, "train_tokens_B", r.arm_or_model)
        rows.append({"model": pm, "training tokens": NOT_RUN, "average (ours)": NOT_RUN,
                     "tasks averaged": NOT_RUN, "paper model": pm,
                     "paper tokens": f"{tk[0]:g}B" if tk else NOT_REPORTED, "average (paper)": fmt(r.value),
                     "paper source": r.source, "paper confidence": r.confidence})
    t.df = pd.DataFrame(rows)
    t.notes.append("Paper: Instruct PT with 100B tokens comes close to models trained on 3x more tokens. "
                   "Our averages cover only the tasks listed. " + conf_note(pn, "table2"))
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


def table3(inp: Inputs, cfg, pn) -> Table:
    """Domain continual pre-training: base, Vanilla PT, Instruct PT, large baseline per domain task."""
    import pandas as pd

    t = Table("table3_domain", "Table 3: domain-adaptive continual pre-training")
    if inp.evals is None:
        t.skipped = eval_missing(inp)
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
                        v = mean_of(vals) if all(x is not None for x in vals) else None
                    else:
                        v = val(run, role, task)
                    row[f"{role_label[role]} (ours: {run})"] = fmt(v)
            p = None
            for role in roles:
                p_ = paper_cell(pn, "table3", domain, "average", roles[role]) if task == "average" else None
                p = p_ or p
                row[f"{role_label[role]} (paper)"] = fmt(p_[0] if p_ else None, NOT_REPORTED)
            row.update(provenance(p))
            rows.append(row)
        for run in inp.runs:
            done = [x for x in tasks if val(run, "instruct", x) is not None and val(run, "vanilla", x) is not None]
            if not done:
                continue
            o = mean_of([val(run, "instruct", x) for x in done]) - mean_of([val(run, "vanilla", x) for x in done])
            pp = (paper_cell(pn, "table3", domain, "average", "instruct")[0]
                  - paper_cell(pn, "table3", domain, "average", "vanilla")[0])
            word = agree_word(direction(o, cfg.tie_margin), direction(pp, 0))
            parts.append(f"{run}/{domain}: Instruct minus Vanilla PT on {len(done)}/{len(tasks)} tasks "
                         f"= {o:+.1f} pt (paper average {pp:+.1f}); direction agrees: {word}")
    t.df = pd.DataFrame(rows)
    t.notes.append("Instruct PT (ours) = the run's continual arm when it has one, else its instruct arm. "
                   "Paper per-task domain numbers are not in our notes (only averages). "
                   "Average (ours) only when every task of the domain ran. " + scoring_note(inp) + " "
                   + conf_note(pn, "table3"))
    t.agreement = "; ".join(parts) or "cannot judge: no domain task was run by both Vanilla and Instruct PT"
    return t


def table4(inp: Inputs, cfg, pn) -> Table:
    """Ablations (domain averages): full, w/o corpora, rule-based synthesis, 1-shot synthesis."""
    import pandas as pd

    t = Table("table4_ablations", "Table 4: ablations (domain task averages)")
    if inp.evals is None and not cfg.ablation_runs:
        t.skipped = eval_missing(inp)
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
            v = mean_of(vals) if all(x is not None for x in vals) else None
            row[f"{domain} (ours)"] = fmt(v)
            p = paper_cell(pn, "table4", domain, "average", ab)
            row[f"{domain} (paper)"] = fmt(p[0] if p else None, NOT_REPORTED)
            row["_v_" + domain] = v
        p = paper_cell(pn, "table4", "biomedicine", "average", ab)
        row.update(provenance(p))
        rows.append(row)
    full = rows[0]
    for r, ab in zip(rows[1:], list(ABLATIONS)[1:]):
        for domain in DOMAINS:
            if full["_v_" + domain] is not None and r["_v_" + domain] is not None:
                d = full["_v_" + domain] - r["_v_" + domain]
                parts.append(f"{domain}: full minus {ab} = {d:+.1f} pt (paper: full is higher); "
                             f"agrees: {agree_word(direction(d, cfg.tie_margin), 1)}")
    df = pd.DataFrame(rows)
    t.df = df[[c for c in df.columns if not c.startswith("_v_")]]
    t.notes.append(f"Ours: average of every domain task's headline metric; 'full' = this run's {full_arm} arm, "
                   f"'w/o corpora' = its pairs_only arm, rule-based / 1-shot = its arms rule_based / one_shot "
                   f"(pretrain.arm_variants over synthesize.variants) unless report.ablation_runs names "
                   f"another run. Metrics: "
                   + ", ".join(f"{TASKS[x].label} {TASKS[x].metric}" for d in DOMAINS for x in _domain_tasks(d))
                   + ". " + scoring_note(inp) + " " + conf_note(pn, "table4"))
    t.agreement = "; ".join(parts) or "cannot judge: no ablation was run on the full domain task set"
    return t


def table5(inp: Inputs, cfg, pn) -> Table:
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
                           "value": fmt(r.value), "ours": NOT_RUN} for _, r in q.iterrows()])
    t.df = df
    t.extra = paper
    t.notes.append("Paper Table 5 (synthesizer vs base model, response F1) numbers were not obtained "
                   "(docs/PAPER.md §7): no paper values to set beside ours. Paper Table 6 (LLM-judged quality "
                   "of synthesized pairs) follows; we did not run an LLM judge. " + conf_note(pn, "table6"))
    t.agreement = "no paper numbers to compare (paper Table 5 values not obtained)"
    return t


DOC_LAYOUTS = ("classic", "pairs_first", "dialog", "numbered", "inline", "next_turn")


def _document_rows(m: dict, pn) -> list[dict]:
    """Pre-training document statistics (stage 02 metrics) beside the authors' release run on
    the same kind of chains (M=2 and M=3 columns; reference rows of paper_numbers.csv)."""
    docs = m.get("documents")
    if not isinstance(docs, (int, float)) or not docs:
        return [{"statistic": "documents", "ours": NOT_RUN, "paper": NOT_REPORTED, **provenance(None)}]
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
        r2, r3 = (paper_cell(pn, "synthesis", s, k, "release") for s in ("M=2", "M=3"))
        out.append({"statistic": k, "ours": f"{v:.4g}" if isinstance(v, (int, float)) else NOT_RUN,
                    "paper": NOT_REPORTED, "release M=2": f"{r2[0]:.4g}" if r2 else NOT_REPORTED,
                    "release M=3": f"{r3[0]:.4g}" if r3 else NOT_REPORTED,
                    **provenance(r2 or r3)})
    return out


def synthesis_table(inp: Inputs, cfg, pn) -> Table:
    import pandas as pd

    t = Table("synthesis_stats", "Synthesis statistics (stage 02)")
    path = inp.run_dir / "02_synthesize" / "metrics.json"
    if not path.exists():
        t.skipped = f"missing {path}"
        return t
    m = json.loads(path.read_text())

    def row(k, ours):
        p = paper_cell(pn, "synthesis", "general", k, "synthesizer")
        return {"statistic": k, "ours": ours, "paper": fmt(p[0] if p else None, NOT_REPORTED),
                **provenance(p)}

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


def build_tables(inp: Inputs, cfg, out_dir: str | Path) -> list[Table]:
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
