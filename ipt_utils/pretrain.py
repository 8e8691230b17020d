"""Stage 03: pre-train one model per data arm on an equal token budget (docs/PAPER.md §6).

Arms (what differs is only the data; model, hyper-parameters and budget are shared):
  vanilla     raw corpus
  mix         raw corpus + synthesizer-tuning data x tuning_repeat (each record rendered by
              ipt_utils.templify like a one-text synthesized chain)
  instruct    raw corpus with every converted text replaced by the pre-training document
              it belongs to (<work>/02_synthesize/augmented.jsonl: one row per document, its
              `text` replacing all raw texts listed in `member_ids`, emitted once and whole)
              + synthesizer-tuning data x tuning_repeat (paper: 4)
  pairs_only  the synthesized pairs without the raw texts: per document, the usable pairs
              of its members in order (malformed ones dropped as templify drops them) as
              plain "Question: ...\nAnswer: ..." blocks, one text per document
  continual   instruction-augmented corpus from `base_model`, mixed with general
              instructions ("{question} {response}", BOS/EOS only, no chat template) at
              `general_ratio` of the tokens (paper: 1:1 = 0.5)
Arms start from a random Mistral `model` (init: scratch), except `continual`, and every
arm when init == base_model (domain continual pre-training: Vanilla PT-8B = vanilla arm);
arms that start from base_model use its tokenizer and mix in general instructions.
base_model may be `stage:03_pretrain/<arm>`: an arm of this same stage, trained first
(it must come earlier in `arms`). ci-tiny uses `stage:03_pretrain/vanilla`: the paper's
continual run starts from a model pre-trained on general raw text (Llama3-8B), and the
tiny vanilla arm is exactly that at tiny scale (a random init would not be "continual").
Its budget equals every other arm's (`train_tokens`), counted on top of the base's.

Other augmented corpora (ablations, paper Table 4): `arm_variants` maps a new arm name to
{recipe, augmented}: the arm follows the built-in recipe (instruct | pairs_only |
continual) with its augmented texts read from `augmented` ('' = this run's 02 output,
`variant:NAME` = <work>/02_synthesize/variants/NAME/augmented.jsonl written by the
synthesize.variants setting NAME, else a local JSONL path, e.g. another run's output):
    arms: [vanilla, instruct, pairs_only, instruct_1shot, instruct_rule]
    arm_variants:
      instruct_1shot: {recipe: instruct, augmented: "variant:one_shot"}
      instruct_rule: {recipe: instruct, augmented: "variant:rule_based"}
Such an arm has its own model (<work>/03_pretrain/<name>/model), loss curve and metrics;
04_instruct_tune and 05_evaluate take it by name like any other arm.

Seed replicas (intervals over seeds, params/cpu-effect.yaml): an arm named `<arm>_s<k>`
(k >= 1) follows <arm>'s recipe with seed run.seed + k for its init and document order (and
in stage 04 its example order); `<arm>` itself uses run.seed. Listed explicitly, they are
ordinary arms downstream.

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

Training: a plain torch loop driven by `accelerate` (one process here; FSDP across GPUs
with `accelerate_config`, see params/accelerate/): AdamW with decoupled weight decay,
linear warmup + cosine to min_lr_ratio, gradient clipping, gradient accumulation to
batch_tokens, bf16 autocast on GPU / fp32 on CPU, `attn_implementation` (sdpa default,
flash_attention_2 on GPUs with flash-attn installed), optional torch.compile (`compile`). Checkpoints every
`save_steps` (model, optimizer, step, log); a rerun resumes from the newest one with the
same data order and LR (both are pure functions of the step).

MFU of every arm: ipt_utils/flops.py (null on CPU).
"""
from __future__ import annotations

import contextlib
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from . import assets, io, launch as launcher, packing, templify
from .assets import ModelShape
from .flops import mfu
from .format import collection_example
from .launch import maybe_crash
from .packing import IGNORE
from .progress import bar
from .registry import ARMS, AUGMENTED_RECIPES, split_replica
from .schema import HUB_PREFIX, STAGE_PREFIX, TINY, hub_source, resolve_path, spec
from .synthesize import variant_augmented
from .templify import usable_pairs

