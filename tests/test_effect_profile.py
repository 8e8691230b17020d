"""The cpu-effect profile end to end (all six stages through papermill, as users run it).

test_cpu_effect_smoke (CI): the profile with small budgets and two seeds -- it cannot show the
effect, it shows that every stage runs on the toy world and that 06 writes effect.json with
intervals over seeds and items. test_cpu_effect_full: the real profile checked against the
issue's bar (about 45 minutes), kept out of CI's time budget: it runs with IPT_EFFECT_FULL=1
(`make effect-test`); `make effect` runs the profile itself.
"""
from __future__ import annotations

import os
import time

import pytest
import yaml

from ipt_utils import io
from ipt_utils.registry import STAGES, split_replica
from ipt_utils.schema import REPO_ROOT

from conftest import run_profile

SMOKE = {  # section -> overrides of params/cpu-effect.yaml (sizes only)
    "synth_tune": {"max_steps": 20, "save_steps": 20, "eval_per_dataset": 1, "eval_max_new_tokens": 32},
    "synthesize": {"max_texts": 10, "max_new_tokens": 48},
    "pretrain": {"arms": ["vanilla", "mix", "instruct", "vanilla_s1", "mix_s1", "instruct_s1"],
                 "model": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 1,
                           "num_kv_heads": 1, "max_position_embeddings": 512, "vocab_size": 0},
                 "train_tokens": 8 * 4096, "save_steps": 8},
    "instruct_tune": {"arms": ["vanilla", "mix", "instruct", "vanilla_s1", "mix_s1", "instruct_s1"],
                      "max_steps": 4, "eval_every": 2, "eval_limit": 30, "save_steps": 4},
    "evaluate": {"limit": 5},
}


def smoke_profile(path):
    prof = yaml.safe_load((REPO_ROOT / "params" / "cpu-effect.yaml").read_text())
    for section, over in SMOKE.items():
        assert set(over) <= set(prof[section]), f"{section}: {set(over) - set(prof[section])}"
        prof[section].update(over)
    path.write_text(yaml.safe_dump(prof, sort_keys=False))
    return path


def check_effect_outputs(out, seeds: int, items: int):
    for s in STAGES:
        assert (out / s.name / ".complete").exists(), s.name
    report = out / "06_report"
    effect = io.read_json(report / "effect.json")
    assert set(effect["claims"]) == {"claim1_base", "claim2_tuned"}
    for claim in effect["claims"].values():
        for name in ("instruct_minus_vanilla", "instruct_minus_mix"):
            d = claim[name]
            assert (d["seeds"], d["items"]) == (seeds, items)
            assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    assert effect["claims"]["claim1_base"]["step"] == 0
    assert set(effect["stored_facts"]["base"]) == {"vanilla", "mix", "instruct"}
    assert (report / "effect_curve.png").stat().st_size > 0 and "instruct_minus_mix" in (report / "effect_table.md").read_text()
    return effect


def test_cpu_effect_smoke(tmp_path):
    out = tmp_path / "run"
    run_profile(str(smoke_profile(tmp_path / "cpu-effect-smoke.yaml")), out, timeout=900)
    check_effect_outputs(out, seeds=2, items=30)
    aug = io.read_jsonl(out / "work" / "02_synthesize" / "augmented.jsonl")
    assert {m["id"] for r in aug for m in r["members"]} == {f"converted-{i // 3:04d}-bio{i % 3}" for i in range(10)}


@pytest.mark.slow
@pytest.mark.timeout(4200)
@pytest.mark.skipif(not os.environ.get("IPT_EFFECT_FULL"), reason="the full cpu-effect profile takes about 45 min: "
                    "`make effect-test` (IPT_EFFECT_FULL=1) runs it, outside CI's time budget")
def test_cpu_effect_full(tmp_path):
    """The real profile against the issue's bar: at most 60 minutes on 2 free CPU cores, and for
    claim 1 (base models) the 95% interval of Instruct PT minus each baseline above zero
    (effect.verdict's 'ahead')."""
    out = tmp_path / "cpu-effect"
    t0 = time.time()
    run_profile("cpu-effect", out, timeout=4000)
    wall = time.time() - t0
    arms = yaml.safe_load((REPO_ROOT / "params" / "cpu-effect.yaml").read_text())["pretrain"]["arms"]
    seeds = len({split_replica(a)[1] for a in arms})
    effect = check_effect_outputs(out, seeds=seeds, items=250)
    print(f"cpu-effect: {wall:.0f} s", effect["claims"])
    assert wall <= 3600, f"cpu-effect took {wall:.0f} s (bar: 3600 s on 2 free cores)"
    for name in ("instruct_minus_vanilla", "instruct_minus_mix"):
        d = effect["claims"]["claim1_base"][name]
        assert d["verdict"] == "ahead", f"claim 1, {name}: {d['mean']:+.3f} {d['ci95']} ({d['verdict']})"
