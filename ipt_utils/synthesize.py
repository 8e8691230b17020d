"""Stage 02: synthesize instruction-response pairs for raw texts (NOTES.md section 4).

Steps (one call each from the notebook):
  load_texts      raw corpus (local .jsonl/.parquet/.txt or hf:NAME streamed) -> this
                  shard's texts; empty texts skipped, markup tokens neutralised (counted)
  open_engine     a lazily started generation backend: vLLM or batched transformers
  synthesize_shard  multi-round (M-shot) synthesis; each finished round of the shard is
                  written atomically to <work>/shard-i-of-n/round-r.jsonl and a rerun
                  skips finished rounds (greedy decoding -> identical output)
  write_augmented templify chains -> <work>/augmented.jsonl (CONTRACTS.md row schema)
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
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

from .schema import HUB_PREFIX, TINY, resolve_path, spec


@dataclass
class Params:
    model: str = spec(kind="model", help="the synthesizer: stage:01_synth_tune | hf:NAME | local dir")
    corpus: str = spec(kind="source", help="raw texts: local .jsonl/.parquet/.txt or hf:NAME (streamed)")
    split: str = spec(help="split of an hf: corpus (ignored for local files)")
    text_column: str = spec(help="field holding the raw text")
    domain: str = spec(help="domain label for records without a 'domain' field")
    max_texts: int = spec(ge=0, help="records read from the corpus before sharding; 0 = all")
    num_shards: int = spec(ge=1, help="split the corpus over this many independent jobs")
    shard_index: int = spec(ge=0, help="which shard this job synthesizes (record k -> k % num_shards)")
    rounds: int = spec(ge=1, help="M: contiguous rounds, M-shot history (2 general, 3 domain)")
    max_new_tokens: int = spec(ge=1)
    max_model_len: int = spec(ge=64, help="prompt + generation token limit")
    backend: str = spec(choices=("auto", "vllm", "transformers"), help="auto = vllm if importable")
    batch_size: int = spec(ge=1, help="prompts per engine call; halved on out-of-memory")
    tensor_parallel_size: int = spec(ge=1, help="vLLM only")
    gpu_memory_utilization: float = spec(gt=0.0, le=1.0, help="vLLM only (GPU)")
    enable_prefix_caching: bool = spec(help="vLLM only")

    def __post_init__(self):
        if self.shard_index >= self.num_shards:
            raise ValueError(f"shard_index {self.shard_index} must be < num_shards {self.num_shards}")
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
    text: str
    neutralised: bool = False


def iter_records(cfg: Params) -> Iterator[tuple[str, dict]]:
    """(location, record) for every raw record; invalid UTF-8 raises with file:line."""
    if cfg.corpus.startswith(HUB_PREFIX):
        from datasets import load_dataset

        name = cfg.corpus[len(HUB_PREFIX):]
        for i, rec in enumerate(load_dataset(name, split=cfg.split, streaming=True)):
            yield f"{name}[{cfg.split}]#{i}", rec
        return
    path = resolve_path(cfg.corpus)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches():
            for rec in batch.to_pylist():
                yield f"{path}#{n}", rec
                n += 1
    elif path.suffix in (".txt", ".text"):
        with open(path, "rb") as f:  # one text per line
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: invalid UTF-8 ({e.reason} at byte {e.start})") from None
                yield f"{path}:{lineno}", {cfg.text_column: line.rstrip("\n")}
    else:
        from .io import iter_jsonl

        for lineno, rec in enumerate(iter_jsonl(path), 1):
            yield f"{path}#{lineno}", rec


def load_texts(cfg: Params) -> tuple[list[RawText], dict]:
    """This shard's texts. Empty/whitespace texts are skipped, markup neutralised; both counted."""
    from .format import neutralise

    texts: list[RawText] = []
    stats = {"records_read": 0, "texts_in": 0, "texts_skipped_empty": 0, "texts_neutralised": 0}
    for k, (where, rec) in enumerate(iter_records(cfg)):
        if cfg.max_texts and k >= cfg.max_texts:
            break
        stats["records_read"] += 1
        if k % cfg.num_shards != cfg.shard_index:
            continue
        stats["texts_in"] += 1
        if cfg.text_column not in rec:
            raise ValueError(f"{where}: no field {cfg.text_column!r} (fields: {sorted(rec)})")
        text = rec[cfg.text_column]
        if not isinstance(text, str) or not text.strip():
            stats["texts_skipped_empty"] += 1
            continue
        text, changed = neutralise(text.strip())
        stats["texts_neutralised"] += changed
        rid = rec.get("id")
        texts.append(RawText(str(rid) if rid is not None else where, str(rec.get("domain") or cfg.domain),
                             text, changed))
    return texts, stats