ATTN_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "eager")
RENDER_VERSION = "render-4"  # part of the cache key of every source's texts (with templify.py's bytes)
TEMPLIFY_SRC = Path(__file__).resolve().parent / "templify.py"


@dataclass
class ArmVariant:
    """An extra arm: a built-in recipe fed by another augmented corpus (ablations, Table 4)."""

    recipe: str = spec(choices=AUGMENTED_RECIPES, help="which built-in arm's data recipe to follow")
    augmented: str = spec(help="'' = this run's 02 output; variant:NAME = <work>/02_synthesize/variants/"
                               "NAME/augmented.jsonl; else a local augmented JSONL path")


@dataclass
class Params:
    arms: list[str] = spec(help="data arms to pre-train, in order: built-in ARMS or keys of arm_variants; "
                                "<arm>_s<k> (k >= 1) is a seed replica of <arm> (seed run.seed + k)")
    arm_variants: dict[str, ArmVariant] = spec(help="extra arm name -> {recipe, augmented} "
                                                    "(e.g. instruct_1shot: {recipe: instruct, augmented: variant:one_shot})")
    raw_corpus: str = spec(kind="source", help="local .jsonl/.parquet/.txt {id, domain, text} or hf:NAME "
                                                 "(no id field: a hash of its text is its id, io.record_id)")
    synth_collection: str = spec(kind="source", help="synthesizer-tuning data {context, QA_list} (mix/instruct)")
    general_instructions: str = spec(kind="source", help="{question, response} rows mixed into base-model arms")
    tuning_repeat: int = spec(ge=0, help="times the tuning data appears in the mix/instruct pool (paper: 4)")
    general_ratio: float = spec(ge=0.0, lt=1.0, help="token share of general instructions for arms from base_model")
    init: str = spec(choices=("scratch", "base_model"), help="start of non-continual arms")
    base_model: str = spec(kind="model", help="start of `continual` (tiny = random stand-in)")
    model: ModelShape = spec(help="architecture of models trained from scratch")
    tokenizer: str = spec(kind="model", help="tiny | hf:NAME | local dir (scratch arms)")
    seq_len: int = spec(ge=16)
    train_tokens: int = spec(ge=1, help="token budget of every arm")
    batch_tokens: int = spec(ge=16, help="tokens per optimizer step (all devices, after accumulation)")
    micro_batch_size: int = spec(ge=1, help="sequences per device forward pass")
    learning_rate: float = spec(gt=0.0)
    min_lr_ratio: float = spec(ge=0.0, le=1.0, help="cosine floor as a fraction of learning_rate")
    warmup_ratio: float = spec(ge=0.0, lt=1.0)
    weight_decay: float = spec(ge=0.0)
    adam_beta1: float = spec(ge=0.0, lt=1.0)
    adam_beta2: float = spec(ge=0.0, lt=1.0)
    grad_clip: float = spec(ge=0.0, help="max global grad norm; 0 = off")
    save_steps: int = spec(ge=1, help="checkpoint interval (steps)")
    log_steps: int = spec(ge=1)
    gradient_checkpointing: bool = spec()
    num_proc: int = spec(ge=1, help="tokenization worker processes")
    chunk_docs: int = spec(ge=1, help="documents per streamed tokenization/packing chunk (bounds memory)")
    doc_mask: bool = spec(help="document-masked attention: positions restart at every <s> and no "
                               "token attends across a packed document boundary (sdpa/eager/flash_attention_2)")
    attn_implementation: str = spec(choices=ATTN_IMPLEMENTATIONS, help="attention kernel of trained models")
    compile: bool = spec(help="torch.compile the model (accelerate dynamo_backend=inductor)")
    accelerate_config: str = spec(kind="optpath", help="'' = train in-process; else an accelerate "
                                                       "config (e.g. params/accelerate/fsdp.yaml) to launch with")

    def __post_init__(self):
        if self.batch_tokens % self.seq_len:
            raise ValueError(f"batch_tokens {self.batch_tokens} is not a multiple of seq_len {self.seq_len}")
        if self.train_tokens < self.batch_tokens:
            raise ValueError(f"train_tokens {self.train_tokens} < batch_tokens {self.batch_tokens}")
        if len(set(self.arms)) != len(self.arms) or not self.arms:
            raise ValueError(f"arms must be a non-empty list without repeats, got {self.arms}")
        for name in self.arm_variants:
            if name in ARMS or not name.isidentifier() or split_replica(name)[1]:
                raise ValueError(f"arm_variants: {name!r} must be a new identifier (not one of {list(ARMS)}, "
                                 f"not ending in _s<number>: that names a seed replica)")
        unknown = [a for a in self.arms if split_replica(a)[0] not in ARMS and split_replica(a)[0] not in self.arm_variants]
        if unknown:
            raise ValueError(f"arms {unknown}: expected one of {list(ARMS)} or a key of arm_variants")
        base_arm = own_base_arm(self)
        if base_arm is not None:
            users = [a for a in self.arms if from_base(self, a)]
            if base_arm in users or (users and (base_arm not in self.arms
                                                or self.arms.index(base_arm) > self.arms.index(users[0]))):
                raise ValueError(f"base_model {self.base_model}: arm {base_arm!r} must be trained "
                                 f"before {users} (list it earlier in arms) and not start from itself")

    @property
    def steps(self) -> int:
        return self.train_tokens // self.batch_tokens

    @property
    def batch_seqs(self) -> int:
        return self.batch_tokens // self.seq_len


