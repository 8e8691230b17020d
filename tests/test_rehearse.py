"""Rehearsals: the GPU profiles run on this CPU at tiny scale through the very same code paths.

The end-to-end rehearsals of paper-500m and of one Llama-3 8B profile run in CI (all six
stages, the accelerate stages with 2 processes); the other GPU profiles run with
`make rehearse-all` (IPT_REHEARSE_ALL=1), kept out of CI's time budget.
"""
import json
import os
import subprocess
import sys

import pytest

from ipt_utils import rehearse
from ipt_utils.profiles import load_profile
from ipt_utils.schema import HUB_PREFIX, REPO_ROOT

GPU_PROFILES = ["paper-500m", "paper-1.3b", "domain-biomed-llama3-8b", "domain-finance-llama3-8b",
                "paper-ablation-biomed"]
IN_CI = ["paper-500m", "domain-biomed-llama3-8b"]


def test_rehearsal_changes_only_scale(tmp_path):
    real = load_profile("paper-500m")
    profile, root = rehearse.write_profile(real, tmp_path)
    budgets = {(s, k) for s, keys in rehearse.BUDGETS.items() for k in keys}
    mirrored = {("synth_tune", "data"), ("synthesize", "corpus"), ("synthesize", "num_shards"),
                ("pretrain", "raw_corpus"), ("pretrain", "synth_collection"),
                ("pretrain", "general_instructions"), ("instruct_tune", "data"), ("instruct_tune", "eval_data"),
                ("synth_tune", "tiny_model"), ("pretrain", "model")}
    for section in real.sections:
        was, now = real.section(section), profile.section(section)
        for key in was:
            if (section, key) not in budgets | mirrored:
                assert now[key] == was[key], f"{section}.{key} changed in the rehearsal"
    # same stages, arms, rounds, shard_by, tasks, launch configs, backends
    sy = profile.sections["synthesize"]
    assert (sy.rounds, sy.shard_by, sy.backend) == (2, "files", "vllm")
    assert profile.sections["pretrain"].accelerate_config == real.sections["pretrain"].accelerate_config
    # every hub dataset is a local mirror with the hub's layout; hub model names are kept
    assert sy.corpus.startswith(HUB_PREFIX + str(root))
    assert len(list((root / "datasets" / "tiiuae" / "falcon-refinedweb" / "data").glob(
        "train-*-of-05534-*.parquet"))) >= rehearse.SHARDS
    assert profile.sections["instruct_tune"].eval_data.endswith(":all")
    assert sy.model == "hf:instruction-pretrain/instruction-synthesizer"
    assert (root / "models" / "instruction-pretrain" / "instruction-synthesizer" / "config.json").exists()


def test_a_real_run_refuses_the_mirrors(tmp_path, monkeypatch, stub_execute):
    """IPT_HUB_MIRROR left set in a shell would silently swap tiny models into a real run."""
    from ipt_utils import runner

    monkeypatch.setenv("IPT_HUB_MIRROR", str(tmp_path / "mirror"))
    with pytest.raises(ValueError, match="only a rehearsal"):
        runner.run(load_profile("ci-tiny"), out=tmp_path / "real", log=lambda *_: None)
    assert stub_execute == []


def test_rehearsal_runs_the_stages_the_real_run_runs(tmp_path):
    from ipt_utils import runner

    real = load_profile("paper-500m")
    profile, _ = rehearse.write_profile(real, tmp_path)
    names = [s.name for s in runner.selected_stages(profile, None, log=lambda *_: None)]
    assert names == [s.name for s in runner.selected_stages(real, None, log=lambda *_: None)]
    assert "01_synth_tune" not in names  # the released synthesizer: no tuning first


def test_rehearsal_never_writes_into_the_real_run(tmp_path):
    with pytest.raises(ValueError, match="real run"):
        rehearse.run("paper-500m", out=REPO_ROOT / "results" / "runs" / "paper-500m")


def _rehearse(profile: str, out, timeout: int = 1500):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HF_HOME", None)
    # all six stages, stage 01 included although the released synthesizer makes it optional
    proc = subprocess.run([sys.executable, "-m", "ipt_utils", "run", "--profile", profile, "--rehearse",
                           "--stages", "1,2,3,4,5,6", "--out", str(out)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    return json.loads((out / "manifest.json").read_text())


def _check_run(m: dict, out):
    assert m["rehearsal"] is True
    done = {k for k, v in m["stages"].items() if v["status"].startswith(("complete", "skipped"))}
    assert done == {"01_synth_tune", "02_synthesize", "03_pretrain", "04_instruct_tune", "05_evaluate",
                    "06_report"}, m["stages"]
    summary = (out / "05_evaluate" / "summary.csv").read_text()
    assert summary.count("\n") > 1


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("profile", IN_CI)
def test_rehearsal_end_to_end(profile, tmp_path):
    _check_run(_rehearse(profile, tmp_path / profile), tmp_path / profile)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("IPT_REHEARSE_ALL"), reason="CI rehearses paper-500m and one Llama-3 "
                    "profile; the others with `make rehearse-all` (IPT_REHEARSE_ALL=1)")
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("profile", [p for p in GPU_PROFILES if p not in IN_CI])
def test_rehearsal_end_to_end_other_profiles(profile, tmp_path):
    _check_run(_rehearse(profile, tmp_path / profile), tmp_path / profile)
