"""The data arms of stage 03: each arm's recipe (which sources, in which proportions, from
which start and seed), its sources' texts, and its packed training rows.

Data: every source is streamed (`hf:` datasets with streaming=True) and read only as far as
the arm's token budget needs (source_caps): tuning data and pairs up to the pool budget,
then the raw corpus (or instruct_corpus: all augmented texts first, then unconverted raw
texts) only for what the budget leaves, so a 1.7 TB hub corpus is never read whole and the
converted texts keep their share of the tokens; the stage metrics record per source what was
read (records, documents, tokens) and the augmented share. Each source is tokenized once
(cache key: tokenizer + file contents + renderer version; a cache read for a larger budget
serves smaller ones) under <work>/03_pretrain/cache, streamed in chunks of `chunk_docs` documents to
an on-disk memory-mapped cache (tokenization over `num_proc` processes); an arm draws
documents (by index, from their lengths) in shuffled epochs until its budget of
`steps * batch_tokens` tokens is filled and packs them chunk by chunk into seq_len rows
(ipt_utils.packing), a memory-mapped .npy read by training: memory stays bounded by the
chunk size plus 8-16 bytes per document, so corpora larger than RAM work. Packing
efficiency (non-pad / all token slots) is reported per arm.

Text is text (packing.encode_texts): a document that spells "<s>" or "<|end_of_text|>" gets
those characters' tokens, so the only BOS/EOS ids are the ones packing places around each
document. A raw text enters every arm as the same bytes (io.record_text: stripped, nothing
else; stage 02 neutralises markup in its prompt copy only). Rows without text (empty,
whitespace only, not a string), malformed tuning records and general rows without a
question/response are skipped and counted per source (`sources_read`); a row without a
text field, invalid UTF-8 or invalid JSON is refused naming its file and line. `doc_mask` restarts position
ids at every <s> so attention never crosses a packed document boundary (sdpa/eager: a
block-diagonal causal mask; flash_attention_2: varlen kernels on flattened rows).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from . import assets, io, packing, sources, templify
from .format import collection_example
from .registry import ARMS, split_replica
from .schema import STAGE_PREFIX, TINY, resolve_path
from .synthesize import variant_augmented
from .templify import usable_pairs

RENDER_VERSION = "render-4"  # part of the cache key of every source's texts (with templify.py's bytes)
TEMPLIFY_SRC = Path(__file__).resolve().parent / "templify.py"

# `cfg` below is the stage's section (pretrain.Params), passed in by the stage module.


def _text_of(row: dict, where: str = "row"):
    """The raw text field of a row (fixture `text`, RefinedWeb `content`) as stored: whether it
    holds any text is io.record_text's call. A row with neither field is refused, located."""
    keys = [k for k in ("text", "content") if k in row]
    for key in keys:
        if isinstance(row[key], str):
            return row[key]
    if keys:
        return row[keys[0]]  # None / not a string: no text, skipped and counted by the reader
    raise ValueError(f"{where}: no text field ('text' or 'content'); keys {sorted(row)}")


def render_plain_pairs(pairs, context: str = "") -> str:
    """Plain readable text of a context and its (instruction, response) pairs."""
    parts = [context.strip()] if context and context.strip() else []
    parts += [f"Question: {q.strip()}\nAnswer: {a.strip()}" for q, a in pairs]
    return "\n\n".join(parts)


def render_collection_record(rec: dict, index: int, seed: int) -> str | None:
    """A synthesizer-tuning record {context, QA_list[{Q, A}]} as pre-training text; None for
    a malformed record (format.collection_example), which the tuning source skips and counts.

    Rendered by ipt_utils.templify exactly like a synthesized one-text chain (same pattern
    pools, option styles and layouts), so the tuning data reads like the augmented corpus.
    Not neutralised: like raw texts, the record's bytes enter pre-training as they are.
    """
    example = collection_example(rec)
    if example is None:
        return None
    context, pairs = example
    member = templify.Member(id=f"tuning-{index}", text=context, pairs=[tuple(p) for p in pairs])
    return templify.templify_chain([member], seed=seed)[0]["text"]


def render_general(row: dict) -> str | None:
    """General instruction data for continual pre-training: "{question} {response}"; None when
    either is missing or blank (skipped and counted)."""
    q, r = row.get("question"), row.get("response")
    if not (isinstance(q, str) and isinstance(r, str) and q.strip() and r.strip()):
        return None
    return f"{q} {r}"