# =========================================================================== sources

def _located_rows(source: str, split: str = "train"):
    """(location, row) of a local .jsonl/.parquet/.txt file (file:line; invalid UTF-8 or JSON
    raises naming them) or a hub dataset (`hf:NAME` = all configs, or `hf:NAME:CONFIG`;
    NAME[config:split]#row), streamed in order (the same order on every call)."""
    if source.startswith(HUB_PREFIX):
        import datasets

        name, config = hub_source(source)
        # no config named: every config of the dataset (e.g. the synthesizer collection)
        configs = [config] if config else (datasets.get_dataset_config_names(name) or [None])
        for c in configs:
            # streamed: files are fetched as the rows are consumed, so a reader that stops early
            # (a token or step budget) never downloads the rest of a hub corpus
            for i, row in enumerate(datasets.load_dataset(name, c, split=split, streaming=True)):
                yield f"{name}[{c or 'default'}:{split}]#{i}", row
    else:
        yield from io.iter_local_records(resolve_path(source))


def _rows(source: str, split: str = "train"):
    """Rows of a source, streamed in order (see _located_rows)."""
    return (row for _, row in _located_rows(source, split))


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


def recipe_of(cfg: Params, arm: str) -> str:
    """The built-in recipe an arm follows (itself, or its arm_variants entry's recipe; a seed
    replica <arm>_s<k> follows <arm>'s)."""
    arm = split_replica(arm)[0]
    return arm if arm in ARMS else cfg.arm_variants[arm].recipe


def augmented_spec(cfg: Params, arm: str) -> str:
    arm = split_replica(arm)[0]
    return cfg.arm_variants[arm].augmented if arm in cfg.arm_variants else ""


def arm_seed(ctx, arm: str) -> int:
    """The seed of an arm's init and data order: run.seed, + k for a seed replica <arm>_s<k>."""
    return ctx.seed + split_replica(arm)[1]


def own_base_arm(cfg: Params) -> str | None:
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


