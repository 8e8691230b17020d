"""Runner orchestration: order, skip, --force, param changes, failure reporting."""
import dataclasses
import json

import nbformat
import pytest

from ipt_utils import cli, io, manifest, registry, runner, stage
from ipt_utils.profiles import load_profile
from ipt_utils.registry import STAGES

NAMES = [s.name for s in STAGES]


@pytest.fixture
def fake(monkeypatch):
    """Replace papermill execution by a stub that writes metrics.json and records calls."""
    calls, fail = [], set()

    def execute(stage, params, out_nb):
        calls.append(stage.name)
        assert params["interactive"] is False and params["profile"] == "ci-tiny"
        if stage.name in fail:
            raise RuntimeError(f"{stage.name} exploded")
        out_nb.write_text("{}")
        io.write_json(out_nb.parent / "metrics.json", {"ok": 1})

    monkeypatch.setattr(runner, "_execute", execute)
    return calls, fail


def _bump(profile, section):
    """Change the first integer parameter of a section (a params change)."""
    obj = profile.sections[section]
    f = next(f for f in dataclasses.fields(obj) if type(getattr(obj, f.name)) is int)
    profile.sections[section] = dataclasses.replace(obj, **{f.name: getattr(obj, f.name) + 1})


def test_order_skip_force_and_param_change(tmp_path, fake):
    calls, _ = fake
    prof = load_profile("ci-tiny")
    rep = runner.run(prof, out=tmp_path, log=lambda *_: None)
    assert calls == NAMES and rep.ran == NAMES
    man = io.read_json(tmp_path / "manifest.json")
    assert [man["stages"][n]["status"] for n in NAMES] == ["completed"] * 6
    assert all(man["stages"][n]["wall_s"] >= 0 for n in NAMES)
    assert {"git_commit", "packages", "device", "params"} <= set(man)
    assert man["params"]["synth_tune"]["max_steps"] == prof.sections["synth_tune"].max_steps
    for n in NAMES:
        assert (tmp_path / n / manifest.MARKER).exists()

    calls.clear()
    rep = runner.run(prof, out=tmp_path, log=lambda *_: None)
    assert calls == [] and rep.skipped == NAMES

    # --force re-runs the chosen stage; its dependants become stale, its deps do not
    runner.run(prof, stages="03", out=tmp_path, force=True, log=lambda *_: None)
    assert calls == ["03_pretrain"]
    calls.clear()
    runner.run(prof, out=tmp_path, log=lambda *_: None)
    assert calls == ["04_instruct_tune", "05_evaluate", "06_report"]

    # changing a stage's params re-runs it and everything downstream
    calls.clear()
    _bump(prof, "instruct_tune")
    runner.run(prof, out=tmp_path, log=lambda *_: None)
    assert calls == ["04_instruct_tune", "05_evaluate", "06_report"]
    calls.clear()
    _bump(prof, "run")  # the run section (seed) affects every stage
    runner.run(prof, out=tmp_path, log=lambda *_: None)
    assert calls == NAMES


def test_selected_stage_pulls_in_missing_deps(tmp_path, fake):
    calls, _ = fake
    prof = load_profile("ci-tiny")
    runner.run(prof, stages="synthesize", out=tmp_path, log=lambda *_: None)
    assert calls == ["01_synth_tune", "02_synthesize"]
    calls.clear()
    runner.run(prof, stages="02", out=tmp_path, log=lambda *_: None)
    assert calls == []


def test_failure_stops_run_and_names_stage(tmp_path, fake, capsys, monkeypatch):
    calls, fail = fake
    fail.add("02_synthesize")
    prof = load_profile("ci-tiny")
    with pytest.raises(runner.StageFailed) as err:
        runner.run(prof, out=tmp_path, log=lambda *_: None)
    assert calls == ["01_synth_tune", "02_synthesize"]
    assert err.value.stage == "02_synthesize"
    assert "02_synthesize exploded" in str(err.value)
    assert str(tmp_path / "02_synthesize" / "02_synthesize.ipynb") in str(err.value)
    man = io.read_json(tmp_path / "manifest.json")
    assert man["stages"]["02_synthesize"]["status"] == "failed"
    assert "exploded" in man["stages"]["02_synthesize"]["error"]
    assert not (tmp_path / "02_synthesize" / manifest.MARKER).exists()
    # the CLI turns it into exit 1 with the same message
    calls.clear()
    assert cli.main(["run", "--profile", "ci-tiny", "--out", str(tmp_path)]) == 1
    assert calls == ["02_synthesize"]  # 01 was complete and skipped
    assert "stage 02_synthesize failed" in capsys.readouterr().err


