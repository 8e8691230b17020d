"""End to end: the ci-tiny profile through papermill, every notebook, offline.

One session-scoped run (a few minutes on 2 CPU cores); the assertions check that each
stage left real outputs, the manifest, and that a re-run skips everything.
"""
import subprocess
import sys

import pytest

from ipt_utils import io
from ipt_utils.schema import REPO_ROOT
from ipt_utils.registry import STAGES

from conftest import run_profile

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "ci-tiny"
    return out, run_profile("ci-tiny", out, timeout=1200)


def test_every_stage_completed(tiny_run):
    out, _ = tiny_run
    man = io.read_json(out / "manifest.json")
    for s in STAGES:
        d = out / s.name
        assert (d / f"{s.name}.ipynb").exists(), s.name
        assert (d / ".complete").exists(), s.name
        assert io.read_json(d / "metrics.json"), s.name
        assert man["stages"][s.name]["status"] == "completed"
    assert man["params"]["run"]["offline"] is True


def test_stage_outputs_are_real(tiny_run):
    out, _ = tiny_run
    work = out / "work"
    assert (work / "01_synth_tune" / "model" / "model.safetensors").exists()
    m1 = io.read_json(out / "01_synth_tune" / "metrics.json")
    assert m1["final_loss"] < m1["first_loss"]  # the synthesizer learned something
    aug = io.read_jsonl(work / "02_synthesize" / "augmented.jsonl")
    assert aug and all(r["text"] and m["raw_text"] in r["text"] for r in aug for m in r["members"])
    m2 = io.read_json(out / "02_synthesize" / "metrics.json")
    assert m2["texts_in"] > 0
    for arm in ("vanilla", "mix", "instruct", "continual"):  # continual starts from vanilla
        assert (work / "03_pretrain" / arm / "model" / "model.safetensors").exists(), arm
        assert (work / "04_instruct_tune" / arm / "model" / "model.safetensors").exists(), arm
    assert (out / "05_evaluate" / "summary.csv").exists()
    assert list((out / "06_report").rglob("*.png")) and list((out / "06_report").rglob("*.md"))


def test_rerun_skips_completed(tiny_run):
    out, _ = tiny_run
    proc = subprocess.run([sys.executable, "-m", "ipt_utils", "run", "--profile", "ci-tiny", "--out", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("up to date, skipped") == len(STAGES)