# --------------------------------------------------------------------------- algorithm

class GenOut(NamedTuple):
    text: str
    n_tokens: int


class Tokenizer:
    """encode/decode without special tokens added (prompts carry a literal "<s>")."""

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer

    def encode(self, text: str) -> list[int]:
        return self.hf(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)


@dataclass
class Synth:
    """One synthesized text; a row of a round file."""

    key: int  # position in the shard
    id: str
    domain: str
    raw_text: str  # full (neutralised) text
    prompt_text: str  # the text as it stood in the prompt (truncated if too long)
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
    from .format import render_context

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
    from .format import build_prompt, render_context

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
        ids, kept, dropped, ptext, trunc = fit_prompt(t.text, slot_history(prev, by_key), tok, budget)
        plans.append(Planned(first_key + j, t, j, ids, kept, dropped, ptext, trunc))
    return plans


def finish(p: Planned, out, r: int, tok, chain_prefix: str = "") -> Synth:
    from .format import parse_pairs_with_stats

    text, n_tokens = (out, len(tok.encode(out))) if isinstance(out, str) else out
    pairs, st = parse_pairs_with_stats(text)
    inherited = bool(p.history)
    return Synth(
        key=p.key, id=p.text.id, domain=p.text.domain, raw_text=p.text.text, prompt_text=p.prompt_text,
        round=r, slot=p.slot, history=[h.key for h in p.history], history_dropped=p.dropped,
        inherited=inherited,
        chain_id=p.history[-1].chain_id if inherited else f"{chain_prefix}{p.key}",
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
        # in-process engine (notebooks have no __main__ guard); 1 GiB KV cache on CPU
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
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


class TransformersEngine:
    """Greedy batched generate with left padding (callers pass length-sorted batches)."""

    name = "transformers"

    def __init__(self, model_path: str, tokenizer, cfg: Params, device: str, dtype):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=dtype, use_safetensors=True, trust_remote_code=False).to(device).eval()
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


def vllm_available() -> tuple[bool, str]:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    try:
        import vllm  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable here"
        return False, f"{type(e).__name__}: {e}"
    return True, ""


def choose_backend(backend: str) -> str:
    if backend != "auto":
        return backend
    return "vllm" if vllm_available()[0] else "transformers"


def make_engine(model_path: str, hf_tokenizer, cfg: Params, *, seed: int = 0, device: str = "cpu",
                dtype=None) -> Engine:
    """A lazily started engine; `dtype` is a torch dtype (None = float32)."""
    import torch

    dtype = dtype or torch.float32
    backend = choose_backend(cfg.backend)
    if backend == "vllm":
        dname = str(dtype).replace("torch.", "")
        factory = lambda: VLLMEngine(model_path, cfg, seed, dname, device)  # noqa: E731
    else:
        factory = lambda: TransformersEngine(model_path, hf_tokenizer, cfg, device, dtype)  # noqa: E731
    from .assets import model_fingerprint

    return Engine(factory, backend, cfg.batch_size, model_fingerprint(model_path))


def open_engine(ctx, cfg: Params):
    """-> (Engine, Tokenizer) for the profile's synthesizer; the engine starts on first use."""
    from . import assets

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
            "shard_index", "rounds", "max_new_tokens", "max_model_len")
    h = hashlib.sha256(json.dumps({**{k: getattr(cfg, k) for k in keys}, "weights": model_stamp},
                                  sort_keys=True).encode())
    for t in texts:
        h.update(json.dumps([t.id, t.domain, t.text]).encode())
    return h.hexdigest()[:20]