def augmented_path(ctx, spec_: str = "") -> Path:
    """The augmented corpus an arm reads: '' = this run's 02_synthesize output,
    variant:NAME = a 02_synthesize variant of this run, else a local JSONL path."""
    if not spec_:
        return ctx.work_root / "02_synthesize" / "augmented.jsonl"
    if spec_.startswith("variant:"):
        return variant_augmented(ctx.work_root, spec_[len("variant:"):])
    return resolve_path(spec_)


def recipe_of(cfg, arm: str) -> str:
    """The built-in recipe an arm follows (itself, or its arm_variants entry's recipe; a seed
    replica <arm>_s<k> follows <arm>'s)."""
    arm = split_replica(arm)[0]
    return arm if arm in ARMS else cfg.arm_variants[arm].recipe


def augmented_spec(cfg, arm: str) -> str:
    arm = split_replica(arm)[0]
    return cfg.arm_variants[arm].augmented if arm in cfg.arm_variants else ""


def arm_seed(ctx, arm: str) -> int:
    """The seed of an arm's init and data order: run.seed, + k for a seed replica <arm>_s<k>."""
    return ctx.seed + split_replica(arm)[1]


def own_base_arm(cfg) -> str | None:
    """The arm X when base_model is stage:03_pretrain/X (tiny continual: start from this run's vanilla)."""
    prefix = STAGE_PREFIX + "03_pretrain/"
    return cfg.base_model[len(prefix):] if cfg.base_model.startswith(prefix) else None


@dataclass
class SourceTexts:
    """Lazily streamed texts of one data source + what identifies them (for the cache key)."""

    name: str
    key_parts: list
    texts: Callable[[], Iterable[str]]  # a fresh iterator over the texts on every call
    info: dict = field(default_factory=dict)  # counters the iterator keeps (records read, ...)


def source_texts(ctx, cfg, augmented: str = "") -> dict[str, SourceTexts]:
    """raw, tuning, instruct_corpus, pairs, general -> texts, streamed from their files.

    instruct_corpus = every augmented text, then the raw texts whose id was not converted:
    an arm reads it up to its token budget (prepare_arm), so all converted texts are in and
    the raw corpus only fills the rest (order is irrelevant otherwise: arms shuffle). Only
    the set of converted ids is held in memory. Each source's `info` counts what its
    iterator read (records, converted texts skipped). `augmented` picks the augmented corpus
    (see augmented_path).
    """
    aug = augmented_path(ctx, augmented)
    aug_id = aug if aug.exists() else "missing"

    def aug_rows():
        if not aug.exists():
            raise FileNotFoundError(f"{aug}: no augmented corpus; run 02_synthesize first "
                                    f"(needed by arms instruct/pairs_only/continual and their variants)")
        return io.iter_jsonl(aug)

    # Every reader keeps counters (the stage metrics' sources_read): records read and texts
    # skipped because they hold no text (io.record_text: not a string, empty, whitespace only).
    # A raw text enters every arm as the same bytes (io.record_text: stripped, nothing else;
    # stage 02 neutralises markup in its prompt copy only, docs/TEXT.md).
    raw_info = {"records_read": 0, "texts_skipped_empty": 0}
    ic_info = {"augmented_docs": 0, "augmented_skipped_empty": 0, "records_read": 0, "texts_skipped_empty": 0,
               "converted_skipped": 0}
    pairs_info, tuning_info, general_info = {"docs_without_pairs": 0}, {"records_read": 0, "records_malformed": 0}, \
        {"records_read": 0, "records_skipped": 0}

    def raw_texts(info):
        for where, r in sources.located_records(cfg.raw_corpus):
            info["records_read"] += 1
            text = io.record_text(_text_of(r, where))
            if text is None:
                info["texts_skipped_empty"] += 1
                continue
            yield r, text

    def raw():
        raw_info.update(records_read=0, texts_skipped_empty=0)
        for _, text in raw_texts(raw_info):
            yield text

    def instruct_corpus():
        for k in ic_info:
            ic_info[k] = 0
        # a row is one pre-training document: it replaces all of its member texts
        converted = {str(i) for r in aug_rows() for i in r["member_ids"]}
        for r in aug_rows():
            text = io.record_text(r.get("text"))
            if text is None:
                ic_info["augmented_skipped_empty"] += 1
                continue
            ic_info["augmented_docs"] += 1
            yield text
        for r, text in raw_texts(ic_info):
            if io.record_id(r, _text_of(r)) in converted:
                ic_info["converted_skipped"] += 1
            else:
                yield text
        # reached only when the whole raw corpus was read (a budget stops reading earlier)
        if ic_info["converted_skipped"] < len(converted):
            raise ValueError(f"{aug}: {len(converted) - ic_info['converted_skipped']} augmented ids are not in "
                             f"{cfg.raw_corpus} (the corpus 02_synthesize converted must be this raw_corpus)")

    def pairs():  # w/o corpora: a document's pairs, its members in order, without the texts
        pairs_info["docs_without_pairs"] = 0
        for r in aug_rows():
            kept = [p for m in r["members"] for p in usable_pairs(m["pairs"])]
            if kept:
                yield render_plain_pairs(kept)
            else:
                pairs_info["docs_without_pairs"] += 1

    def tuning():
        tuning_info.update(records_read=0, records_malformed=0)
        for i, (where, r) in enumerate(sources.located_records(cfg.synth_collection)):
            tuning_info["records_read"] += 1
            text = render_collection_record(r, i, ctx.seed)
            if text is None:
                tuning_info["records_malformed"] += 1
                tuning_info.setdefault("first_malformed", where)
                continue
            yield text

    def general():
        general_info.update(records_read=0, records_skipped=0)
        for r in sources.records(cfg.general_instructions):
            general_info["records_read"] += 1
            text = render_general(r)
            if text is None:
                general_info["records_skipped"] += 1
                continue
            yield text

    raw_id, tuning_id, general_id = (sources.identity(s) for s in (cfg.raw_corpus, cfg.synth_collection,
                                                                    cfg.general_instructions))
    return {
        "raw": SourceTexts("raw", [raw_id, RENDER_VERSION], raw, raw_info),
        "tuning": SourceTexts("tuning", [tuning_id, RENDER_VERSION, ctx.seed, TEMPLIFY_SRC], tuning, tuning_info),
        "instruct_corpus": SourceTexts("instruct_corpus", [raw_id, aug_id, RENDER_VERSION, "augmented-first"],
                                       instruct_corpus, ic_info),
        "pairs": SourceTexts("pairs", [aug_id, RENDER_VERSION, TEMPLIFY_SRC], pairs, pairs_info),
        "general": SourceTexts("general", [general_id, RENDER_VERSION], general, general_info),
    }


