"""Stage 06 on hand-made result files: every table and figure, paper numbers with their
confidence tag, "not run" cells, and missing-input messages that name the files."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ipt_utils import report, report_inputs, report_tables, schema
from ipt_utils.evaluate import TASKS

CONF = "paper-reported (unverified) [sum]"


def cfg(**kw) -> report.Params:
    base = dict(compare_runs=[], paper_size="500M", baselines={"EleutherAI--pythia-1b": "Pythia-1B"},
                ablation_runs={}, tie_margin=0.0, figure_formats=["png", "pdf"])
    base.update(kw)
    return schema.validate(report.Params, base)


def fake_result(run_dir: Path, model_id, arm, tuned, scores: dict, profile="ci-tiny"):
    """A results/<model_id>.json shaped like evaluate.evaluate_model's output."""
    names = {t: f"ipt_{t}" for t in scores}
    res = {"results": {}, "n-samples": {}, "ipt": {"model_id": model_id, "arm": arm, "tuned": tuned,
                                                   "profile": profile, "tasks": names, "run": run_dir.name,
                                                   "harness_version": "0.4.13"}}
    for t, v in scores.items():
        m = TASKS[t].metric
        res["results"][names[t]] = {"alias": names[t], f"{m},none": v, f"{m}_stderr,none": "N/A",
                                    "acc,none": v}
        res["n-samples"][names[t]] = {"original": 20, "effective": 20}
    p = run_dir / "05_evaluate" / "results" / f"{model_id}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(res))


@pytest.fixture
def run_dir(tmp_path) -> Path:
    rd = tmp_path / "run"
    gen = {"arc_easy": 0.30, "boolq": 0.55, "piqa": 0.60, "mmlu": 0.25, "social_iqa": 0.40}
    for arm, bump in (("vanilla", 0.0), ("mix", 0.01), ("instruct", 0.02), ("pairs_only", -0.01)):
        fake_result(rd, f"pt-{arm}", arm, False, {t: v + bump for t, v in gen.items()}
                    | {"pubmedqa": 0.5 + bump, "fpb": 0.4 + bump})
    fake_result(rd, "it-instruct", "instruct", True, {t: v + 0.05 for t, v in gen.items()})
    fake_result(rd, "EleutherAI--pythia-1b", "external", False, {t: v + 0.1 for t, v in gen.items()})
    (rd / "03_pretrain").mkdir(parents=True)
    (rd / "03_pretrain" / "metrics.json").write_text(json.dumps({"arms": {"instruct": {"tokens": 65536}}}))
    for arm in ("vanilla", "instruct"):
        pd.DataFrame({"step": [1, 2, 3], "loss": [7.0, 6.5, 6.1], "lr": [1e-3] * 3,
                      "tokens": [512, 1024, 1536]}).to_csv(rd / "03_pretrain" / f"loss_{arm}.csv", index=False)
    (rd / "04_instruct_tune").mkdir()
    pd.DataFrame([{"arm": a, "step": s, "task": "mmlu", "accuracy": 0.25 + 0.01 * s * (a == "instruct")}
                  for a in ("vanilla", "instruct") for s in (0, 5, 10)]).to_csv(
        rd / "04_instruct_tune" / "curve.csv", index=False)
    (rd / "02_synthesize").mkdir()
    (rd / "02_synthesize" / "metrics.json").write_text(json.dumps(
        {"texts_in": 10, "texts_skipped": 1, "pairs_per_text": 3.5, "tokens_per_pair": 40.2}))
    # columns as ipt_utils.synth_stats.stats_frame writes them (subset)
    pd.DataFrame({"id": list("abcd"), "chain_id": list("aabb"), "items": [3, 5, 2, 5], "pairs": [3, 4, 2, 5],
                  "tokens_per_pair": [30.0, 41.0, 52.5, float("nan")],
                  "mode": ["qa", "options", "cot", "qa"], "layout": ["classic", "dialog", "classic", "classic"]}
                 ).to_csv(rd / "02_synthesize" / "synthesis_stats.csv", index=False)
    (rd / "01_synth_tune").mkdir()
    pd.DataFrame({"model": ["base", "synthesizer"], "split": ["seen", "seen"], "response_f1": [0.1, 0.3]}
                 ).to_csv(rd / "01_synth_tune" / "synth_eval.csv", index=False)
    return rd