def load_done_rounds(sdir: Path, fp: str) -> dict[int, list[Synth]]:
    """Finished round files of this shard; stale ones (other params/inputs) are removed."""
    from . import io

    marker = sdir / "fingerprint.json"
    if marker.exists() and io.read_json(marker).get("fingerprint") != fp:
        print(f"[synthesize] {sdir}: inputs or params changed; discarding finished rounds")
        for p in sdir.glob("round-*.jsonl"):
            p.unlink()
    io.write_json(marker, {"fingerprint": fp})
    done: dict[int, list[Synth]] = {}
    r = 0
    while (sdir / f"round-{r:03d}.jsonl").exists():  # only a prefix of rounds is reusable
        done[r] = [Synth.from_dict(d) for d in io.iter_jsonl(sdir / f"round-{r:03d}.jsonl")]
        r += 1
    return done


def synthesize_shard(ctx, cfg: Params, texts: Sequence[RawText], engine: Engine, tok) -> tuple[list[Synth], dict]:
    """Run (or resume) this shard's rounds; -> (synths, run info)."""
    from . import io

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
    """Templify every chain; rows grouped by chain (chain order = first member's position)."""
    from .templify import Member, templify_chain

    chains: dict[str, list[Synth]] = {}
    for s in sorted(synths, key=lambda s: (s.round, s.key)):
        chains.setdefault(s.chain_id, []).append(s)
    rows = []
    for cid, members in sorted(chains.items(), key=lambda kv: kv[1][0].key):
        rendered = templify_chain([Member(m.id, m.raw_text, m.pairs) for m in members], seed, cid)
        for m, t in zip(members, rendered):
            rows.append({"id": m.id, "domain": m.domain, "text": t["text"], "raw_text": m.raw_text,
                         "pairs": m.pairs, "chain_id": cid, "inherited": m.inherited,
                         "mode": t["mode"], "layout": t["layout"]})
    return rows


def write_augmented(ctx, cfg: Params, synths: Sequence[Synth]) -> list[dict]:
    from . import io

    rows = build_rows(synths, ctx.seed)
    io.write_jsonl(augmented_path(ctx.work, cfg), rows)
    return rows


def stats_frame(synths: Sequence[Synth], rows: Sequence[dict]):
    import pandas as pd

    by_id = {(r["chain_id"], r["id"]): r for r in rows}
    recs = []
    for s in synths:
        row = by_id.get((s.chain_id, s.id), {})
        recs.append({"id": s.id, "domain": s.domain, "round": s.round, "slot": s.slot,
                     "chain_id": s.chain_id, "inherited": s.inherited, "history_len": len(s.history),
                     "history_dropped": s.history_dropped, "truncated": s.truncated,
                     "neutralised": s.neutralised, "prompt_tokens": s.prompt_tokens,
                     "gen_tokens": s.gen_tokens, "items": s.items, "pairs": len(s.pairs),
                     "malformed": s.malformed, "duplicates": s.duplicates,
                     "tokens_per_pair": s.pair_tokens / len(s.pairs) if s.pairs else float("nan"),
                     "mode": row.get("mode", ""), "layout": row.get("layout", "")})
    return pd.DataFrame(recs)


def write_stats(ctx, synths: Sequence[Synth], rows: Sequence[dict]):
    df = stats_frame(synths, rows)
    df.to_csv(ctx.stage_dir / "synthesis_stats.csv", index=False)
    return df


def plot_stats(ctx, df) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(10, 7))
    ax[0, 0].hist(df["pairs"], bins=range(0, int(df["pairs"].max() if len(df) else 0) + 2),
                  align="left", rwidth=0.8)
    ax[0, 0].set(title="pairs per text", xlabel="pairs", ylabel="texts")
    tpp = df["tokens_per_pair"].dropna()
    ax[0, 1].hist(tpp, bins=20)
    ax[0, 1].set(title="tokens per pair (instruction + response)", xlabel="tokens")
    for a, col in ((ax[1, 0], "mode"), (ax[1, 1], "layout")):
        counts = df[col].value_counts()
        a.barh(counts.index.astype(str), counts.values)
        a.set(title=f"{col} mix", xlabel="texts")
    fig.tight_layout()
    path = ctx.stage_dir / "synthesis.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
        "backend": engine.backend,
        "engine_init_s": round(engine.init_s, 3),
        "generate_s": round(gen_s, 3),
        "engine_calls": engine.calls,
        "input_tokens_per_s": in_tok / gen_s if gen_s else 0.0,
        "output_tokens_per_s": out_tok / gen_s if gen_s else 0.0,
        "oom_retries": engine.oom_retries,
        **info,
    }
