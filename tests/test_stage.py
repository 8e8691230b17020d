"""A notebook run by hand (interactive) leaves the same marker and manifest entry as the runner."""
import pytest

from ipt_utils import contracts, io, manifest, runner, stage
from ipt_utils.profiles import load_profile
from ipt_utils.registry import STAGE_BY_NAME


@pytest.fixture(autouse=True)
def _restore_environ():
    """open_stage sets process-wide variables (caches under tmp dirs): undo them after each test."""
    import os

    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def fake(stub_execute, monkeypatch):
    # these tests finish stages with stand-in metrics ({"ok": 1}): no schema is checked here
    # (the declared schemas are checked by the stages' own tests and test_contracts)
    monkeypatch.setattr(contracts, "check_metrics", lambda stage, metrics: None)
    return stub_execute


def _by_hand(prof, name, run_dir, metrics=None):
    """What running the notebook top to bottom in JupyterLab does (its parameters = the profile's)."""
    ns = {**prof.stage_parameters(STAGE_BY_NAME[name]), "run_dir": str(run_dir), "interactive": True}
    ctx, cfg = stage.open_stage(name, ns)
    assert ctx.interactive and ctx.key
    entry = io.read_json(run_dir / "manifest.json")["stages"][name]
    assert entry["status"] == "running" and entry["mode"] == "interactive"
    assert not (run_dir / name / manifest.MARKER).exists()
    stage.finish_stage(ctx, metrics or {"ok": 1})
    return ctx


def test_interactive_run_leaves_what_the_runner_leaves(tmp_path, fake):
    prof = load_profile("ci-tiny")
    pm, hand = tmp_path / "papermill", tmp_path / "hand"
    runner.run(prof, stages="01,02", out=pm, log=lambda *_: None)
    for name in ("01_synth_tune", "02_synthesize"):
        _by_hand(prof, name, hand)

    for name in ("01_synth_tune", "02_synthesize"):
        a, b = manifest.read_marker(pm, name), manifest.read_marker(hand, name)
        assert set(a) == set(b) and a["mode"] == "papermill" and b["mode"] == "interactive"
        # same key as the runner computes for the same params and (equivalent) upstream markers
        assert b["key"] == runner.stage_key(prof, STAGE_BY_NAME[name], hand)
        assert (hand / name / "metrics.json").exists()
    assert manifest.read_marker(pm, "01_synth_tune")["key"] == manifest.read_marker(hand, "01_synth_tune")["key"]

    man_pm, man_hand = io.read_json(pm / "manifest.json"), io.read_json(hand / "manifest.json")
    assert set(man_pm) == set(man_hand)  # same header fields (profile, params, environment, ...)
    assert man_hand["profile"] == "ci-tiny" and man_hand["run_dir"] == str(hand.resolve())
    assert man_hand["params"]["synthesize"] == prof.section("synthesize")
    for name in ("01_synth_tune", "02_synthesize"):
        e_pm, e_hand = man_pm["stages"][name], man_hand["stages"][name]
        assert set(e_pm) == set(e_hand)
        assert e_hand["status"] == "completed" and e_hand["mode"] == "interactive"
        assert e_hand["key"] == manifest.read_marker(hand, name)["key"]

    # the runner treats the hand-run stages as complete and runs only what is left
    rep = runner.run(prof, out=hand, log=lambda *_: None)
    assert rep.skipped == ["01_synth_tune", "02_synthesize"]
    assert fake == ["01_synth_tune", "02_synthesize", "03_pretrain", "04_instruct_tune", "05_evaluate",
                    "06_report"]
    # re-running a stage by hand invalidates what depends on it (new completion id)
    _by_hand(prof, "02_synthesize", hand)
    fake.clear()
    runner.run(prof, out=hand, log=lambda *_: None)
    assert fake == ["03_pretrain", "04_instruct_tune", "05_evaluate", "06_report"]


def test_changed_notebook_values_give_another_key(tmp_path, fake):
    prof = load_profile("ci-tiny")
    runner.run(prof, stages="01", out=tmp_path, log=lambda *_: None)
    key = manifest.read_marker(tmp_path, "01_synth_tune")["key"]
    ns = {**prof.stage_parameters(STAGE_BY_NAME["01_synth_tune"]), "run_dir": str(tmp_path),
          "interactive": True, "max_steps": 7}
    ctx, _ = stage.open_stage("01_synth_tune", ns)
    stage.finish_stage(ctx, {"ok": 1})
    assert manifest.read_marker(tmp_path, "01_synth_tune")["key"] != key
    fake.clear()
    runner.run(prof, stages="01", out=tmp_path, log=lambda *_: None)
    assert fake == ["01_synth_tune"]  # the profile's values differ from the hand run's