def source_texts(ctx, cfg: Params, augmented: str = "") -> dict[str, SourceTexts]:
    """raw, tuning, instruct_corpus, pairs, general -> texts, streamed from their files.

    instruct_corpus = every augmented text, then the raw texts whose id was not converted:
    an arm reads it up to its token budget (prepare_arm), so all converted texts are in and
    the raw corpus only fills the rest (order is irrelevant otherwise: arms shuffle). Only
    the set of converted ids is held in memory. Each source's `info` counts what its
    iterator read (records, converted texts skipped). `augmented` picks the augmented corpus
    (see augmented_path).
    """
    def ident(src):
        return src if src.startswith(HUB_PREFIX) else resolve_path(src)

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
        for where, r in _located_rows(cfg.raw_corpus):
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
        for i, (where, r) in enumerate(_located_rows(cfg.synth_collection)):
            tuning_info["records_read"] += 1
            text = render_collection_record(r, i, ctx.seed)
            if text is None:
                tuning_info["records_malformed"] += 1
                tuning_info.setdefault("first_malformed", where)
                continue
            yield text

    def general():
        general_info.update(records_read=0, records_skipped=0)
        for r in _rows(cfg.general_instructions):
            general_info["records_read"] += 1
            text = render_general(r)
            if text is None:
                general_info["records_skipped"] += 1
                continue
            yield text

    return {
        "raw": SourceTexts("raw", [ident(cfg.raw_corpus), RENDER_VERSION], raw, raw_info),
        "tuning": SourceTexts("tuning", [ident(cfg.synth_collection), RENDER_VERSION, ctx.seed, TEMPLIFY_SRC], tuning,
                              tuning_info),
        "instruct_corpus": SourceTexts("instruct_corpus", [ident(cfg.raw_corpus), aug_id, RENDER_VERSION,
                                                           "augmented-first"], instruct_corpus, ic_info),
        "pairs": SourceTexts("pairs", [aug_id, RENDER_VERSION, TEMPLIFY_SRC], pairs, pairs_info),
        "general": SourceTexts("general", [ident(cfg.general_instructions), RENDER_VERSION], general, general_info),
    }


def from_base(cfg: Params, arm: str) -> bool:
    base = split_replica(arm)[0]
    return cfg.init == "base_model" or (base in ARMS or base in cfg.arm_variants) and recipe_of(cfg, arm) == "continual"


def arm_recipe(cfg: Params, arm: str) -> dict:
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

def arm_tokenizer_spec(cfg: Params, arm: str) -> str:
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


def mix_documents(sources: dict, recipe: dict, budget: int, seed: int):
    """Choose documents for one arm: returns (Docs in training order, per-source token counts).

    sources: name -> packing.Docs. In memory; prepare_arm streams the same plan to disk.
    """
    names, src, idx, counts = mix_plan({k: d.lengths for k, d in sources.items()}, recipe, budget, seed)
    return packing.gather([sources[n] for n in names], src, idx), counts


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


def prepare_arm(ctx, cfg: Params, arm: str, world_size: int = 1) -> ArmData:
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


def prepare_data(ctx, cfg: Params) -> dict[str, ArmData]:
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


# =========================================================================== model shape

def shape_of(model) -> ModelShape:
    c = model.config
    return ModelShape(hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                      num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads,
                      num_kv_heads=c.num_key_value_heads, max_position_embeddings=c.max_position_embeddings,
                      vocab_size=c.vocab_size)


# =========================================================================== training loop

@dataclass
class OptimConfig:
    learning_rate: float
    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0

    def lr_factor(self, step: int) -> float:
        """LR multiplier for optimizer step `step` (0-based): linear warmup, cosine decay."""
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class TrainResult:
    log: list  # rows {step, loss, lr, tokens}
    evals: list  # rows from eval_fn
    steps_done: int
    tokens: int  # tokens processed (all ranks) by the end
    step_seconds: float  # time spent in optimizer steps in this process's run (excludes ckpt/eval)
    completed: bool
    resumed_from: int


def make_optimizer(model, opt: OptimConfig):
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": opt.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=opt.learning_rate, betas=tuple(opt.betas))


