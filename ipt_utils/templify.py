"""Turn synthesized (text, pairs) chains into pre-training text (NOTES.md section 5).

Structure follows the paper; the wording of every pattern is our own.

- A *chain* is a run of texts linked by inheritance (each one was prompted with the
  previous one); it becomes one few-shot document. Each member is rendered as one
  piece; the document is the members' pieces joined by "\\n\\n" in chain order.
- Per chain one seeded RNG picks an option style (lead-in string, item labels, item
  separator, an "unanswerable" phrase) and the document layout:
  if some member has < 2 pairs: classic 95% / dialog 5%; else classic 80% and
  dialog, numbered, inline few-shot, next-turn dialog 5% each. Independently, 5% of
  documents put the pairs before the text ("+pairs_first").
- Each pair is parsed into a mode: plain, options, cot, options+cot. Options are
  shuffled and the answer is mapped to its label when the labels are distinct and
  the answer matches exactly one option; "none of the above"-style answers become
  the chain's unanswerable phrase.
- A text without pairs is emitted as its raw text (mode/layout "raw").

Deterministic: same seed and chain id -> same output (string seeds hash stably).
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

PLAIN, OPTIONS, COT, OPTIONS_COT, RAW = "plain", "options", "cot", "options+cot", "raw"
LAYOUTS = ("classic", "dialog", "numbered", "inline", "next_turn")

OPTIONS_MARK = "\nOptions:\n"
COT_TRIGGER = "Let's think step by step."
COT_ANSWER = "\nTherefore, the answer is"

# ---------------------------------------------------------------- pattern pools
# Text lead-ins: half are the bare text.
TEXT_PATTERNS = (
    "{text}", "{text}", "{text}", "{text}", "{text}", "{text}", "{text}", "{text}",
    "Read the passage below.\n\n{text}",
    "Here is a short text:\n{text}",
    "Passage:\n{text}",
    "Consider the following material.\n{text}",
    "Background reading:\n\n{text}",
    "Text:\n{text}",
    "Use this article to answer the questions that follow.\n\n{text}",
    "Study the excerpt.\n{text}",
)
# Classic question/answer wrappers.
QA_PATTERNS = (
    "{q}\n{a}",
    "Question: {q}\nAnswer: {a}",
    "Q: {q}\nA: {a}",
    "{q}\nAnswer: {a}",
    "{q}\n\n{a}",
    "Question: {q}\n{a}",
    "{q}\nResponse: {a}",
    "Query: {q}\nReply: {a}",
    "Task: {q}\nSolution: {a}",
    "Based on the text, {q}\n{a}",
    "Answer using the passage. {q}\n{a}",
    "{q}\nThe answer: {a}",
    "Input: {q}\nOutput: {a}",
    "Problem: {q}\nAnswer: {a}",
    "{q}\nMy answer: {a}",
    "Here is a question about the text. {q}\n{a}",
    "Instruction: {q}\nResponse: {a}",
    "Try this one: {q}\n{a}",
    "{q}\nReply: {a}",
    "Please answer. {q}\n{a}",
)
# Lead-ins before the option list, and how a chosen label is reported.
OPTION_LEADS = (
    "\nOptions:\n", "\nChoices:\n", "\nPick one of the following:\n", "\nPossible answers:\n",
    "\nSelect from:\n", "\n\n", "\nAnswer choices:\n", "\nWhich is right?\n",
    "\nCandidates:\n", "\nChoose one:\n",
)
OPTION_ANSWERS = ("{label}", "{label}", "{label}. {text}", "The answer is {label}.",
                  "{label}: {text}", "{text}")
# Item label schemes: (label sequence, template); `None` sequence = bullets (no labels).
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii")
LABEL_SCHEMES = (
    (_UPPER, "{}."), (_UPPER, "({})"), (_UPPER, "{})"), (_UPPER, "[{}]"),
    (_UPPER.lower(), "({})"), (_UPPER.lower(), "{})"), (_ROMAN, "{}."), (_ROMAN, "({})"),
    ("123456789", "{}."), ("123456789", "{})"), (None, "-"), (None, "*"),
)
ITEM_SEPARATORS = ("\n", "\n", "\n", " ", "; ")
UNANSWERABLE = (
    "none of the above", "It cannot be determined from the text.", "not enough information",
    "The passage does not say.", "unanswerable", "no answer is given",
    "It is impossible to tell.", "unknown",
)
NONE_ANSWERS = re.compile(
    r"^(none of the (above|options|choices)|not enough information|cannot be determined|"
    r"can't be determined|unanswerable|unknown|no answer|not (stated|mentioned|given))\.?$",
    re.IGNORECASE)
# Chain-of-thought: what asks for reasoning, and how the rationale ends.
COT_TRIGGERS = (
    "Let's think step by step.", "Reason it out first.", "Explain your reasoning.",
    "Think it through before answering.", "Show your work.", "Walk through the logic.",
    "Give the rationale, then the answer.", "Work it out step by step.",
    "Justify your answer.", "First reason, then answer.",
)
COT_ENDINGS = (
    "So the answer is {a}.", "Therefore, the answer is {a}.", "Hence: {a}.",
    "The final answer: {a}.", "That gives {a}.", "Thus the answer is {a}.",
    "So, {a}.", "In the end: {a}.", "Answer: {a}.", "This leads to {a}.",
)
DIALOG_ROLES = (("User", "Assistant"), ("Human", "AI"), ("Person A", "Person B"),
                ("Student", "Teacher"), ("Q", "A"), ("Reader", "Expert"))
NUMBERED_PATTERNS = (
    "Question {n}: {q}\nAnswer {n}: {a}", "Q{n}. {q}\nA{n}. {a}", "{n}. {q}\n{a}",
    "({n}) {q}\nAnswer: {a}", "Problem {n}: {q}\nSolution {n}: {a}",
)
INLINE_PATTERNS = ("{q} {a}", "Q: {q} A: {a}", "{q} -> {a}", "{q} Answer: {a}",
                   "{q} => {a}", "Question: {q} Answer: {a}")


# ---------------------------------------------------------------- pair parsing

@dataclass
class OptionStyle:
    lead: str
    labels: Sequence[str] | None
    label_tpl: str
    separator: str
    answer_tpl: str
    unanswerable: str

    def label(self, i: int) -> str:
        if self.labels is None:
            return self.label_tpl
        return self.label_tpl.format(self.labels[i])

    @property
    def unique(self) -> bool:
        return self.labels is not None


def pick_option_style(rng: random.Random) -> OptionStyle:
    labels, tpl = rng.choice(LABEL_SCHEMES)
    return OptionStyle(rng.choice(OPTION_LEADS), labels, tpl, rng.choice(ITEM_SEPARATORS),
                       rng.choice(OPTION_ANSWERS), rng.choice(UNANSWERABLE))


@dataclass
class ParsedPair:
    mode: str
    question: str  # stem (without options / CoT trigger)
    answer: str  # final answer (without rationale)
    options: list[str]
    rationale: str
    raw: tuple[str, str]


def parse_pair(instruction: str, response: str) -> ParsedPair:
    """Detect options ("\\nOptions:\\n- a\\n- b") and CoT (trigger + "Therefore, the answer is")."""
    q, a = instruction, response
    options: list[str] = []
    rationale = ""
    has_cot = q.rstrip().endswith(COT_TRIGGER) and COT_ANSWER in a
    if has_cot:
        q = q.rstrip()[: -len(COT_TRIGGER)].rstrip()
        rationale, _, a = a.rpartition(COT_ANSWER)
        rationale, a = rationale.strip(), a.strip().rstrip(".").strip()
    if OPTIONS_MARK in q:
        stem, _, block = q.partition(OPTIONS_MARK)
        lines = block.split("\n")
        items = [ln[2:].strip() for ln in lines if ln.startswith("- ")]
        rest = [ln for ln in lines if not ln.startswith("- ") and ln.strip()]
        if len(items) >= 2 and not rest:
            q, options = stem.rstrip(), items
    if has_cot and not a:
        has_cot, q, a, rationale = False, instruction, response, ""
    mode = {(False, False): PLAIN, (True, False): OPTIONS, (False, True): COT,
            (True, True): OPTIONS_COT}[(bool(options), has_cot)]
    if mode == PLAIN:
        q, a = instruction, response
    return ParsedPair(mode, q, a, options, rationale, (instruction, response))


def _norm(s: str) -> str:
    return s.strip().rstrip(".").strip().lower()


def render_options(p: ParsedPair, style: OptionStyle, rng: random.Random) -> tuple[str, str]:
    """-> (question with shuffled options, answer mapped to its label where possible)."""
    opts = [style.unanswerable if NONE_ANSWERS.match(o.strip()) else o for o in p.options]
    answer = style.unanswerable if NONE_ANSWERS.match(p.answer.strip()) else p.answer
    order = list(range(len(opts)))
    rng.shuffle(order)
    shuffled = [opts[i] for i in order]
    if style.labels is not None and len(shuffled) > len(style.labels):
        style = OptionStyle(style.lead, _UPPER * 4, "{}.", style.separator, style.answer_tpl,
                            style.unanswerable)
    items = [f"{style.label(i)} {o}" for i, o in enumerate(shuffled)]
    question = p.question + style.lead + style.separator.join(items)
    matches = [i for i, o in enumerate(shuffled) if _norm(o) == _norm(answer)]
    distinct = len({_norm(o) for o in shuffled}) == len(shuffled)
    if style.unique and distinct and len(matches) == 1:
        i = matches[0]
        answer = style.answer_tpl.format(label=style.label(i), text=shuffled[i])
    return question, answer


def render_qa(p: ParsedPair, style: OptionStyle, rng: random.Random) -> tuple[str, str]:
    """The question and answer text of one pair in its mode (layout wraps them)."""
    if p.mode == PLAIN:
        return p.question, p.answer
    if p.mode in (OPTIONS, OPTIONS_COT):
        q, a = render_options(p, style, rng)
    else:
        q, a = p.question, p.answer
    if p.mode in (COT, OPTIONS_COT):
        q = f"{q}\n{rng.choice(COT_TRIGGERS)}"
        a = f"{p.rationale} {rng.choice(COT_ENDINGS).format(a=a)}".strip()
    return q, a


# ---------------------------------------------------------------- documents

@dataclass
class Member:
    id: str
    text: str
    pairs: Sequence[Sequence[str]]


def pick_layout(members: Sequence[Member], rng: random.Random) -> tuple[str, bool]:
    r = rng.random()
    if any(len(m.pairs) < 2 for m in members):
        layout = "classic" if r < 0.95 else "dialog"
    else:
        layout = "classic" if r < 0.80 else LAYOUTS[1 + min(int((r - 0.80) / 0.05), 3)]
    pairs_first = rng.random() < 0.05
    return layout, pairs_first and layout != "next_turn"


def _render_member(m: Member, qas: list[tuple[str, str]], layout: str, pairs_first: bool,
                   roles: tuple[str, str], rng: random.Random) -> str:
    text = rng.choice(TEXT_PATTERNS).format(text=m.text)
    user, bot = roles
    if layout == "next_turn":
        turns = [f"{user}: {text}\n\n{qas[0][0]}\n{bot}: {qas[0][1]}"]
        turns += [f"{user}: {q}\n{bot}: {a}" for q, a in qas[1:]]
        return "\n".join(turns)
    if layout == "dialog":
        block = "\n".join(f"{user}: {q}\n{bot}: {a}" for q, a in qas)
    elif layout == "numbered":
        pat = rng.choice(NUMBERED_PATTERNS)
        block = "\n\n".join(pat.format(n=i, q=q, a=a) for i, (q, a) in enumerate(qas, 1))
    elif layout == "inline":
        pat = rng.choice(INLINE_PATTERNS)
        block = "\n".join(pat.format(q=q, a=a) for q, a in qas)
    else:
        block = "\n\n".join(rng.choice(QA_PATTERNS).format(q=q, a=a) for q, a in qas)
    return f"{block}\n\n{text}" if pairs_first else f"{text}\n\n{block}"


def templify_chain(members: Sequence[Member], seed: int | str, chain_id: str) -> list[dict]:
    """Render one chain; -> one dict per member {id, text, mode, layout, modes}."""
    rng = random.Random(f"templify:{seed}:{chain_id}")
    style = pick_option_style(rng)
    with_pairs = [m for m in members if m.pairs]
    layout, pairs_first = pick_layout(with_pairs, rng) if with_pairs else ("raw", False)
    roles = rng.choice(DIALOG_ROLES)
    layout_name = layout + ("+pairs_first" if pairs_first else "")
    out = []
    for m in members:
        if not m.pairs:
            out.append({"id": m.id, "text": m.text, "mode": RAW, "layout": RAW, "modes": {}})
            continue
        parsed = [parse_pair(q, a) for q, a in m.pairs]
        qas = [render_qa(p, style, rng) for p in parsed]
        modes = Counter(p.mode for p in parsed)
        mode = next(iter(modes)) if len(modes) == 1 else "mixed"
        out.append({"id": m.id, "text": _render_member(m, qas, layout, pairs_first, roles, rng),
                    "mode": mode, "layout": layout_name, "modes": dict(modes)})
    return out


def document(pieces: Sequence[str]) -> str:
    """The few-shot document of a chain from its members' pieces."""
    return "\n\n".join(pieces)
