"""What a profile will cost, before anything runs: downloads, disk, tokens, GPU-hours.

`python -m ipt_utils plan --profile NAME` prints it; `estimate(profile)` returns the same as a
dict, which the runner records under `plan` in manifest.json at the start of every run.
These are estimates from the profile's values and the constants below (each with its source
or marked as our assumption), not measurements of this machine: use them to size downloads,
disks and GPU allocations, then compare with the stages' own metrics.json.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from .flops import PEAK_BF16_FLOPS, flops_per_token, matmul_params
from .registry import ARMS, default_stages, work_root_for
from .schema import HUB_PREFIX, REPO_ROOT, TINY, hub_source, resolve_path

# ---------------------------------------------------------------------------- constants (one place)
GB = 1e9
A100_BF16_PEAK_FLOPS = PEAK_BF16_FLOPS["A100"]  # NVIDIA A100 datasheet, dense bf16 (312e12)
ASSUMED_MFU = 0.40  # our assumption for FSDP training of 0.5-8B models on A100s; measure with bench/bench_pretrain.py
SYNTH_RAW_TOKENS_PER_S = 1e9 / 86400  # paper: ~1 day per 1B raw-text tokens on one A100-80GB (~11.6k tokens/s, vLLM, 7B)
TOKENS_PER_TEXT = {"general": 500, "default": 500}  # paper: 100B tokens over ~200M RefinedWeb texts (40M = 1/5)
BYTES_PER_TOKEN = 4.0  # our assumption: English text, ~4 UTF-8 bytes per BPE token (Mistral/Llama tokenizers)
PAIRS_PER_TEXT, TOKENS_PER_PAIR = 5, 52  # paper: ~5 pairs per text, ~52 tokens per pair
CACHE_BYTES_PER_TOKEN = 4  # packing.py: int32 token ids (tokenized cache and packed rows)
OPTIMIZER_BYTES_PER_PARAM = 12  # fp32 master copy + AdamW m and v, in every training checkpoint
EVAL_TOKENS_PER_DOC = 1024  # our assumption: prompt + choices scored per document
EVAL_DOCS_PER_TASK = 5000  # our assumption for a task run without `limit` (MMLU has 14k, BoolQ 3.3k)
DTYPE_BYTES = {"bfloat16": 2, "float32": 4}
MISTRAL_VOCAB, TINY_VOCAB = 32000, 2048  # Mistral-7B tokenizer; assets.TINY_VOCAB_SIZE
# Parameter counts of the hub models the profiles name (their model cards / config.json).
HUB_PARAMS = {
    "mistralai/Mistral-7B-v0.1": 7.24e9,
    "instruction-pretrain/instruction-synthesizer": 7.24e9,  # Mistral-7B fine-tune
    "meta-llama/Meta-Llama-3-8B": 8.03e9,
    "EleutherAI/pythia-1b": 1.01e9,
    "bigscience/bloom-3b": 3.00e9,
    "instruction-pretrain/InstructLM-500M": 0.57e9,
    "instruction-pretrain/InstructLM-1.3B": 1.35e9,
}
ASSUMPTIONS = [
    "GPU-hours are on one A100-80GB; other GPUs scale by their bf16 peak (H100 ~3x)",
    f"training: 6N + 12LHQT FLOPs per token (PaLM appendix B) at {ASSUMED_MFU:.0%} MFU of 312 TFLOP/s bf16",
    "synthesis: the paper's ~1 day per 1B raw-text tokens on one A100-80GB (vLLM, 7B synthesizer)",
    f"{TOKENS_PER_TEXT['default']} tokens per raw text (paper: 100B tokens / ~200M RefinedWeb texts), "
    f"{BYTES_PER_TOKEN:g} bytes per token of text",
    "downloads: model weights = parameters x dtype bytes (safetensors); datasets = text read x bytes per token",
    "training steps and instruction lengths are upper bounds (every sequence at its maximum length)",
]


def _dtype_bytes(run) -> int:
    if run.dtype != "auto":
        return DTYPE_BYTES[run.dtype]
    return 4 if run.device == "cpu" else 2  # auto = bf16 on GPU, fp32 on CPU


def shape_params(shape, vocab: int) -> float:
    """All parameters of a Mistral model (tied embedding counted once; norms ignored)."""
    return float(matmul_params(shape, vocab))


def model_params(spec: str, tiny_shape=None, vocab: int = MISTRAL_VOCAB) -> float | None:
    if spec == TINY:
        return shape_params(tiny_shape, vocab) if tiny_shape is not None else None
    if spec.startswith(HUB_PREFIX):
        return HUB_PARAMS.get(hub_source(spec)[0])
    return None  # a local directory or an earlier stage's output: counted where it is trained


def _local_bytes(spec: str) -> float:
    try:
        p = resolve_path(spec)
    except Exception:  # noqa: BLE001 - not a local path
        return 0.0
    p = Path(p)
    if p.is_file():
        return float(p.stat().st_size)
    if p.is_dir():
        return float(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()))
    return 0.0


def _lines(spec: str) -> int:
    """Records of a local .jsonl/.txt corpus (0 when not a readable local file or over 1 GB)."""
    try:
        p = Path(resolve_path(spec))
    except Exception:  # noqa: BLE001 - not a local path
        return 0
    if not p.is_file() or p.suffix not in (".jsonl", ".txt") or p.stat().st_size > GB:
        return 0
    with open(p, "rb") as f:
        return sum(1 for line in f if line.strip())


def _vocab(tokenizer: str, shape) -> int:
    if shape is not None and shape.vocab_size:
        return shape.vocab_size
    return TINY_VOCAB if tokenizer == TINY else MISTRAL_VOCAB


def _hours(flops: float) -> float:
    return flops / (A100_BF16_PEAK_FLOPS * ASSUMED_MFU) / 3600


def estimate(profile) -> dict:
    """-> {"profile", "stages": {stage: {...}}, "totals": {...}, "assumptions": [...], "constants": {...}}.
    Per stage: download_gb, disk_gb, tokens, gpu_hours and notes; numbers are floats (GB, hours)."""
    S = profile.sections
    run, st, sy, pt, it, ev = (S[k] for k in ("run", "synth_tune", "synthesize", "pretrain", "instruct_tune",
                                               "evaluate"))
    wbytes = _dtype_bytes(run)
    stages: dict[str, dict] = {}
    downloaded: dict[str, float] = {}  # spec -> GB counted so far (a later stage may read more of it)

    def download(spec: str, gb: float | None, notes: list) -> float:
        if gb is None:
            notes.append(f"{spec}: size unknown (not in plan.HUB_PARAMS)")
            return 0.0
        before = downloaded.get(spec, 0.0)
        downloaded[spec] = max(before, gb)
        if before:
            notes.append(f"{spec}: counted by an earlier stage" + (" (this one reads more)" if gb > before else ""))
        return max(0.0, gb - before)

    # 01: synthesizer tuning
    notes: list[str] = []
    n01 = model_params(st.base_model, st.tiny_model, TINY_VOCAB) or 0.0
    dl = 0.0
    if st.base_model.startswith(HUB_PREFIX):
        p = model_params(st.base_model)
        dl += download(st.base_model, p * wbytes / GB if p else None, notes)
    n_sets = max(1, len(st.datasets))
    tok01 = float(st.max_steps * st.batch_size * st.grad_accum_steps * st.max_seq_len)
    dl += download(st.data, n_sets * st.max_per_dataset * st.max_seq_len / 2 * BYTES_PER_TOKEN / GB, notes) \
        if st.data.startswith(HUB_PREFIX) else 0.0
    trained = n01 if st.method == "full" else n01 * 0.01  # LoRA: ~1% trainable (optimizer state only for them)
    stages["01_synth_tune"] = dict(
        download_gb=dl, disk_gb=(n01 * wbytes + trained * OPTIMIZER_BYTES_PER_PARAM + n01 * wbytes) / GB,
        tokens=tok01, gpu_hours=_hours(6 * n01 * tok01), params=n01, notes=notes)

    # 02: synthesis
    notes = []
    n_texts = sy.max_texts or 0
    tpt = TOKENS_PER_TEXT.get(sy.domain, TOKENS_PER_TEXT["default"])
    if not sy.corpus.startswith(HUB_PREFIX):  # a local file: its own text sizes
        size, lines = _local_bytes(sy.corpus), _lines(sy.corpus)
        tpt = size / max(lines, 1) / BYTES_PER_TOKEN if lines else tpt
        n_texts = min(n_texts, lines) if n_texts and lines else (n_texts or lines)
    elif not n_texts:  # the whole hub corpus: as much as pre-training reads of it
        n_texts = int(pt.train_tokens / tpt)
        notes.append(f"max_texts 0 = the whole corpus: assumed the {pt.train_tokens:.3g} tokens pretrain.train_tokens"
                     f" reads")
    raw_tok = float(n_texts * tpt)
    gen_tok = (raw_tok / tpt) * PAIRS_PER_TEXT * TOKENS_PER_PAIR
    dl = 0.0
    if sy.corpus.startswith(HUB_PREFIX):
        dl += download(sy.corpus, raw_tok * BYTES_PER_TOKEN / GB, notes)
    uses_model = any(b != "rule_based" for b in [sy.backend] + [v.backend for v in sy.variants])
    settings = 1 + len(sy.variants)
    if uses_model and sy.model.startswith(HUB_PREFIX):
        p = model_params(sy.model)
        dl += download(sy.model, p * wbytes / GB if p else None, notes)
    model_settings = sum(b != "rule_based" for b in [sy.backend] + [v.backend for v in sy.variants])
    text_gb = (raw_tok + gen_tok) * BYTES_PER_TOKEN / GB
    stages["02_synthesize"] = dict(
        download_gb=dl, disk_gb=3 * text_gb * settings,  # round files + augmented.jsonl + parquet twin
        tokens=raw_tok, generated_tokens=gen_tok * model_settings, num_shards=sy.num_shards,
        texts_per_shard=math.ceil(n_texts / sy.num_shards) if n_texts else None,
        gpu_hours=model_settings * raw_tok / SYNTH_RAW_TOKENS_PER_S / 3600,
        gpu_hours_per_shard=model_settings * raw_tok / SYNTH_RAW_TOKENS_PER_S / 3600 / sy.num_shards,
        notes=notes + [f"{sy.num_shards} shard job(s); {model_settings} model setting(s) of {settings}"])

    # 03: pre-training
    notes = []
    vocab = _vocab(pt.tokenizer, pt.model)
    arms = list(pt.arms)
    base_p = model_params(pt.base_model)
    from_base = [a for a in arms if pt.init == "base_model" or
                 (pt.arm_variants[a].recipe if a in pt.arm_variants else a) == "continual"]
    n_scratch = shape_params(pt.model, vocab)
    n_arm = {a: (base_p or n_scratch) if a in from_base else n_scratch for a in arms}
    dl = 0.0
    if from_base and pt.base_model.startswith(HUB_PREFIX):
        dl += download(pt.base_model, base_p * wbytes / GB if base_p else None, notes)
    if pt.raw_corpus.startswith(HUB_PREFIX):
        dl += download(pt.raw_corpus, pt.train_tokens * BYTES_PER_TOKEN / GB, notes)
    for src, tokens in ((pt.synth_collection, 1e9 / 4), (pt.general_instructions, 1e9 / 4)):
        if src.startswith(HUB_PREFIX):  # our assumption: ~1 GB of text each is read
            dl += download(src, tokens * BYTES_PER_TOKEN / GB, notes)
    tok03 = float(pt.train_tokens) * len(arms)
    flops = sum(flops_per_token(pt.model, vocab, pt.seq_len) * pt.train_tokens if a not in from_base
                else 6 * n_arm[a] * pt.train_tokens for a in arms)
    cache = (pt.train_tokens * 2) * CACHE_BYTES_PER_TOKEN  # tokenized sources + packed rows, shared by arms
    ckpt = sum(n * (wbytes + wbytes + OPTIMIZER_BYTES_PER_PARAM) for n in n_arm.values())
    stages["03_pretrain"] = dict(download_gb=dl, disk_gb=(cache + ckpt) / GB, tokens=tok03,
                                 gpu_hours=_hours(flops), params_per_arm=n_arm, notes=notes)

    # 04: instruction tuning (every arm's model)
    notes = []
    it_arms = [a for a in it.arms if a in n_arm or a in ARMS]
    tok04 = float(it.max_steps * it.batch_size * it.max_len) * len(it_arms)
    dl = download(it.data, it.max_steps * it.batch_size * it.max_len / 2 * BYTES_PER_TOKEN / GB, notes) \
        if it.arms and it.data.startswith(HUB_PREFIX) else 0.0
    n04 = [n_arm.get(a, n_scratch) for a in it_arms]
    stages["04_instruct_tune"] = dict(
        download_gb=dl, disk_gb=sum(n * (2 * wbytes + OPTIMIZER_BYTES_PER_PARAM) for n in n04) / GB,
        tokens=tok04, gpu_hours=_hours(sum(6 * n * it.max_steps * it.batch_size * it.max_len for n in n04)),
        notes=notes)

    # 05: evaluation (forward passes only: 2N FLOPs per token)
    notes = []
    models = []
    if "pretrain" in ev.model_sets:
        models += [n_arm[a] for a in arms]
    if "instruct_tune" in ev.model_sets:
        models += n04
    dl = 0.0
    for m in ev.external_models:
        p = model_params(m)
        models.append(p or 0.0)
        if m.startswith(HUB_PREFIX):
            dl += download(m, p * wbytes / GB if p else None, notes)
    docs = ev.limit or EVAL_DOCS_PER_TASK
    tok05 = float(len(models) * len(ev.tasks) * docs * EVAL_TOKENS_PER_DOC)
    if not ev.offline_tasks:
        notes.append("lm-eval task datasets: < 1 GB in all, not counted")
    stages["05_evaluate"] = dict(
        download_gb=dl, disk_gb=0.001, tokens=tok05,
        gpu_hours=sum(2 * n * len(ev.tasks) * docs * EVAL_TOKENS_PER_DOC for n in models)
        / (A100_BF16_PEAK_FLOPS * ASSUMED_MFU) / 3600, notes=notes)
    stages["06_report"] = dict(download_gb=0.0, disk_gb=0.01, tokens=0.0, gpu_hours=0.0, notes=["CPU only"])

    runs = default_stages(profile.values())
    for name, d in stages.items():
        d["in_default_run"] = name in runs
    totals = {k: sum(d[k] for n, d in stages.items() if n in runs)
              for k in ("download_gb", "disk_gb", "gpu_hours")}
    return {"profile": profile.name, "device": run.device, "weights_dtype_bytes": wbytes, "stages": stages,
            "totals": totals, "default_run": runs, "assumptions": ASSUMPTIONS,
            "constants": {"a100_bf16_peak_flops": A100_BF16_PEAK_FLOPS, "assumed_mfu": ASSUMED_MFU,
                          "synth_raw_tokens_per_s": SYNTH_RAW_TOKENS_PER_S, "bytes_per_token": BYTES_PER_TOKEN}}


def hub_cache(profile, out: str | None = None) -> str:
    """The HF_HUB_CACHE the profile's jobs will use (stage.setup_environment's choice)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    run_dir = Path(out).resolve() if out else REPO_ROOT / "results" / "runs" / profile.name
    return str(work_root_for(run_dir, profile.sections["run"]) / "hf_cache" / "hub")