def _latest_checkpoint(ckpt_dir: Path) -> Path | None:
    done = [p for p in ckpt_dir.glob("step-*") if (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def train_loop(model, batches: Callable, opt: OptimConfig, *, ckpt_dir: Path, save_steps: int,
               log_steps: int, tokens_per_step: int, accelerator=None, eval_fn: Callable | None = None,
               eval_steps: int = 0, stop_after: int | None = None, on_log: Callable | None = None):
    """Train `model` for opt.total_steps optimizer steps, resuming from ckpt_dir.

    batches(step, rank, world) -> list of micro-batches (dicts with input_ids, labels and
    optionally attention_mask), the same for a step on every call: data order is a pure
    function of the step, so a resumed run sees exactly the data an uninterrupted one would.
    eval_fn(model, step) -> list of rows, run at step 0, every eval_steps and at the end.
    stop_after: test hook simulating a crash right after that step (no checkpoint taken).
    Returns (TrainResult, unwrapped model, accelerator).
    """
    import torch
    from accelerate import Accelerator

    acc = accelerator or Accelerator()
    ckpt_dir = Path(ckpt_dir)
    optimizer = make_optimizer(model, opt)
    model, optimizer = acc.prepare(model, optimizer)
    state = {"step": 0, "log": [], "evals": []}
    resumed_from = 0
    latest = _latest_checkpoint(ckpt_dir)
    if latest is not None:
        acc.load_state(str(latest))
        state = io.read_json(latest / "trainer_state.json")
        resumed_from = state["step"]
    model.train()
    step_seconds = 0.0

    def run_eval(step):
        if eval_fn is None:
            return
        model.eval()
        with torch.no_grad():
            rows = eval_fn(acc.unwrap_model(model), step)
        model.train()
        state["evals"].extend(rows)

    def save(step):
        out = ckpt_dir / f"step-{step:07d}"
        acc.save_state(str(out))
        acc.wait_for_everyone()  # every rank's shards are written before the checkpoint counts
        if acc.is_main_process:
            io.write_json(out / "trainer_state.json", state)
            for old in ckpt_dir.glob("step-*"):
                if old != out:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    progress = bar(total=opt.total_steps, initial=state["step"], desc=f"train {ckpt_dir.parent.name}",
                   unit="step", disable=not acc.is_main_process)
    if state["step"] == 0 and not state["evals"]:
        run_eval(0)
    while state["step"] < opt.total_steps:
        step = state["step"]
        t0 = time.perf_counter()
        lr = opt.learning_rate * opt.lr_factor(step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        micro = batches(step, acc.process_index, acc.num_processes)
        n_items = sum(int((m["labels"][:, 1:] != IGNORE).sum()) for m in micro)
        loss_sum = torch.zeros((), device=acc.device)
        for i, m in enumerate(micro):
            m = {k: v.to(acc.device) for k, v in m.items()}
            sync = acc.no_sync(model) if i < len(micro) - 1 else contextlib.nullcontext()
            with sync, acc.autocast():
                out = model(**m, num_items_in_batch=max(1, n_items), use_cache=False)
            acc.backward(out.loss)
            loss_sum += out.loss.detach()
        if opt.grad_clip > 0:
            acc.clip_grad_norm_(model.parameters(), opt.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss = acc.reduce(loss_sum, reduction="mean").item()
        step_seconds += time.perf_counter() - t0
        state["step"] = step = step + 1
        progress.update(1)
        progress.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if step % log_steps == 0 or step == opt.total_steps:
            row = {"step": step, "loss": loss, "lr": lr, "tokens": step * tokens_per_step}
            state["log"].append(row)
            if on_log:
                on_log(row)
        if eval_fn is not None and (step == opt.total_steps or (eval_steps and step % eval_steps == 0)):
            run_eval(step)
        if stop_after is not None and step >= stop_after:
            break
        if step % save_steps == 0 and step < opt.total_steps:
            save(step)
            maybe_crash(step)
    progress.close()
    completed = state["step"] >= opt.total_steps
    return TrainResult(log=state["log"], evals=state["evals"], steps_done=state["step"],
                       tokens=state["step"] * tokens_per_step, step_seconds=step_seconds,
                       completed=completed, resumed_from=resumed_from), acc.unwrap_model(model), acc


def make_accelerator(ctx, compile: bool = False):
    """bf16 autocast (fp32 master weights) when the run's dtype is bf16 on GPU; fp32 on CPU.
    compile: torch.compile the prepared model (dynamo backend inductor)."""
    import torch
    from accelerate import Accelerator

    mp = "bf16" if ctx.device == "cuda" and ctx.torch_dtype == torch.bfloat16 else "no"
    return Accelerator(mixed_precision=mp, cpu=ctx.device == "cpu", dynamo_backend="inductor" if compile else "no")


def save_final(acc, model, tokenizer, out_dir: Path, to_plain: Callable | None = None) -> Path:
    """Save the trained model with its tokenizer (safetensors, atomically). Every rank must call it.

    Distributed (FSDP): a full state dict is gathered on ALL ranks (a collective; saving the
    sharded model from rank 0 alone fails), then the main process writes it.
    to_plain(model, state_dict) -> the model to save, on the main process (e.g. LoRA merged);
    state_dict is None in one process, else the gathered full weights.
    """
    from accelerate.utils import DistributedType

    # FSDP gathers even in one process (a one-GPU launch still wraps the model)
    if acc.num_processes == 1 and acc.distributed_type != DistributedType.FSDP:
        return assets.save_model(to_plain(model, None) if to_plain else model, tokenizer, out_dir)
    state_dict = acc.get_state_dict(model)
    if acc.is_main_process:
        if to_plain is not None:
            assets.save_model(to_plain(acc.unwrap_model(model), state_dict), tokenizer, out_dir)
        else:
            assets.save_model(acc.unwrap_model(model), tokenizer, out_dir, state_dict=state_dict)
    acc.wait_for_everyone()
    return Path(out_dir)


def write_loss_csv(path: Path, log: list) -> Path:
    with io.atomic_open(path) as f:
        f.write("step,loss,lr,tokens\n")
        for r in log:
            f.write(f"{r['step']},{r['loss']:.6f},{r['lr']:.6g},{r['tokens']}\n")
    return path


# =========================================================================== pre-training

def init_model(ctx, cfg: Params, arm: str, tokenizer, acc=None):
    """A fresh model (shared seeded init across arms) or the base model, fp32 weights,
    cfg.attn_implementation (sdpa | flash_attention_2 | eager).

    acc: the run's accelerator. Launched, the init model is built and saved by the main
    process only while the others wait (ranks racing to replace the init dir crashed); then
    every rank loads it.
    """
    import torch
    from transformers import AutoModelForCausalLM

    attn = getattr(cfg, "attn_implementation", "sdpa")
    if from_base(cfg, arm) and cfg.base_model != TINY:
        return AutoModelForCausalLM.from_pretrained(
            assets.resolve_model(ctx, cfg.base_model), dtype=torch.float32, attn_implementation=attn,
            use_safetensors=True, trust_remote_code=False)
    seed = arm_seed(ctx, arm)
    init_dir = ctx.work / "init" / _init_key(cfg, tokenizer, seed)
    with acc.main_process_first() if acc is not None else contextlib.nullcontext():
        if not (init_dir / "config.json").exists():
            assets.build_tiny_model(init_dir, cfg.model, tokenizer, seed=seed)
            print(f"[pretrain] built the init model {init_dir}", flush=True)
    return AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32, attn_implementation=attn)


def _init_key(cfg: Params, tokenizer, seed: int) -> str:
    return packing.cache_key(asdict(cfg.model), packing.tokenizer_fingerprint(tokenizer), seed)


def pretrain_batches(rows, batch_seqs: int, micro_batch_size: int, bos: int, pad: int,
                     doc_mask: bool = False, flatten: bool = False):
    """batches(step, rank, world): rows [step*B, (step+1)*B) split over ranks and micro-batches.

    doc_mask: add position_ids restarting at every <s> (and row start) and no attention
    mask, so transformers masks attention across documents (block-diagonal causal mask on
    sdpa/eager). flatten (flash_attention_2): each micro-batch becomes one [1, B*T] row whose
    position_ids mark the documents, which FA2 runs as varlen sequences; the label of each
    row's first token is ignored so the targets equal the unflattened ones.
    """
    import numpy as np
    import torch

    def batches(step, rank, world):
        per_rank = batch_seqs // world
        start = step * batch_seqs + rank * per_rank
        block = np.asarray(rows[start:start + per_rank], dtype=np.int64)
        out = []
        for i in range(0, per_rank, micro_batch_size):
            ids = torch.from_numpy(block[i:i + micro_batch_size])
            m = {"input_ids": ids, "labels": packing.labels_for(ids, bos, pad)}
            if doc_mask:
                m["position_ids"] = packing.position_ids_for(ids, bos)
                if flatten:
                    m["labels"][:, 0] = IGNORE
                    m = {k: v.reshape(1, -1) for k, v in m.items()}
            out.append(m)
        return out

    return batches


def train_arm(ctx, cfg: Params, data: ArmData, *, stop_after: int | None = None, accelerator=None) -> dict:
    """Pre-train one arm (resuming if a checkpoint exists); returns its metrics."""
    import torch

    arm = data.arm
    arm_dir = ctx.work / arm
    done = arm_dir / "done.json"
    run_key = _arm_key(ctx, cfg, data)
    prev = finished_arm(ctx, arm, arm_dir, run_key)
    if prev:  # finished earlier: its loss log is restored, do not retrain
        return prev["metrics"]
    t0 = time.time()
    tok = load_tokenizer(ctx, data.tokenizer)
    bos, eos, pad = special_ids(tok)
    acc = accelerator or make_accelerator(ctx, compile=cfg.compile)
    if acc.num_processes > 1 and cfg.batch_seqs % (acc.num_processes * cfg.micro_batch_size):
        raise ValueError(f"batch of {cfg.batch_seqs} sequences does not split over "
                         f"{acc.num_processes} devices x micro_batch_size {cfg.micro_batch_size}")
    torch.manual_seed(arm_seed(ctx, arm))
    model = init_model(ctx, cfg, arm, tok, acc)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    opt = OptimConfig(learning_rate=cfg.learning_rate, total_steps=cfg.steps,
                      warmup_steps=int(cfg.warmup_ratio * cfg.steps), min_lr_ratio=cfg.min_lr_ratio,
                      weight_decay=cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2),
                      grad_clip=cfg.grad_clip)
    ckpt_dir = arm_dir / f"ckpt-{run_key}"
    res, model, acc = train_loop(
        model, pretrain_batches(data.rows(), cfg.batch_seqs, cfg.micro_batch_size, bos, pad, doc_mask=cfg.doc_mask,
                                flatten=cfg.attn_implementation == "flash_attention_2"), opt,
        ckpt_dir=ckpt_dir, save_steps=cfg.save_steps, log_steps=cfg.log_steps,
        tokens_per_step=cfg.batch_tokens, accelerator=acc, stop_after=stop_after)
    if acc.is_main_process:
        write_loss_csv(ctx.stage_dir / f"loss_{arm}.csv", res.log)
    steps_run = res.steps_done - res.resumed_from
    tps = steps_run * cfg.batch_tokens / res.step_seconds if res.step_seconds > 0 else 0.0
    device_name = torch.cuda.get_device_name(0) if acc.device.type == "cuda" else None
    metrics = {
        "final_loss": res.log[-1]["loss"] if res.log else None,
        "tokens": res.tokens,
        "steps": res.steps_done,
        "tokens_per_s": round(tps, 1),
        "mfu": mfu(tps, shape_of(model), model.config.vocab_size, cfg.seq_len, device_name, acc.num_processes),
        "packing_efficiency": data.efficiency,
        "source_tokens": data.source_tokens,
        "sources_read": data.sources,  # per source: token cap, records/documents read and used
        "augmented": data.augmented,  # augmented texts' share of the arm's tokens
        "wall_s": round(time.time() - t0, 2),
        "resumed_from": res.resumed_from,
        "device": device_name or "cpu",
        "n_devices": acc.num_processes,
    }
    if not res.completed:
        metrics["completed"] = False
        acc.free_memory()
        return metrics
    save_final(acc, model, tok, arm_dir / "model")
    if acc.is_main_process:
        io.write_json(done, {"key": run_key, "metrics": metrics, "log": res.log})
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    acc.free_memory()  # drop the accelerator's references to this arm's model/optimizer
    return metrics


RUN_ONLY_KEYS = ("arms", "arm_variants", "num_proc", "chunk_docs", "accelerate_config", "log_steps", "save_steps")


def finished_arm(ctx, arm: str, arm_dir: Path, key: str) -> dict | None:
    """The done.json of an arm trained earlier with the same key (its loss log is restored
    into the stage dir), or None when the arm must be (re)trained."""
    done = arm_dir / "done.json"
    if not (done.exists() and (arm_dir / "model" / "config.json").exists()):
        return None
    prev = io.read_json(done)
    if prev.get("key") != key:
        return None
    write_loss_csv(ctx.stage_dir / f"loss_{arm}.csv", prev.get("log", []))
    return prev


def _arm_key(ctx, cfg: Params, data: ArmData) -> str:
    """What decides an arm's trained model: its data (packed file name = content key),
    tokenizer, seed, device/dtype and every training parameter (not which other arms run)."""

    params = {k: v for k, v in asdict(cfg).items() if k not in RUN_ONLY_KEYS}
    base = None  # the weights an arm starts from when they are not built from config
    if from_base(cfg, data.arm) and cfg.base_model != TINY and not cfg.base_model.startswith(HUB_PREFIX):
        base = assets.model_fingerprint(assets.resolve_model(ctx, cfg.base_model))
    return packing.cache_key(params, data.path.name, arm_seed(ctx, data.arm), data.tokenizer, ctx.run.device,
                             ctx.run.dtype, base)


def train_arms(ctx, cfg: Params, data: dict[str, ArmData]) -> dict:
    """Train every arm in-process, or launch `accelerate launch` when accelerate_config is set."""
    if cfg.accelerate_config:
        return launch(ctx, cfg)
    return {"arms": {arm: train_arm(ctx, cfg, d) for arm, d in data.items()}}


def loss_frame(ctx, cfg: Params):
    import pandas as pd

    frames = []
    for arm in cfg.arms:
        path = ctx.stage_dir / f"loss_{arm}.csv"
        if path.exists():
            frames.append(pd.read_csv(path).assign(arm=arm))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["step", "loss", "lr", "tokens", "arm"])


def plot_losses(ctx, cfg: Params):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = loss_frame(ctx, cfg)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for arm, g in df.groupby("arm", sort=False):
        ax.plot(g["tokens"], g["loss"], label=arm)
    ax.set_xlabel("tokens")
    ax.set_ylabel("training loss")
    ax.set_title(f"03 pre-training ({ctx.profile})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(ctx.stage_dir / "loss.png", dpi=120)
    return fig


def metrics_frame(metrics: dict):
    import pandas as pd

    cols = ["final_loss", "tokens", "tokens_per_s", "mfu", "packing_efficiency", "wall_s"]
    return pd.DataFrame([{"arm": a, **{c: m.get(c) for c in cols}} for a, m in metrics["arms"].items()])


# =========================================================================== multi-GPU launch

def launch(ctx, cfg: Params) -> dict:
    """Run `accelerate launch --config_file <accelerate_config> -m ipt_utils.pretrain
    <work>/03_pretrain/launch.json` (ipt_utils.launch) and read back the metrics."""
    return launcher.launch(ctx, "pretrain", cfg, cfg.accelerate_config, "ipt_utils.pretrain")


def main(argv=None) -> int:
    """Entry point of a launched (possibly multi-process) pre-training: python -m ipt_utils.pretrain SPEC."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec", help="launch.json written by ipt_utils.pretrain.launch")
    args = ap.parse_args(argv)
    with launcher.record_errors(args.spec):
        ctx, cfg = launcher.open_from_spec(args.spec, "03_pretrain", "pretrain")
        launcher.distributed_state()
        acc = make_accelerator(ctx, compile=cfg.compile)
        with acc.main_process_first():
            data = prepare_data(ctx, cfg)
        metrics = {"arms": {arm: train_arm(ctx, cfg, d, accelerator=acc) for arm, d in data.items()}}
        if acc.is_main_process:
            io.write_json(ctx.work / "launch_metrics.json", metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