def test_every_table_and_figure(run_dir, tmp_path):
    out = tmp_path / "out"
    m = report.make_report(run_dir, out, cfg())
    for name in ("table1_general", "table1_general_tuned", "table2_data_efficiency", "table3_domain",
                 "table4_ablations", "table5_synthesizer", "synthesis_stats"):
        for ext in ("md", "csv", "tex"):
            assert (out / "tables" / f"{name}.{ext}").exists(), (name, ext)
    assert not m["tables_skipped"], m["tables_skipped"]
    for name in ("table1_bars", "fig4_instruct_tune_curve", "loss_pretrain", "synthesis_distributions",
                 "synthesis_mode_layout"):
        assert (out / "figures" / f"{name}.png").exists() and (out / "figures" / f"{name}.pdf").exists(), name
    assert "loss_instruct_tune" in m["figures_skipped"]  # no 04 loss files: skipped, named
    assert "04_instruct_tune/loss_<arm>.csv" in m["figures_skipped"]["loss_instruct_tune"]

    t1 = pd.read_csv(out / "tables" / "table1_general.csv", dtype=str)
    boolq = t1[t1.task == "BoolQ"].iloc[0]
    assert boolq["Instruct PT (paper 500M)"] == "62.0" and boolq["Vanilla PT (paper 1.3B)"] == "60.3"
    assert boolq["Instruct PT (ours: ci-tiny)"] == "57.0"
    assert boolq["paper confidence"] == CONF
    hs = t1[t1.task == "HellaSwag"].iloc[0]  # neither we nor the paper have it
    assert hs["Vanilla PT (ours: ci-tiny)"] == "not run" and hs["Instruct PT (paper 500M)"] == "not reported"
    arc = t1[t1.task == "ARC-e"].iloc[0]
    assert arc["Instruct PT (paper 500M)"] == "not reported" and arc["Instruct PT (paper 1.3B)"] == "60.5"
    assert (t1.isna().sum().sum()) == 0  # never blank
    # each row names its metric; the notes name the harness version
    assert dict(zip(t1.task, t1.metric))["ARC-e"] == "acc_norm" and dict(zip(t1.task, t1.metric))["Average"] == "mean"
    md1 = (out / "tables" / "table1_general.md").read_text()
    assert "lm-evaluation-harness (ci-tiny: 0.4.13)" in md1
    t3 = pd.read_csv(out / "tables" / "table3_domain.csv", dtype=str)
    assert dict(zip(t3.task, t3.metric))["Headline"] == "subtask_weighted_f1"
    assert "lm-evaluation-harness (ci-tiny: 0.4.13)" in (out / "tables" / "table4_ablations.md").read_text()
    assert "FPB weighted_f1" in (out / "tables" / "table4_ablations.md").read_text()
    # our instruct beats vanilla everywhere; paper 500M: PIQA and MMLU go the other way
    agree = dict(zip(t1.task, t1["Instruct>Vanilla agrees with paper 500M? (ci-tiny)"]))
    assert agree["BoolQ"] == "yes" and agree["PIQA"] == "no" and agree["ARC-e"] == "cannot judge"

    t2 = pd.read_csv(out / "tables" / "table2_data_efficiency.csv", dtype=str)
    assert "65.5K" in set(t2["training tokens"]) and "BLOOM-3B" in set(t2["paper model"])
    bloom = t2[t2["paper model"] == "BLOOM-3B"].iloc[0]
    assert bloom["average (ours)"] == "not run" and bloom["average (paper)"] == "50.1"

    t3 = pd.read_csv(out / "tables" / "table3_domain.csv", dtype=str)
    avg = t3[(t3.domain == "finance") & (t3.task == "Average")].iloc[0]
    assert avg["Instruct PT (paper)"] == "74.7" and avg["Instruct PT (ours: ci-tiny)"] == "not run"
    pub = t3[t3.task == "PubMedQA"].iloc[0]
    assert pub["Instruct PT (ours: ci-tiny)"] == "52.0" and pub["base (Llama3-8B) (ours: ci-tiny)"] == "not run"

    t4 = pd.read_csv(out / "tables" / "table4_ablations.csv", dtype=str)
    assert t4.iloc[0]["biomedicine (paper)"] == "61.3" and (t4["finance (ours)"] == "not run").all()

    md = (out / "tables" / "table1_general.md").read_text()
    assert CONF in md and "not run" in md
    assert "\\toprule" in (out / "tables" / "table3_domain.tex").read_text()
    summary = (out / "summary.md").read_text()
    assert "agrees with the paper on" in summary and "Table 4" in summary
    assert "Pythia-1B" in summary  # Table 2 agreement sentence