def query(profile, key: str, out: str | None = None) -> str:
    """One value for shell scripts (scripts/slurm/): num_shards, synth_model, hub_cache, ..."""
    sy = profile.sections["synthesize"]
    values = {
        "num_shards": lambda: str(sy.num_shards),
        "synth_model": lambda: sy.model[len(HUB_PREFIX):] if sy.model.startswith(HUB_PREFIX) else "",
        "synth_gpus": lambda: str(sy.tensor_parallel_size),
        "hub_cache": lambda: hub_cache(profile, out),
        "gpu_hours_per_shard": lambda: f"{estimate(profile)['stages']['02_synthesize']['gpu_hours_per_shard']:.2f}",
    }
    if key not in values:
        raise KeyError(f"unknown plan value {key!r}; one of {sorted(values)}")
    return values[key]()


def _fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if x else "0"


def render(plan: dict) -> str:
    """The human-readable table `python -m ipt_utils plan` prints."""
    lines = [f"plan for profile {plan['profile']} (device {plan['device']}, weights "
             f"{plan['weights_dtype_bytes']} bytes/param); default run: {', '.join(plan['default_run'])}",
             f"{'stage':<18}{'download GB':>13}{'disk GB':>11}{'tokens':>16}{'A100 GPU-h':>12}"]
    for name, d in plan["stages"].items():
        mark = "" if d["in_default_run"] else "  (not in the default run)"
        lines.append(f"{name:<18}{_fmt(d['download_gb']):>13}{_fmt(d['disk_gb']):>11}{_fmt(d['tokens']):>16}"
                     f"{_fmt(d['gpu_hours']):>12}{mark}")
        for n in d.get("notes", []):
            lines.append(f"{'':<20}- {n}")
    s = plan["stages"]["02_synthesize"]
    if s["num_shards"] > 1:
        lines.append(f"synthesis: {s['num_shards']} shards, ~{_fmt(s['gpu_hours_per_shard'])} GPU-h each "
                     f"(size a Slurm task's --time from this)")
    t = plan["totals"]
    lines.append(f"{'total (default run)':<18}{_fmt(t['download_gb']):>13}{_fmt(t['disk_gb']):>11}{'':>16}"
                 f"{_fmt(t['gpu_hours']):>12}")
    lines.append("assumptions (constants in ipt_utils/plan.py):")
    lines += [f"  - {a}" for a in plan["assumptions"]]
    return "\n".join(lines)
