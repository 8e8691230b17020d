"""A notebook run by hand (interactive) leaves the same marker and manifest entry as the runner."""
import pytest

from ipt_utils import io, manifest, runner, stage
from ipt_utils.profiles import load_profile
from ipt_utils.stage import STAGE_BY_NAME


@pytest.fixture
def fake(monkeypatch):
    calls = []

    def execute(st, params, out_nb):
        calls.append(st.name)
        out_nb.write_text("{}")
        io.write_json(out_nb.parent / "metrics.json", {"ok": 1})

    monkeypatch.setattr(runner, "_execute", execute)
    return calls


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


def test_papermill_mode_writes_only_metrics(tmp_path):
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
    assert ctx.key == manifest.stage_key(prof.stage_hash(STAGE_BY_NAME["02_synthesize"]), (), tmp_path)