def test_missing_inputs_are_named(tmp_path):
    rd = tmp_path / "run"
    (rd / "03_pretrain").mkdir(parents=True)
    pd.DataFrame({"step": [1], "loss": [5.0], "lr": [1e-3], "tokens": [10]}).to_csv(
        rd / "03_pretrain" / "loss_vanilla.csv", index=False)
    m = report.make_report(rd, tmp_path / "out", cfg(compare_runs=[str(tmp_path / "other")]))
    assert m["figures_built"] == ["loss_pretrain"]
    reason = m["tables_skipped"]["table1_general"]
    assert "05_evaluate/results" in reason and str(tmp_path / "other") in reason
    assert str(rd / "01_synth_tune" / "synth_eval.csv") in m["tables_skipped"]["table5_synthesizer"]
    assert str(rd / "04_instruct_tune" / "curve.csv") in m["figures_skipped"]["fig4_instruct_tune_curve"]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "skipped" in summary and "Missing inputs" in summary and "synth_eval.csv" in summary


@pytest.mark.slow  # a papermill run of notebook 06 (kernel start: ~15-40 s)
def test_notebook_and_make_report_write_the_same_metrics_and_tables(run_dir, tmp_path):
    """One orchestration: notebook 06 under papermill (as the runner runs it) and report.make_report
    over the same finished stage dirs build the same metrics (every key ReportMetrics declares,
    nothing else) and the same tables."""
    import dataclasses

    from ipt_utils import runner
    from ipt_utils.profiles import load_profile
    from ipt_utils.registry import STAGE_BY_NAME

    st = STAGE_BY_NAME["06_report"]
    params = {**load_profile("ci-tiny").stage_parameters(st), **dataclasses.asdict(cfg()),
              "run_dir": str(run_dir), "interactive": False}
    runner._execute(st, params, tmp_path / "06_report.ipynb")
    m_nb = json.loads((run_dir / "06_report" / "metrics.json").read_text())
    m_call = report.make_report(run_dir, tmp_path / "out", cfg())
    assert set(m_nb) == set(m_call) == set(report.ReportMetrics.__annotations__)
    assert m_nb == json.loads(json.dumps(m_call))
    by_call, by_nb = tmp_path / "out" / "tables", run_dir / "06_report" / "tables"
    tables = sorted(p.name for p in by_call.iterdir())
    assert tables == sorted(p.name for p in by_nb.iterdir()) and tables
    for name in tables:
        assert (by_call / name).read_bytes() == (by_nb / name).read_bytes(), name


