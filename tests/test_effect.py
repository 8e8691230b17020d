"""Effect summary: paired bootstrap over seeds and items, claims, stored facts, outputs."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ipt_utils import effect

ARM_ACC = {"vanilla": (0.30, 0.70), "mix": (0.32, 0.70), "instruct": (0.60, 0.72)}  # (step 0, last step)


def _items(tmp_path, arm_acc=ARM_ACC, seeds=3, items=200, steps=(0, 10, 20)):
    rng = np.random.default_rng(0)
    rows = []
    for arm, (first, last) in arm_acc.items():
        for k in range(seeds):
            name = arm if k == 0 else f"{arm}_s{k}"
            for step in steps:
                p = first + (last - first) * step / steps[-1]
                for task, q in (("mmlu_0shot", p), ("cloze", 0.8)):
                    rows += [(name, step, task, f"p{i}", int(rng.random() < q)) for i in range(items)]
    d = tmp_path / "run" / "04_instruct_tune"
    d.mkdir(parents=True)
    pd.DataFrame(rows, columns=["arm", "step", "task", "item", "correct"]).to_csv(d / "eval_items.csv", index=False)
    return tmp_path / "run"


def test_paired_difference_by_hand():
    a = pd.DataFrame([[1, 1, 0, 1], [1, 0, 1, 1]], index=[0, 1], columns=list("wxyz"))
    b = pd.DataFrame([[0, 1, 0, 0], [1, 0, 0, 1]], index=[0, 1], columns=list("wxyz"))
    d = effect.paired_difference(a, b, n_boot=500)
    assert d["mean"] == pytest.approx(3 / 8) and (d["seeds"], d["items"]) == (2, 4)
    assert d["per_seed"] == {0: 0.5, 1: 0.25}
    assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    same = effect.paired_difference(a, a)
    assert same["mean"] == 0 and same["ci95"] == [0, 0] and effect.verdict(same) == "no clear difference"
    none = effect.paired_difference(a, b.loc[[]])
    assert none["mean"] is None and effect.verdict(none) == "not measured"


def test_claims_show_a_real_gap_and_no_gap(tmp_path):
    run = _items(tmp_path)
    s = effect.write_effect(run, n_boot=400)
    c1, c2 = s["claims"]["claim1_base"], s["claims"]["claim2_tuned"]
    assert c1["step"] == 0 and c2["step"] == 20
    for name in ("instruct_minus_vanilla", "instruct_minus_mix"):
        assert c1[name]["verdict"] == "ahead" and c1[name]["ci95"][0] > 0.1
        assert (c1[name]["seeds"], c1[name]["items"]) == (3, 200)
    lo, hi = c2["instruct_minus_vanilla"]["ci95"]
    assert lo < 0.02 < hi and hi - lo < 0.15  # the true 2 points lies inside a narrow interval
    assert c1["accuracy"]["instruct"]["mean"] == pytest.approx(0.6, abs=0.05)
    assert set(c1["accuracy"]["instruct"]["per_seed"]) == {0, 1, 2}
    assert s["stored_facts"]["base"]["vanilla"]["mean"] == pytest.approx(0.8, abs=0.05)
    out = run / "06_report"
    assert json.loads((out / "effect.json").read_text())["claims"]["claim1_base"]["step"] == 0
    table = (out / "effect_table.md").read_text()
    assert "instruct_minus_mix" in table and "| ahead |" in table and "stored facts" in table
    assert (out / "effect_curve.png").stat().st_size > 0


def test_equal_arms_give_an_interval_around_zero(tmp_path):
    run = _items(tmp_path, {a: (0.4, 0.4) for a in ARM_ACC})
    s = effect.summarize(effect.read_items(run / "04_instruct_tune"), n_boot=400)
    for claim in s["claims"].values():
        lo, hi = claim["instruct_minus_mix"]["ci95"]
        assert lo < 0 < hi


def test_missing_or_empty_outcomes_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="eval_items.csv"):
        effect.read_items(tmp_path)
    (tmp_path / "eval_items.csv").write_text("arm,step,task,item,correct\n")
    with pytest.raises(ValueError, match="no mmlu_0shot"):
        effect.summarize(effect.read_items(tmp_path))


def test_written_only_where_stage_04_measured_instruct_and_a_baseline(tmp_path):
    assert effect.write_effect_if_measured(tmp_path / "nothing") is None
    run = _items(tmp_path / "a", {"vanilla": (0.3, 0.3), "continual": (0.3, 0.3)}, seeds=1, items=5)
    assert effect.write_effect_if_measured(run) is None and not (run / "06_report").exists()
    run = _items(tmp_path / "b", {"instruct": (0.5, 0.5), "mix": (0.3, 0.3)}, seeds=1, items=5)
    s = effect.write_effect_if_measured(run, tmp_path / "out")
    assert s["claims"]["claim1_base"]["instruct_minus_vanilla"]["verdict"] == "not measured"
    assert (tmp_path / "out" / "effect.json").exists()
