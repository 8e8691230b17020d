"""Stage 02's multi-round (M-shot) synthesis algorithm, pure: texts in, synthesized examples out.

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

`synthesize_texts` takes a tokenizer with encode/decode and a
`generate(list[token ids]) -> list[GenOut | str]` function (ipt_utils.generation.Engine,
the rule-based engine, or a test's fake); it reads and writes no file.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

from .format import build_prompt, encode_markup, neutralise, parse_pairs_with_stats, render_context


@dataclass
class RawText:
    id: str
    domain: str
    text: str  # the record's text (io.record_text), as the pre-training documents carry it
    neutralised: bool = False  # its prompt copy needed neutralising (format.neutralise)


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