def test_nothing_at_all_raises_naming_files(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        report.make_report(tmp_path / "empty", tmp_path / "out", cfg())
    assert "05_evaluate/results" in str(e.value) and "curve.csv" in str(e.value)


def test_compare_runs_join_tables(run_dir, tmp_path):
    other = tmp_path / "other"
    fake_result(other, "pt-vanilla", "vanilla", False, {"boolq": 0.6}, profile="paper-1.3b")
    fake_result(other, "pt-instruct", "instruct", False, {"boolq": 0.7}, profile="paper-1.3b")
    out = tmp_path / "out"
    report.make_report(run_dir, out, cfg(compare_runs=[str(other)]))
    t1 = pd.read_csv(out / "tables" / "table1_general.csv", dtype=str)
    row = t1[t1.task == "BoolQ"].iloc[0]
    assert row["Instruct PT (ours: paper-1.3b)"] == "70.0"
    assert row["Instruct>Vanilla agrees with paper 1.3B? (paper-1.3b)"] == "yes"


def test_profile_sections_validate():
    root = schema.REPO_ROOT / "params"
    for p in sorted(root.glob("*.yaml")):
        section = yaml.safe_load(p.read_text())["report"]
        schema.validate(report.Params, section, source=str(p), prefix="report")


def test_paper_numbers_file():
    pn = report_inputs.paper_numbers()
    assert list(pn.columns) == ["table", "setting", "task", "arm_or_model", "value", "source", "confidence"]
    paper = pn.arm_or_model != "release"  # release rows: the authors' released code, measured by us
    assert pn[paper].confidence.str.startswith(CONF).all()
    assert pn[~paper].confidence.str.startswith("measured by us on the release code").all() and (~paper).sum() >= 10
    assert len(pn[pn.table == "table1"]) == 24
    assert set(pn[pn.table == "table1"].task) <= set(TASKS)


def test_table4_reads_this_runs_ablation_arms(tmp_path):
    """ci-ablation layout: arms instruct / pairs_only / rule_based / one_shot on every domain task
    (a domain profile without an instruct arm uses continual as 'full')."""
    domain = [n for n, t in TASKS.items() if t.domain != "general"]
    for full in ("instruct", "continual"):
        rd = tmp_path / full
        for arm, v in ((full, 0.6), ("pairs_only", 0.5), ("rule_based", 0.55), ("one_shot", 0.45)):
            fake_result(rd, f"pt-{arm}", arm, False, {t: v for t in domain})
        inp = report.collect_inputs(rd, cfg())
        t4 = report_tables.table4(inp, cfg(), report_inputs.paper_numbers())
        got = dict(zip(t4.df["setting"], t4.df["biomedicine (ours)"]))
        assert got == {"Instruct PT (full)": "60.0", "w/o corpora (pairs only)": "50.0",
                       "rule-based synthesis": "55.0", "1-shot synthesis (M=1)": "45.0"}, full
        assert list(t4.df["finance (paper)"]) == ["74.7", "73.3", "73.1", "73.1"]
        assert f"this run's {full} arm" in t4.notes[0] and "full minus one_shot = +15.0 pt" in t4.agreement


def test_synthesis_table_shows_documents_beside_the_release(tmp_path):
    rd = tmp_path / "run"
    (rd / "02_synthesize").mkdir(parents=True)
    (rd / "02_synthesize" / "metrics.json").write_text(json.dumps(
        {"pairs_per_text": 4.8, "tokens_per_pair": 50.0, "documents": 100, "texts_per_document": 1.6,
         "mean_document_chars": 1800.0, "multi_text_share": 0.6, "dropped_pairs_total": 7,
         "document_layout_mix": {"classic": 72, "dialog": 8, "raw": 10, "next_turn": 10},
         "mode_mix": {"plain": 30, "options": 10}}))
    t = report_tables.synthesis_table(report_inputs.Inputs(rd, {"run": rd}, None), cfg(), report_inputs.paper_numbers())
    df = t.df.set_index("statistic")
    assert df.loc["documents", "ours"] == "100" and df.loc["dropped_pairs_total", "ours"] == "7"
    assert df.loc["texts_per_document", "release M=2"] == "1.633" and df.loc["mean_document_chars", "release M=3"] == "2238"
    assert df.loc["layout_share_classic", "ours"] == "0.8" and df.loc["layout_share_classic", "release M=2"] == "0.8"
    assert df.loc["layout_share_next_turn", "ours"] == "0.1111" and df.loc["mode_share_plain", "ours"] == "0.75"
    assert list(df.index).count("documents") == 1