def from_base(cfg, arm: str) -> bool:
    base = split_replica(arm)[0]
    return cfg.init == "base_model" or (base in ARMS or base in cfg.arm_variants) and recipe_of(cfg, arm) == "continual"


def arm_recipe(cfg, arm: str) -> dict:
    """{"pool": [(source, repeat)], "ratio": {source: token share}} of an arm.

    Pool sources are drawn in their natural proportions (a source with repeat r appears r
    times per epoch of the pool); `ratio` sources get an explicit share of the budget.
    """
    pool = {
        "vanilla": [("raw", 1)],
        "mix": [("raw", 1), ("tuning", cfg.tuning_repeat)],
        "instruct": [("instruct_corpus", 1), ("tuning", cfg.tuning_repeat)],
        "pairs_only": [("pairs", 1)],
        "continual": [("instruct_corpus", 1)],
    }[recipe_of(cfg, arm)]
    pool = [(s, r) for s, r in pool if r > 0]
    ratio = {"general": cfg.general_ratio} if from_base(cfg, arm) and cfg.general_ratio > 0 else {}
    return {"pool": pool, "ratio": ratio}


# =========================================================================== data

def arm_tokenizer_spec(cfg, arm: str) -> str:
    if from_base(cfg, arm) and cfg.base_model != TINY:
        base_arm = own_base_arm(cfg)
        return arm_tokenizer_spec(cfg, base_arm) if base_arm else cfg.base_model
    return cfg.tokenizer


def load_tokenizer(ctx, spec_: str):
    tok = assets.load_tokenizer(ctx, spec_)
    return tok


def special_ids(tokenizer) -> tuple[int, int, int]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise ValueError("the tokenizer needs BOS and EOS tokens for document packing")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos  # bos is never a target
    return bos, eos, pad