def test_missing_metrics_is_a_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_execute", lambda stage, params, out_nb: out_nb.write_text("{}"))
    with pytest.raises(runner.StageFailed, match="without writing metrics.json"):
        runner.run(load_profile("ci-tiny"), stages="01", out=tmp_path, log=lambda *_: None)


def test_papermill_error_is_reported(tmp_path, monkeypatch):
    """A real papermill execution whose notebook raises: the error text reaches the user."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("raise ValueError('bad input in cell 2')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "boom.ipynb"
    nbformat.write(nb, src)

    def execute(stage, params, out_nb):
        import papermill as pm

        pm.execute_notebook(str(src), str(out_nb), parameters={"x": 2}, kernel_name="python3",
                            progress_bar=False)

    monkeypatch.setattr(runner, "_execute", execute)
    with pytest.raises(runner.StageFailed) as err:
        runner.run(load_profile("ci-tiny"), stages="01", out=tmp_path / "run", log=lambda *_: None)
    assert "ValueError: bad input in cell 2" in str(err.value)
    executed = json.loads((tmp_path / "run" / "01_synth_tune" / "01_synth_tune.ipynb").read_text())
    assert executed["cells"]  # the executed notebook is kept for inspection


def test_parse_stages_by_name_section_or_number():
    names = [s.name for s in runner.parse_stages("1,02,pretrain,04_instruct_tune")]
    assert names == ["01_synth_tune", "02_synthesize", "03_pretrain", "04_instruct_tune"]
    with pytest.raises(ValueError, match="unknown stage '7'"):
        runner.parse_stages("7")


def test_deps_follow_the_profile(tmp_path):
    """02 needs 01 only when the synthesizer is tuned in this run (defect: paper-500m tuned a 7B first)."""
    paper, tiny = load_profile("paper-500m"), load_profile("ci-tiny")
    assert [s.name for s in runner.plan(paper, runner.parse_stages("02"), tmp_path)] == ["02_synthesize"]
    assert [s.name for s in runner.plan(tiny, runner.parse_stages("02"), tmp_path)] == ["01_synth_tune",
                                                                                        "02_synthesize"]
    assert runner.deps(paper, STAGES[1]) == () and runner.deps(tiny, STAGES[1]) == ("01_synth_tune",)
    assert "01_synth_tune" not in runner.deps(paper, STAGES[-1])
    # a rule-based synthesis (main run and every variant) loads no model: no 01 either
    rb = load_profile("ci-tiny")
    rb.sections["synthesize"] = dataclasses.replace(rb.sections["synthesize"], backend="rule_based")
    assert runner.deps(rb, STAGES[1]) == ()
    # 03 reads 02 only through an arm that uses augmented text
    van = load_profile("ci-tiny")
    van.sections["pretrain"] = dataclasses.replace(van.sections["pretrain"], arms=["vanilla", "mix"])
    assert "02_synthesize" not in runner.deps(van, STAGES[2])
    # 01's marker does not enter paper-500m's 02 key
    key = runner.stage_key(paper, STAGES[1], tmp_path)
    io.write_json(tmp_path / "01_synth_tune" / manifest.MARKER, {"key": "k", "completion": "c"})
    assert runner.stage_key(paper, STAGES[1], tmp_path) == key
    assert runner.stage_key(tiny, STAGES[1], tmp_path) != runner.stage_key(tiny, STAGES[1], tmp_path / "x")


def test_default_run_leaves_out_unneeded_stages(tmp_path, stub_execute):
    calls = stub_execute
    logged = []
    runner.run(load_profile("paper-500m"), out=tmp_path, log=logged.append)
    assert calls == NAMES[1:]
    assert any("01_synth_tune: not needed" in line for line in logged)
    calls.clear()
    runner.run(load_profile("paper-500m"), stages="01", out=tmp_path, log=logged.append)
    assert calls == ["01_synth_tune"]  # still runs when asked for


def _sharded_profile(tmp_path, num_shards=2):
    """ci-tiny with rule-based synthesis (no model, no stage 01) over `num_shards` shards."""
    import yaml

    from ipt_utils.schema import REPO_ROOT

    data = yaml.safe_load((REPO_ROOT / "params" / "ci-tiny.yaml").read_text())
    data["synthesize"].update(backend="rule_based", num_shards=num_shards, max_texts=24)
    path = tmp_path / "tiny-shards.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_runner_stage02_with_shards_never_synthesizes_in_the_kernel(tmp_path):
    """Defect: with num_shards > 1 the notebook synthesized shard 0 in the kernel, then stopped.
    Now it fails naming the missing shards and the commands; once the shard jobs ran it merges."""
    path = _sharded_profile(tmp_path)
    prof, out = load_profile(str(path)), tmp_path / "run"
    with pytest.raises(runner.StageFailed) as err:
        runner.run(prof, stages="02", out=out, log=lambda *_: None)
    msg = str(err.value)
    assert "ShardsIncomplete" in msg and "2 of them are not complete" in msg and "(shards 0-1)" in msg
    assert f"scripts/slurm/submit_synthesis.sh {path} {out}" in msg
    assert f"python -m ipt_utils synthesize --profile {path} --out {out} --num-shards 2 --all-shards" in msg
    assert not list((out / "work" / "02_synthesize").glob("shard-*"))  # nothing synthesized in the kernel

    for i in (0, 1):  # the shard jobs (a Slurm array's tasks)
        assert cli.main(["synthesize", "--profile", str(path), "--out", str(out), "--num-shards", "2",
                         "--shard-index", str(i)]) == 0
    rep = runner.run(prof, stages="02", out=out, log=lambda *_: None)
    assert rep.ran == ["02_synthesize"]
    m = io.read_json(out / "02_synthesize" / "metrics.json")
    assert m["shards"] == 2 and m["texts_synthesized"] == 24
    rows = (out / "work" / "02_synthesize" / "augmented.jsonl").read_text().splitlines()
    shards = [io.read_json(d) for d in sorted((out / "work" / "02_synthesize").glob("shard-*/done.json"))]
    assert len(shards) == 2 and len(rows) == sum(d["rows"] for d in shards) > 0
    assert io.read_json(out / "manifest.json")["stages"]["02_synthesize"]["status"] == "completed"


def _key_tree(d):
    """The keys of a metrics dict, nested objects (variants, mixes excluded) as sub-trees."""
    return {k: _key_tree(v) if isinstance(v, dict) and k not in ("mode_mix", "layout_mix", "document_layout_mix")
            else None for k, v in d.items()}


@pytest.mark.parametrize("variants", [[], [{"name": "one_shot", "rounds": 1, "backend": "rule_based"}]])
def test_stage02_notebook_and_cli_write_the_same_metrics_keys_and_outputs(tmp_path, variants):
    """One orchestration: the papermill run of notebook 02 and `python -m ipt_utils synthesize`
    on the same profile (one shard; without and with a variant) write metrics.json with the same
    keys (those the declared schema allows: finish_stage checks it) and the same augmented corpus
    and statistics."""
    import yaml

    path = _sharded_profile(tmp_path, num_shards=1)
    data = yaml.safe_load(path.read_text())
    data["synthesize"]["variants"] = variants
    path.write_text(yaml.safe_dump(data))
    nb, cmd = tmp_path / "notebook", tmp_path / "cli"
    assert runner.run(load_profile(str(path)), stages="02", out=nb, log=lambda *_: None).ran == ["02_synthesize"]
    assert cli.main(["synthesize", "--profile", str(path), "--out", str(cmd)]) == 0
    m_nb, m_cli = (io.read_json(d / "02_synthesize" / "metrics.json") for d in (nb, cmd))
    assert _key_tree(m_nb) == _key_tree(m_cli)
    assert set(m_nb.get("variants", {})) == {v["name"] for v in variants}  # no empty `variants` key
    assert m_nb["texts_synthesized"] == m_cli["texts_synthesized"] == 24
    files = ["work/02_synthesize/augmented.jsonl", "work/02_synthesize/augmented.parquet",
             "02_synthesize/synthesis_stats.csv"] + [f"work/02_synthesize/variants/{v['name']}/augmented.jsonl"
                                                      for v in variants]
    for f in files:
        assert (nb / f).read_bytes() == (cmd / f).read_bytes(), f


def test_slurm_submission_script(tmp_path):
    """scripts/slurm/submit_synthesis.sh with stand-ins for sbatch and hf: array range from the
    profile's num_shards, the merge after the array, the model pre-downloaded once into the cache."""
    import os
    import subprocess
    import sys

    from ipt_utils.schema import REPO_ROOT

    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/bash\necho "sbatch $* NUM_SHARDS=$NUM_SHARDS PROFILE=$PROFILE" >> {log}\n'
                                    'echo $((RANDOM + 1000))\n')
    (bin_dir / "hf").write_text(f'#!/bin/bash\necho "hf $* cache=$HF_HUB_CACHE" >> {log}\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "HF_HUB_CACHE")}
    env.update(PATH=f"{bin_dir}:{os.path.dirname(sys.executable)}:{env['PATH']}", IPT_PYTHON=sys.executable)
    script = str(REPO_ROOT / "scripts" / "slurm" / "submit_synthesis.sh")
    run = subprocess.run(["bash", script, "paper-500m", str(tmp_path / "run"), "--account=x"], cwd=REPO_ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == f"hf download instruction-pretrain/instruction-synthesizer cache={tmp_path}/run/work/hf_cache/hub"
    assert "--array=0-399" in calls[1] and "--gres=gpu:1" in calls[1] and "--account=x" in calls[1]
    assert calls[1].endswith("synthesize_array.sh NUM_SHARDS=400 PROFILE=paper-500m")
    array_id = run.stdout.split("submitted array job ")[1].split()[0]
    assert f"--dependency=afterok:{array_id}" in calls[2] and "synth_merge.sh" in calls[2]
    # resubmitting only the missing shards, without downloading again
    log.unlink()
    run = subprocess.run(["bash", script, "paper-500m", str(tmp_path / "run")], cwd=REPO_ROOT,
                         env={**env, "ARRAY": "3,17-20", "DOWNLOAD": "0"}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and "--array=3,17-20" in calls[0]


def test_slurm_array_task_runs_one_shard(tmp_path):
    """synthesize_array.sh as Slurm starts it: task i synthesizes shard i of NUM_SHARDS."""
    import os
    import subprocess
    import sys

    from ipt_utils.schema import REPO_ROOT

    path, out = _sharded_profile(tmp_path), tmp_path / "run"
    env = {**os.environ, "PROFILE": str(path), "RUN_DIR": str(out), "NUM_SHARDS": "2", "SLURM_ARRAY_TASK_ID": "1",
           "IPT_PYTHON": sys.executable, "SLURM_SUBMIT_DIR": str(REPO_ROOT)}
    run = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "slurm" / "synthesize_array.sh")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "work" / "02_synthesize" / "shard-00001-of-00002" / "done.json").exists()
    assert not (out / "work" / "02_synthesize" / "shard-00000-of-00002").exists()


def test_optional_package_missing_fails_before_anything_runs(tmp_path, monkeypatch, capsys, stub_execute):
    """flash_attention_2 / qlora need flash-attn / bitsandbytes (optional): a clear error first."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("flash_attn", "bitsandbytes") else real(name, *a))
    calls = stub_execute
    prof = load_profile("ci-tiny")
    prof.sections["pretrain"] = dataclasses.replace(prof.sections["pretrain"], attn_implementation="flash_attention_2")
    with pytest.raises(runner.MissingPackages, match="pretrain.attn_implementation: flash_attention_2 needs the "
                                                    "flash-attn package"):
        runner.run(prof, out=tmp_path, log=lambda *_: None)
    assert calls == []
    runner.run(prof, stages="01", out=tmp_path, log=lambda *_: None)  # stages that do not need it still run
    # the notebook path (open_stage) checks its own section too
    ns = {**prof.stage_parameters(registry.STAGE_BY_NAME["01_synth_tune"]), "run_dir": str(tmp_path),
          "interactive": False, "method": "qlora"}
    with pytest.raises(ModuleNotFoundError, match="synth_tune.method: qlora needs the bitsandbytes package"):
        stage.open_stage("01_synth_tune", ns)
