"""`python -m ipt_utils plan`: downloads, disk, tokens and GPU-hours of a profile before it runs."""
import pytest

from ipt_utils import cli, io, plan, runner
from ipt_utils.profiles import available_profiles, load_profile

NUMBERS = ("download_gb", "disk_gb", "tokens", "gpu_hours")


@pytest.mark.parametrize("name", available_profiles())
def test_plan_for_every_profile(name, capsys):
    est = plan.estimate(load_profile(name))
    for stage in est["default_run"]:
        d = est["stages"][stage]
        assert all(d[k] >= 0 for k in NUMBERS), (stage, d)
    for stage in ("02_synthesize", "03_pretrain"):  # every profile synthesizes and pre-trains
        assert est["stages"][stage]["tokens"] > 0 and est["stages"][stage]["disk_gb"] > 0
    assert est["totals"]["gpu_hours"] > 0 and est["assumptions"]
    assert cli.main(["plan", "--profile", name]) == 0
    out = capsys.readouterr().out
    assert "A100 GPU-h" in out and "03_pretrain" in out and "assumptions" in out


def test_plan_scales_with_the_profile():
    small, big = (plan.estimate(load_profile(n)) for n in ("paper-500m", "paper-1.3b"))
    tiny = plan.estimate(load_profile("ci-tiny"))
    assert big["stages"]["03_pretrain"]["gpu_hours"] > 1.5 * small["stages"]["03_pretrain"]["gpu_hours"]
    assert small["stages"]["03_pretrain"]["gpu_hours"] > 100 * tiny["stages"]["03_pretrain"]["gpu_hours"]
    s = small["stages"]["02_synthesize"]
    assert s["num_shards"] == 400 and s["texts_per_shard"] == 100_000
    # 40M texts x 500 tokens at the paper's ~1 A100-day per 1B raw tokens = 20 A100-days
    assert s["gpu_hours"] == pytest.approx(20 * 24, rel=1e-6)
    assert s["gpu_hours_per_shard"] == pytest.approx(20 * 24 / 400, rel=1e-6)
    # the released 7B synthesizer (bf16) is downloaded; 01 is left out of the default run
    assert s["download_gb"] > 14
    assert small["stages"]["01_synth_tune"]["in_default_run"] is False
    assert "01_synth_tune" not in small["default_run"] and "01_synth_tune" in tiny["default_run"]
    # pre-training reads 100B raw tokens (more than synthesis did): the rest is counted at 03
    assert small["stages"]["03_pretrain"]["download_gb"] > 300


def test_plan_values_for_scripts(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    assert cli.main(["plan", "--profile", "paper-500m", "--print", "num_shards"]) == 0
    assert capsys.readouterr().out.strip() == "400"
    assert cli.main(["plan", "--profile", "paper-500m", "--print", "synth_model"]) == 0
    assert capsys.readouterr().out.strip() == "instruction-pretrain/instruction-synthesizer"
    assert cli.main(["plan", "--profile", "paper-500m", "--out", str(tmp_path), "--print", "hub_cache"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "work" / "hf_cache" / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", "/shared/hub")
    assert plan.query(load_profile("paper-500m"), "hub_cache") == "/shared/hub"
    assert cli.main(["plan", "--profile", "paper-500m", "--print", "nope"]) == 2


def test_runner_records_the_plan(tmp_path, stub_execute):
    prof = load_profile("ci-tiny")
    runner.run(prof, stages="01", out=tmp_path, log=lambda *_: None)
    man = io.read_json(tmp_path / "manifest.json")
    assert man["plan"]["profile"] == "ci-tiny"
    assert man["plan"]["stages"]["03_pretrain"]["tokens"] == plan.estimate(prof)["stages"]["03_pretrain"]["tokens"]
