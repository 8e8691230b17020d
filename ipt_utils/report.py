"""Stage 06: tables and figures of the paper from result files only.

Reads this run's stage directories (and those of `compare_runs`): 05_evaluate/results/*.json
(or summary.csv), 03_pretrain/metrics.json + loss_<arm>.csv, 04_instruct_tune/curve.csv,
02_synthesize/metrics.json + synthesis_stats.csv, 01_synth_tune/synth_eval.csv. Never
loads a model. Writes to the stage dir: tables/<name>.md|csv|tex, figures/<name>.png|pdf,
summary.md. Each table shows the paper's numbers (ipt_utils/reference/paper_numbers.csv)
beside ours with their source and confidence tag; cells we did not run read "not run",
paper cells the paper does not give read "not reported". A table whose inputs are missing
is listed as skipped with the missing file named; only when no input exists at all does
the stage fail. Where stage 04 left per-question outcomes, the effect with intervals
(ipt_utils/effect.py) is written beside them.

The steps, called one by one by notebooks/06_report.py and in one call by `make_report`:
`collect_inputs` (ipt_utils/report_inputs.py), `build_tables` (ipt_utils/report_tables.py),
`build_figures` (ipt_utils/report_figures.py), `effect.write_effect_if_measured`,
`write_summary`; `build_metrics` makes metrics.json from the declared `ReportMetrics`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypedDict

from . import contracts, effect, io
from .report_figures import Figure, build_figures
from .report_inputs import PAPER_SIZES, Inputs, collect_inputs
from .report_tables import Table, build_tables
from .schema import spec


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


@contracts.metrics_schema("06_report")
class ReportMetrics(TypedDict):
    """What stage 06 built and what it could not (summary.md says the same in prose)."""
    runs: Annotated[dict[str, str], "run label -> run dir of every run in the tables (this run first)"]
    tables_built: Annotated[list[str], "tables written under tables/ (as .md, .csv and .tex)"]
    tables_skipped: Annotated[dict[str, str], "table -> why it was not built (the missing input, named)"]
    figures_built: Annotated[list[str], "figures written under figures/"]
    figures_skipped: Annotated[dict[str, str], "figure -> why it was not drawn (the missing input, named)"]
    agreement: Annotated[dict[str, str], "built table -> one sentence: does our direction agree with the paper's"]
    missing_inputs: Annotated[list[str], "result files looked for and not found (sorted)"]


# ====================================================================== summary and metrics

def missing_inputs(inp: Inputs, tables: list[Table], figures: list[Figure]) -> list[str]:
    """Every input file looked for and not found: by the input scan, a table or a figure."""
    return sorted(set(inp.missing + [t.skipped[len('missing '):] for t in tables if t.skipped.startswith("missing ")]
                      + [f.skipped[len('missing '):] for f in figures if f.skipped.startswith("missing ")]))


def write_summary(inp: Inputs, tables: list[Table], figures: list[Figure], out_dir: str | Path) -> Path:
    """summary.md: per table built/skipped and its direction vs the paper, per figure its files."""
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
    missing = missing_inputs(inp, tables, figures)
    if missing:
        lines += ["", "## Missing inputs", ""] + [f"- {m}" for m in missing]
    return io.write_text(Path(out_dir) / "summary.md", "\n".join(lines) + "\n")


def build_metrics(inp: Inputs, tables: list[Table], figures: list[Figure]) -> ReportMetrics:
    """Stage 06's metrics.json (the one place it is built)."""
    return ReportMetrics(
        runs={k: str(v) for k, v in inp.runs.items()},
        tables_built=[t.name for t in tables if not t.skipped],
        tables_skipped={t.name: t.skipped for t in tables if t.skipped},
        figures_built=[f.name for f in figures if not f.skipped],
        figures_skipped={f.name: f.skipped for f in figures if f.skipped},
        agreement={t.name: t.agreement for t in tables if not t.skipped},
        missing_inputs=missing_inputs(inp, tables, figures),
    )


def make_report(run_dir: str | Path, out_dir: str | Path, cfg: Params) -> ReportMetrics:
    """All of stage 06 in one call, the steps of notebooks/06_report.py in its order; -> its metrics."""
    inp = collect_inputs(run_dir, cfg)
    tables = build_tables(inp, cfg, out_dir)
    figures = build_figures(inp, cfg, out_dir)
    effect.write_effect_if_measured(run_dir, out_dir)
    write_summary(inp, tables, figures, out_dir)
    return build_metrics(inp, tables, figures)
