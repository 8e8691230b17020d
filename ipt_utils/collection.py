"""Stage 01's data: the synthesizer-tuning collection read, checked, split and encoded.

Records (context, QA_list[{Q, A}], QA_type, rc_name) are read through ipt_utils/sources.py;
malformed ones are skipped and counted, contexts and pairs neutralised as in stage 02's prompts;
examples are split per dataset (whole datasets held out for the unseen evaluation), encoded
exactly as the synthesizer reads them at inference (loss only on the pairs and the closing
`</s>`), and concatenated per dataset into few-shot training sequences. `cfg` is stage 01's
Params (ipt_utils/synth_tune.py).
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from . import sources
from .format import BOS, EOS, Pair, collection_example, neutralise, render_context, render_example
from .packing import IGNORE, check_text_only, encode_texts, right_pad
from .schema import HUB_PREFIX, hub_source


@dataclass
class Example:
    dataset: str
    context: str
    pairs: list  # list[format.Pair]
    qa_type: str


def load_collection(cfg) -> tuple[list[Example], dict]:
    """Read the collection; malformed records (format.collection_example) are skipped and
    counted, never fatal; invalid UTF-8 / JSON in a local file is refused with file and line.

    Contexts and pairs are neutralised (counted as records_neutralised): an example is the
    synthesizer's markup, and a context spelling `</CON>` or `<s>` must not end it early or
    forge a control token; stage 02 neutralises the texts of its prompts the same way, so the
    model is tuned on what it reads at inference."""
    stats = defaultdict(int)
    wanted = set(cfg.datasets)
    examples = []
    for where, rec in _iter_records(cfg):
        stats["records_read"] += 1
        example = collection_example(rec)
        if example is None:
            stats["records_malformed"] += 1
            stats.setdefault("first_malformed", where)
            continue
        name = str(rec.get("rc_name") or "unknown")
        if wanted and name not in wanted:
            continue
        context, changed = neutralise(example[0])
        pairs = []
        for q, a in example[1]:
            (q, cq), (a, ca) = neutralise(q), neutralise(a)
            pairs.append(Pair(q, a))
            changed = changed or cq or ca
        stats["records_neutralised"] += changed
        examples.append(Example(name, context, pairs, str(rec.get("QA_type", ""))))
    return examples, dict(stats)


def _iter_records(cfg):
    if not cfg.data.startswith(HUB_PREFIX):
        yield from sources.located_records(cfg.data)
        return
    if not cfg.datasets:
        raise ValueError("synth_tune.datasets must list the hub configs to load")
    if hub_source(cfg.data)[1]:  # one config in data and a list in datasets would read it once per name
        raise ValueError(f"synth_tune.data {cfg.data!r} names a config: give the bare hf:NAME and list "
                         f"the configs in synth_tune.datasets")
    for config in cfg.datasets:
        for where, rec in sources.located_records(cfg.data, configs=[config]):
            # the config the profile names is the dataset's name (a record's own rc_name may differ)
            yield where, {**rec, "rc_name": config}


def split_examples(examples: list[Example], cfg, seed: int):
    """-> (train, eval_seen, eval_unseen). Cap per dataset preferring contexts with most pairs."""
    by_ds: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_ds[ex.dataset].append(ex)
    train, seen, unseen = [], [], []
    for name in sorted(by_ds):
        group = sorted(by_ds[name], key=lambda e: -len(e.pairs))  # stable: ties keep file order
        if name in cfg.heldout_datasets:
            unseen.extend(group[: max(cfg.eval_per_dataset, 1)])
            continue
        rng = random.Random(f"{seed}:{name}")
        held = set(rng.sample(range(len(group)), min(cfg.eval_per_dataset, len(group) // 5)))
        seen.extend(e for i, e in enumerate(group) if i in held)
        train.extend([e for i, e in enumerate(group) if i not in held][: cfg.max_per_dataset])
    return train, seen, unseen


def encode_example(tokenizer, ex: Example) -> tuple[list[int], list[int]]:
    """Token ids and labels of one rendered example; only pairs + `</s>` carry loss.

    The ids are exactly those of the example as a history example in a synthesis prompt
    (format.encode_markup of format.build_prompt), so the model is tuned on the tokens it
    later reads: the example's leading `<s>` and closing `</s>` are the tokenizer's BOS/EOS
    ids placed here, everything between is one piece tokenized as text (no special token
    parsed out of the collection's texts). The loss mask starts at the first token that
    begins after the rendered context (character offsets; without a fast tokenizer, the
    longest shared prefix with the context's own tokens)."""
    text, ctx = render_example(ex.context, ex.pairs), render_context(ex.context)
    body, ctx_body = text[len(BOS):-len(EOS)], ctx[len(BOS):]  # rendered examples are <s> ... </s>
    check_text_only(tokenizer)
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(body, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=fast)
    ids = list(enc["input_ids"])
    if fast:
        n = next((i for i, (a, b) in enumerate(enc["offset_mapping"]) if a >= len(ctx_body) and b > a), len(ids))
    else:
        ctx_ids = encode_texts(tokenizer, [ctx_body])[0]
        n = 0
        while n < min(len(ctx_ids), len(ids)) and ids[n] == ctx_ids[n]:
            n += 1
    ids = [tokenizer.bos_token_id] + ids + [tokenizer.eos_token_id]
    return ids, [IGNORE] * (n + 1) + ids[n + 1:]


def build_sequences(tokenizer, train: list[Example], max_len: int, seed: int):
    """Concatenate encoded examples of the same dataset up to max_len (few-shot sequences).

    Returns (sequences, stats); each sequence is a dict of input_ids/labels lists.
    An example longer than max_len on its own is skipped and counted.
    """
    by_ds: dict[str, list[Example]] = defaultdict(list)
    for ex in train:
        by_ds[ex.dataset].append(ex)
    seqs, stats = [], defaultdict(int)
    for name in sorted(by_ds):
        group = by_ds[name][:]
        random.Random(f"{seed}:{name}:order").shuffle(group)
        ids, labels = [], []
        for ex in group:
            e_ids, e_lab = encode_example(tokenizer, ex)
            if len(e_ids) > max_len:
                stats["examples_too_long"] += 1
                continue
            if len(ids) + len(e_ids) > max_len:
                seqs.append({"input_ids": ids, "labels": labels, "dataset": name})
                ids, labels = [], []
            ids, labels = ids + e_ids, labels + e_lab
            stats["examples_used"] += 1
        if ids:
            seqs.append({"input_ids": ids, "labels": labels, "dataset": name})
    random.Random(seed).shuffle(seqs)
    stats["sequences"] = len(seqs)
    stats["tokens"] = sum(len(s["input_ids"]) for s in seqs)
    stats["loss_tokens"] = sum(sum(1 for x in s["labels"] if x != IGNORE) for s in seqs)
    return seqs, dict(stats)


def data_collator(tokenizer):
    """The Trainer's collator. Mistral's and Llama-3's tokenizers have no pad token: pad with
    EOS then (padding is masked from attention and loss, so any id serves)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return lambda batch: collate(batch, pad)


def collate(batch, pad_id: int):
    """The Trainer's batch of sequences (dicts of input_ids/labels), right-padded (packing.right_pad)."""
    return right_pad([(b["input_ids"], b["labels"]) for b in batch], pad_id)