def test_papermill_mode_writes_only_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(contracts, "check_metrics", lambda stage, metrics: None)  # stand-in metrics
    prof = load_profile("ci-tiny")
    ns = {**prof.stage_parameters(STAGE_BY_NAME["06_report"]), "run_dir": str(tmp_path), "interactive": False}
    ctx, _ = stage.open_stage("06_report", ns)
    stage.finish_stage(ctx, {"ok": 1})
    assert (tmp_path / "06_report" / "metrics.json").exists()
    assert not (tmp_path / "06_report" / manifest.MARKER).exists()
    assert not (tmp_path / "manifest.json").exists()  # the runner owns it under papermill


def test_interactive_key_uses_the_profile_deps(tmp_path, fake):
    """A hand run of paper-500m's 02 computes the runner's key: 01 is not one of its deps."""
    prof = load_profile("paper-500m")
    io.write_json(tmp_path / "01_synth_tune" / manifest.MARKER, {"key": "k", "completion": "c"})
    ns = {**prof.stage_parameters(STAGE_BY_NAME["02_synthesize"]), "run_dir": str(tmp_path), "interactive": True}
    ctx, _ = stage.open_stage("02_synthesize", ns)
    assert ctx.key == runner.stage_key(prof, STAGE_BY_NAME["02_synthesize"], tmp_path)
    assert ctx.key == manifest.completion_key(prof.stage_hash(STAGE_BY_NAME["02_synthesize"]), (), tmp_path)


_ENV_PROBE = """
import json, sys
from pathlib import Path
from ipt_utils.schema import validate
from ipt_utils.registry import RunParams
from ipt_utils.stage import setup_environment
run = validate(RunParams, {"seed": 0, "work_dir": "", "device": "cpu", "offline": True, "dtype": "auto"})
setup_environment(Path(sys.argv[1]), run)
import datasets.config, huggingface_hub
from huggingface_hub import constants
print(json.dumps({"token": huggingface_hub.get_token(), "hub": constants.HF_HUB_CACHE,
                  "datasets": str(datasets.config.HF_DATASETS_CACHE)}))
"""


def _probe(tmp_path, **env_vars):
    """setup_environment in a fresh interpreter (hub constants are read at import, as in a kernel)."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HOME", "HF_TOKEN", "HF_TOKEN_PATH", *stage.HF_CACHE_VARS)}
    env.update(HOME=str(tmp_path / "home"), **env_vars)
    out = subprocess.run([sys.executable, "-c", _ENV_PROBE, str(tmp_path / "work")], env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_environment_keeps_the_hub_login_and_caches_in_work(tmp_path):
    """Defect: HF_HOME moved into the work dir hid the saved token (gated models failed with 401)."""
    saved = tmp_path / "home" / ".cache" / "huggingface" / "token"
    saved.parent.mkdir(parents=True)
    saved.write_text("hf_savedFAKE")
    got = _probe(tmp_path)
    assert got["token"] == "hf_savedFAKE"
    assert got["hub"] == str(tmp_path / "work" / "hf_cache" / "hub")
    assert got["datasets"] == str(tmp_path / "work" / "hf_cache" / "datasets")
    assert _probe(tmp_path, HF_TOKEN="hf_envFAKE")["token"] == "hf_envFAKE"
    # what the user set is kept: a cache pointed elsewhere (shared / node-local disk) ...
    got = _probe(tmp_path, HF_HUB_CACHE=str(tmp_path / "shared"))
    assert got["hub"] == str(tmp_path / "shared") and got["token"] == "hf_savedFAKE"
    assert got["datasets"] == str(tmp_path / "work" / "hf_cache" / "datasets")
    # ... and an HF_HOME with its own token and caches
    (tmp_path / "myhf").mkdir()
    (tmp_path / "myhf" / "token").write_text("hf_homeFAKE")
    got = _probe(tmp_path, HF_HOME=str(tmp_path / "myhf"))
    assert got["token"] == "hf_homeFAKE" and got["hub"] == str(tmp_path / "myhf" / "hub")
    # the token is never copied anywhere
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "FAKE" in p.read_text(errors="ignore")]
    assert sorted(written) == sorted([saved, tmp_path / "myhf" / "token"])
