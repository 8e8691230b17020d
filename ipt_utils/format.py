"""The instruction synthesizer's markup, byte-for-byte as released (docs/PAPER.md §3).

    context  = "<s> <CON> {text} </CON>\\n\\n"      ("<s>" alone for an empty text)
    pair     = "<QUE> {instruction} <ANS> {response} </END>"   (pairs joined by "\\n\\n")
    example  = context + pairs + "</s>"
    prompt   = history examples (oldest first) + the new text's context

BOS decision: prompts are *strings* that start with the literal "<s>". `encode_markup`
turns each literal "<s>" / "</s>" of the rendered markup into the tokenizer's BOS / EOS id
and tokenizes everything between as text (split_special_tokens), and the engines get token
ids, so exactly one BOS starts every prompt and no text can add another. On Mistral-kind
tokenizers (and the tiny one) this is byte-identical to tokenizing the whole string with
the literals parsed (tested). (Upstream hands the string to vLLM, whose tokenizer adds a
second BOS.)

Neutralisation is for the synthesizer's markup only: a raw text that spells `<CON>`,
`</END>` or `<s>` would break the prompt's structure, so `neutralise` makes the copy that
enters a prompt or a tuning example (stages 01 and 02) inert. The pre-training documents of
every arm carry the raw text's own bytes (stage 03 reads text as text; docs/TEXT.md).
"""
from __future__ import annotations

import re
from typing import Iterable, NamedTuple, Sequence

from .packing import encode_texts

BOS, EOS = "<s>", "</s>"
CON, CON_END = "<CON>", "</CON>"
QUE, ANS, END = "<QUE>", "<ANS>", "</END>"
MARKUP = (BOS, EOS, CON, CON_END, QUE, ANS, END)
# U+2039 SINGLE LEFT-POINTING ANGLE QUOTATION MARK: looks like "<", tokenizes differently.
LOOKALIKE_LT = "\u2039"


class Pair(NamedTuple):
    instruction: str
    response: str


class ParseStats(NamedTuple):
    items: int  # complete items (ended by </END>)
    kept: int
    malformed: int  # not exactly one <ANS>, no leading <QUE>, or an empty part
    duplicates: int  # repeated instruction (case-insensitive)


_BOS_EOS = re.compile(f"({re.escape(BOS)}|{re.escape(EOS)})")


def encode_markup(tokenizer, rendered: str) -> list[int]:
    """Token ids of a rendered prompt or example: its literal "<s>" / "</s>" become the
    tokenizer's BOS / EOS ids, the rest is tokenized as text (no special token parsed out of
    it). The texts inside must be neutralised, so that every "<s>" / "</s>" is the renderer's."""
    pieces = _BOS_EOS.split(rendered)
    special = {BOS: tokenizer.bos_token_id, EOS: tokenizer.eos_token_id}
    texts = [p for p in pieces if p and p not in special]
    encoded = iter(encode_texts(tokenizer, texts) if texts else [])
    ids: list[int] = []
    for p in pieces:
        if p in special:
            ids.append(special[p])
        elif p:
            ids.extend(next(encoded))
    return ids


def collection_example(rec: dict) -> tuple[str, list[Pair]] | None:
    """(context, pairs) of a synthesizer-tuning record {context, QA_list[{Q, A}]}, stripped;
    None when it is malformed (no context string, no pairs, a pair without a non-empty Q and
    A string): stages 01 and 03 skip and count such records."""
    pairs = rec.get("QA_list")
    if not (isinstance(rec.get("context"), str) and isinstance(pairs, list) and pairs):
        return None
    if not all(isinstance(p, dict) and isinstance(p.get("Q"), str) and isinstance(p.get("A"), str)
               and p["Q"].strip() and p["A"].strip() for p in pairs):
        return None
    return rec["context"].strip(), [Pair(p["Q"].strip(), p["A"].strip()) for p in pairs]


def render_context(text: str) -> str:
    return BOS if not text else f"{BOS} {CON} {text} {CON_END}\n\n"


def render_pair(pair: Sequence[str]) -> str:
    instruction, response = pair
    return f"{QUE} {instruction} {ANS} {response} {END}"


def render_pairs(pairs: Iterable[Sequence[str]]) -> str:
    return "\n\n".join(render_pair(p) for p in pairs)


def render_example(text: str, pairs: Iterable[Sequence[str]]) -> str:
    """A complete example: what the synthesizer is tuned on and what history holds."""
    return render_context(text) + render_pairs(pairs) + EOS


def build_prompt(text: str, history: Iterable[tuple[str, Sequence[Sequence[str]]]] = ()) -> str:
    """History examples (text, pairs), oldest first, then the new text's context."""
    return "".join(render_example(t, p) for t, p in history) + render_context(text)


def parse_pairs_with_stats(generated: str) -> tuple[list[Pair], ParseStats]:
    """Parse a synthesizer continuation (docs/PAPER.md §3).

    Split on </END>; the piece after the last </END> is unfinished and dropped. An
    item is kept when it has exactly one <ANS>, its question part starts with <QUE>,
    and both instruction and response are non-empty after stripping (an empty
    instruction is rejected too: it would train on a question-less pair). Duplicate
    instructions (case-insensitive) keep the first.
    """
    pieces = generated.split(END)[:-1]
    pairs: list[Pair] = []
    seen: set[str] = set()
    malformed = duplicates = 0
    for item in pieces:
        item = item.strip()
        if item.count(ANS) != 1:
            malformed += 1
            continue
        question, answer = (s.strip() for s in item.split(ANS))
        if not question.startswith(QUE):
            malformed += 1
            continue
        instruction = question[len(QUE):].strip()
        if not instruction or not answer:
            malformed += 1
            continue
        key = instruction.lower()
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        pairs.append(Pair(instruction, answer))
    return pairs, ParseStats(len(pieces), len(pairs), malformed, duplicates)


def parse_pairs(generated: str) -> list[Pair]:
    return parse_pairs_with_stats(generated)[0]


def neutralise(text: str) -> tuple[str, bool]:
    """Replace the "<" of every markup token in `text` with a lookalike; -> (text, changed)."""
    out = text
    for tok in MARKUP:
        if tok in out:
            out = out.replace(tok, LOOKALIKE_LT + tok[1:])
    return out, out != text
