import importlib.util
import os
from pathlib import Path

import pytest

# Tests never reach a hub; keep caches out of $HOME.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if os.environ.get("IPT_GPU_TESTS_ON_CPU") == "1":
        return  # tests/test_gpu.py runs its bodies on cpu/float32 (proves they are not dead code)
    skip = pytest.mark.skip(reason="needs a CUDA GPU (IPT_GPU_TESTS_ON_CPU=1 runs them on the CPU)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)


def dev_module(name: str):
    """A development tool under dev/ (not part of the installed package), imported by path."""
    path = Path(__file__).resolve().parent.parent / "dev" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"dev_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixture_gen = dev_module("fixture_gen")  # dev/fixture_gen.py: writes ipt_utils/fixtures/


@pytest.fixture
def fake_synthesizer(monkeypatch):
    """Stage 02's model backends (vLLM, transformers) replaced by tests/fake_engine.py's fast,
    deterministic fake for this test; -> the model paths of its starts, one per engine start."""
    import fake_engine

    from ipt_utils import generation

    starts = []
    fake_engine.install(lambda name, start: monkeypatch.setitem(generation.STARTERS, name, start), starts=starts)
    return starts


@pytest.fixture
def stub_execute(monkeypatch):
    """Papermill replaced by a stub that records each stage and leaves what a notebook leaves."""
    from ipt_utils import io, runner

    calls = []

    def execute(stage, params, out_nb):
        calls.append(stage.name)
        out_nb.write_text("{}")
        io.write_json(out_nb.parent / "metrics.json", {"ok": 1})

    monkeypatch.setattr(runner, "_execute", execute)
    return calls


@pytest.fixture
def stop_after(monkeypatch):
    """stop_after(step): a context manager under which every trainer (stages 01, 03, 04) stops
    right after optimizer step `step`, as a crash would: a hook in training.STEP_HOOKS."""
    import contextlib

    from ipt_utils import training

    monkeypatch.setattr(training, "STEP_HOOKS", list(training.STEP_HOOKS))

    @contextlib.contextmanager
    def stop(step: int):
        def hook(s):
            return s >= step

        training.STEP_HOOKS.append(hook)
        try:
            yield
        finally:
            training.STEP_HOOKS.remove(hook)

    return stop


def run_profile(profile: str, out, timeout: int):
    """`python -m ipt_utils run --profile PROFILE --out OUT` in a subprocess, as a user would
    (no HF_HOME or cache variables of ours: hub caches land in the run's work dir); fails with the output's tail."""
    import subprocess
    import sys

    from ipt_utils.schema import REPO_ROOT

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for var in ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_XET_CACHE"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-m", "ipt_utils", "run", "--profile", profile, "--out", str(out)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


# Strings that are control tokens of the tokenizers the project trains with (tiny, Mistral,
# Llama-3): a document may spell them, and they must stay text (ipt_utils.packing.encode_texts).
FORGED = ("<s>", "</s>", "<pad>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>")

# Hostile texts every training stage must pack, or skip and count (never crash, never drop silently).
HOSTILE = {
    "empty": "",
    "whitespace": " \t\n  \r\n ",
    "long": ("A very long web page about tokens <s> and </s>, 中文 and 😀. " * 6000)[:340_000],
    "control": "bell\x07 escape\x1b[31m form\x0c feed \x7f del",
    "nul": "nul\x00byte\x00inside",
    "cjk_emoji": "日本語のテキスト 한국어 中文 👩‍👩‍👧 😀🎉",
    "forged": "A page about tokenizers: " + " ".join(FORGED) + " end.",
}


@pytest.fixture(scope="session")
def tokenizer_kinds(tmp_path_factory):
    """kind -> (directory, tokenizer): the tiny tokenizer and the Mistral-kind (sentencepiece)
    and Llama-3-kind (byte-level, <|begin_of_text|>) ones of ipt_utils.model_mirror."""
    from transformers import AutoTokenizer

    from ipt_utils import assets, model_mirror

    root = tmp_path_factory.mktemp("tokenizer_kinds")
    out = {"tiny": (root / "tiny", assets.build_tiny_tokenizer(root / "tiny"))}
    for kind in ("sentencepiece", "llama3"):
        (root / kind).mkdir()
        model_mirror.TOKENIZER_KINDS[kind](root / kind)
        out[kind] = (root / kind, AutoTokenizer.from_pretrained(root / kind))
    return out