def mix_plan(lengths: dict, recipe: dict, budget: int, seed: int):
    """Choose documents for one arm from their lengths only (no tokens touched).

    lengths: source name -> document lengths. Returns (names, src, idx, counts): document j
    of the arm is document idx[j] of source names[src[j]], in training order; counts =
    tokens (incl. <s>/</s>) per source. Deterministic for a given seed.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    ratio_budget = {s: int(round(r * budget)) for s, r in recipe["ratio"].items()}
    pool_budget = budget - sum(ratio_budget.values())
    names = [s for s, _ in recipe["pool"]] + list(ratio_budget)
    srcs, idxs = [], []
    if recipe["pool"] and pool_budget > 0:
        pool_names = [s for s, _ in recipe["pool"]]
        base_len = np.concatenate([np.asarray(lengths[s], dtype=np.int64) for s in pool_names])
        starts = np.cumsum([0] + [len(lengths[s]) for s in pool_names])
        # pool index -> document index in the concatenation; a source with repeat r appears r times
        index = np.concatenate([np.tile(np.arange(starts[k], starts[k + 1]), r)
                                for k, (_, r) in enumerate(recipe["pool"])])
        pick = index[packing.fill_budget(base_len[index], pool_budget, rng)]
        label = np.searchsorted(starts, pick, side="right") - 1
        srcs.append(label)
        idxs.append(pick - starts[label])
    offset = len(recipe["pool"])
    for k, (s, b) in enumerate(ratio_budget.items()):
        if b > 0:
            pick = packing.fill_budget(lengths[s], b, rng)
            srcs.append(np.full(len(pick), offset + k))
            idxs.append(pick)
    src = np.concatenate(srcs).astype(np.int16) if srcs else np.zeros(0, dtype=np.int16)
    idx = np.concatenate(idxs).astype(np.int64) if idxs else np.zeros(0, dtype=np.int64)
    order = rng.permutation(len(idx))  # interleave sources
    src, idx = src[order], idx[order]
    counts = {}
    for i, n in enumerate(names):
        sel = src == i
        counts[n] = int((np.asarray(lengths[n], dtype=np.int64)[idx[sel]] + 2).sum())
    return names, src, idx, counts


def mix_documents(docs: dict, recipe: dict, budget: int, seed: int):
    """Choose documents for one arm: returns (Docs in training order, per-source token counts).

    docs: source name -> packing.Docs. In memory; prepare_arm streams the same plan to disk.
    """
    names, src, idx, counts = mix_plan({k: d.lengths for k, d in docs.items()}, recipe, budget, seed)
    return packing.gather([docs[n] for n in names], src, idx), counts


@dataclass
class ArmData:
    arm: str
    path: Path  # .npy [n_rows, seq_len] int32
    tokenizer: str
    n_rows: int
    n_docs: int
    efficiency: float
    source_tokens: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)  # per source: budget cap, what was read, what is used
    augmented: dict = field(default_factory=dict)  # share of augmented texts in the arm's tokens
    cache_hits: int = 0
    seconds: float = 0.0

    def rows(self):
        import numpy as np

        return np.load(self.path, mmap_mode="r")


def prepare_arm(ctx, cfg, arm: str, world_size: int = 1) -> ArmData:
    """Tokenize (cached, streamed to disk) the arm's sources, mix them to the budget and pack
    them chunk by chunk into a memory-mapped .npy; cached too."""
    t0 = time.time()
    tok_spec = arm_tokenizer_spec(cfg, arm)
    tok = load_tokenizer(ctx, tok_spec)
    fp = packing.tokenizer_fingerprint(tok)
    recipe = arm_recipe(cfg, arm)
    srcs = source_texts(ctx, cfg, augmented_spec(cfg, arm))
    names = [s for s, _ in recipe["pool"]] + list(recipe["ratio"])
    cache = ctx.work / "cache"
    keys = {s: packing.cache_key(fp, s, *srcs[s].key_parts) for s in names}
    n_rows = cfg.steps * cfg.batch_seqs
    key = packing.cache_key(recipe_of(cfg, arm), keys, recipe, n_rows, cfg.seq_len, arm_seed(ctx, arm))
    out = ctx.work / "data" / f"{arm}-{key}.npy"
    meta_path = out.with_suffix(".json")
    if out.exists() and meta_path.exists():
        meta = io.read_json(meta_path)
        return ArmData(arm=arm, path=out, tokenizer=tok_spec, cache_hits=len(names) + 1,
                       seconds=time.time() - t0, **meta)
    docs, hits, read = {}, 0, {}

    def load(s, cap):
        nonlocal hits
        docs[s], hit = packing.cached_tokenize(cache, keys[s], tok, srcs[s].texts, num_proc=cfg.num_proc,
                                               chunk_docs=cfg.chunk_docs, max_tokens=cap, info=srcs[s].info)
        hits += hit
        if len(docs[s]) == 0:
            raise ValueError(f"arm {arm}: source {s} has no documents")
        m = packing.cache_meta(cache / keys[s])
        read[s] = {"cap_tokens": cap, "docs_used": len(docs[s]), "tokens_used": int(docs[s].offsets[-1]),
                   "cache_docs": m.get("docs"), "cache_tokens": m.get("tokens"),
                   "source_exhausted": m["exhausted"], **m.get("source", {})}

    for s, cap in source_caps(recipe, n_rows * cfg.seq_len, lambda s: _cost(docs[s])):
        load(s, cap)
    bos, eos, pad = special_ids(tok)
    order, src, idx, counts = mix_plan({s: d.lengths for s, d in docs.items()}, recipe, n_rows * cfg.seq_len,
                                       arm_seed(ctx, arm))
    out.parent.mkdir(parents=True, exist_ok=True)
    packed = packing.pack_to_npy(out, [docs[s] for s in order], src, idx, cfg.seq_len, bos, eos, pad,
                                 n_rows=n_rows, chunk_docs=cfg.chunk_docs)
    meta = dict(n_rows=n_rows, n_docs=packed.n_docs, efficiency=packed.efficiency, source_tokens=counts,
                sources=read, augmented=augmented_share(docs, read, order, src, idx))
    io.write_json(meta_path, meta)
    return ArmData(arm=arm, path=out, tokenizer=tok_spec, cache_hits=hits, seconds=time.time() - t0, **meta)


RAW_BACKED = ("raw", "instruct_corpus")  # pool sources read from the raw corpus (may be far larger than any budget)


def _cost(docs) -> int:
    return int(docs.offsets[-1]) + 2 * len(docs)  # + <s>/</s> per document, as fill_budget counts


def source_caps(recipe: dict, budget: int, cost_of: Callable[[str], int]):
    """(source, token cap) in reading order: how much of each source an arm reads.

    The pool is drawn in natural proportions over the documents read, so a capped pool fills
    the budget in about one epoch: every pool source other than the raw corpus (tuning data,
    pairs) is read up to ceil(pool budget / repeat); the raw-corpus source (raw, or
    instruct_corpus = every augmented text first, then unconverted raw texts) then reads only
    what the budget leaves, so the converted texts keep their share instead of being diluted
    by a whole hub corpus; ratio sources (general instructions) read their share of the budget.
    A source shorter than its cap is read whole and repeated in epochs, as before. cost_of(s)
    gives a loaded source's tokens (+2 a document) and is called after s is yielded.
    """
    ratio_budget = {s: int(round(r * budget)) for s, r in recipe["ratio"].items()}
    pool_budget = budget - sum(ratio_budget.values())
    fixed = [(s, r) for s, r in recipe["pool"] if s not in RAW_BACKED]
    for s, r in fixed:
        yield s, max(1, -(-pool_budget // r))
    rest = pool_budget - sum(r * cost_of(s) for s, r in fixed)
    for s, r in recipe["pool"]:
        if s in RAW_BACKED:
            yield s, max(1, -(-rest // r))
    for s, b in ratio_budget.items():
        yield s, max(1, b)


def augmented_share(docs: dict, read: dict, order: list, src, idx) -> dict:
    """Share of the arm's drawn tokens and documents that are augmented texts (instruct_corpus
    holds them first, read[...]['augmented_docs'] of them); {} for arms without them."""
    if "instruct_corpus" not in docs or "augmented_docs" not in read["instruct_corpus"]:
        return {}
    d = docs["instruct_corpus"]
    n_aug = min(len(d), int(read["instruct_corpus"]["augmented_docs"]))
    sel = idx[src == order.index("instruct_corpus")]
    cost = d.offsets[sel + 1] - d.offsets[sel] + 2
    total = sum(_cost_of_plan(docs, order, src, idx))
    is_aug = sel < n_aug
    return {"augmented_docs_read": n_aug, "raw_docs_read": len(d) - n_aug,
            "token_share": float(cost[is_aug].sum() / total) if total else 0.0,
            "doc_share_of_corpus": float(is_aug.mean()) if len(sel) else 0.0}


def _cost_of_plan(docs: dict, order: list, src, idx):
    for k, s in enumerate(order):
        sel = idx[src == k]
        yield int((docs[s].offsets[sel + 1] - docs[s].offsets[sel] + 2).sum())


def prepare_data(ctx, cfg) -> dict[str, ArmData]:
    return {arm: prepare_arm(ctx, cfg, arm) for arm in cfg.arms}


def data_summary(data: dict[str, ArmData]):
    """One row per arm: rows, documents, packing efficiency, token share per source."""
    import pandas as pd

    rows = []
    for arm, d in data.items():
        total = sum(d.source_tokens.values()) or 1
        raw = d.sources.get("raw") or d.sources.get("instruct_corpus") or {}
        rows.append({"arm": arm, "rows": d.n_rows, "docs": d.n_docs, "packing_efficiency": round(d.efficiency, 4),
                     **{f"share_{s}": round(n / total, 3) for s, n in d.source_tokens.items()},
                     "augmented_share": round(d.augmented["token_share"], 3) if d.augmented else None,
                     "raw_records_read": raw.get("records_read"), "prep_s": round(d.seconds, 2)})
    return pd.DataFrame(rows)


