"""Turn synthesized (text, pairs) chains into pre-training documents.

Structure follows the paper's release; the wording of every pattern is our own.

Documents
  A chain (texts linked by inheritance, in chain order) is cut into documents: a run of
  consecutive members that keep >= 1 pair after parsing is ONE few-shot document; a member
  without pairs is a raw document of its own (its text verbatim). Every member lands in
  exactly one document, in order, and no document is empty.

One draw per document (a document's RNG is seeded by (seed, document id), so draws of
different documents are independent):
  - a text lead-in (half of them are the bare text), used for every member's text;
  - one pattern per question type (plain, options, cot, options+cot), used for every pair
    of that type; about half of the option patterns leave the option list out;
  - an option style (lead string, item labels, separator, answer form, "unanswerable"
    phrase); the options of each question are shuffled independently;
  - a layout: classic (text, optional bridging phrase, the pairs), pairs_first (the pairs,
    then the text framed as written from them), dialog (role-labelled turns), numbered (all
    questions, then all answers), inline (exemplars, then a marked final item) or next_turn
    (a conversation whose last turn is to be predicted). Members with < 2 pairs only allow
    classic / pairs_first / dialog.

Pattern shapes (see POOL_SHAPES): forward (question -> answer), inverted (answer given,
question asked), answer_first (CoT answer, then its rationale) and rationale_in (the
rationale in the input, the answer out).

Malformed pairs are dropped and counted: a CoT pair (instruction ends with the CoT trigger)
whose response does not hold exactly one "Therefore, the answer is", or holds nothing after
it; an option pair whose answer matches none of its options.

Deterministic: same seed and document id -> same output (string seeds hash stably).
"""
from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

PLAIN, OPTIONS, COT, OPTIONS_COT, RAW = "plain", "options", "cot", "options+cot", "raw"
QTYPES = (PLAIN, OPTIONS, COT, OPTIONS_COT)
LAYOUTS = ("classic", "pairs_first", "dialog", "numbered", "inline", "next_turn")
FORWARD, INVERTED, ANSWER_FIRST, RATIONALE_IN = "forward", "inverted", "answer_first", "rationale_in"

OPTIONS_MARK = "\nOptions:\n"
COT_TRIGGER = "Let's think step by step."
COT_MARKER = "Therefore, the answer is"

# Layout probabilities per document. Calibrated so that on paper-like chains (most texts
# with >= 2 pairs) the shares come out near the release's measured ones: classic ~80%,
# pairs_first ~5%, dialog ~5%, numbered ~4%, inline ~4%, next_turn ~3%.
LAYOUT_WEIGHTS = {"classic": 0.775, "pairs_first": 0.05, "dialog": 0.05, "numbered": 0.045,
                  "inline": 0.045, "next_turn": 0.035}
FEW_PAIR_WEIGHTS = {"classic": 0.90, "pairs_first": 0.05, "dialog": 0.05}
BRIDGE_SHARE = 0.46  # of classic documents

# ---------------------------------------------------------------- text lead-ins, bridges
# Half of the lead-ins are the bare text.
TEXT_PATTERNS = (
    "{text}",) * 8 + (
    "Read the passage below.\n\n{text}",
    "Here is a short text:\n{text}",
    "Passage:\n{text}",
    "Consider the following material.\n{text}",
    "Background reading:\n\n{text}",
    "Text:\n{text}",
    "The questions after this text refer to it.\n\n{text}",
    "Study the excerpt.\n{text}",
)
BRIDGES = (
    "Now answer the questions below about the text.",
    "Questions on the passage:",
    "Based on what you just read, respond to the following.",
    "Check your understanding of the text:",
    "A few items on what the text says:",
    "Use the passage above to handle these tasks.",
    "Answer using only the information in the text.",
    "Let's test comprehension of the material.",
    "Here are a few questions drawn from the text.",
    "With the text in mind, try these:",
    "Respond to each item using the passage.",
    "Exercises on the reading:",
)
# pairs_first: the pairs come first, then the text is framed as written from them.
PAIRS_FIRST_HEADS = ("", "", "Questions and answers:", "Here are some facts in Q&A form.",
                     "Read these questions and their answers.")
PAIRS_FIRST_FRAMES = (
    "Write a passage that covers the questions and answers above.",
    "Now write an article from which these answers could be taken.",
    "Compose a text consistent with the Q&A above.",
    "Using the questions and answers as notes, write the full text.",
    "Turn the Q&A above into a connected passage.",
    "Write the document these questions were asked about.",
)
DIALOG_ROLES = (("User", "Assistant"), ("Human", "AI"), ("Person A", "Person B"),
                ("Student", "Teacher"), ("Reader", "Expert"), ("Q", "A"))
NUMBERED_STYLES = (  # (questions header, question mark, answers header, answer mark)
    ("Answer the following questions:", "{n}. ", "Answers:", "{n}. "),
    ("Questions:", "Q{n}: ", "Answers:", "A{n}: "),
    ("Read the text and answer each item.", "({n}) ", "Answer key:", "({n}) "),
    ("Tasks:", "{n}) ", "Solutions:", "{n}) "),
    ("", "Question {n}: ", "", "Answer {n}: "),
    ("Work through these items.", "#{n} ", "Responses:", "#{n} "),
)
INLINE_STYLES = (  # (exemplar joiner, final marker)
    (" ", "Now you try: "), ("\n", "Final question: "), (" ", "Next: "),
    ("\n", "Your turn.\n"), (" -> ", "Complete the last one: "), ("\n", "Last item: "),
)
NEXT_TURN_FRAMES = (
    "Predict the next turn of this conversation.",
    "What does {bot} say next?",
    "Continue the dialogue with {bot}'s reply.",
    "Write the next message in the chat.",
    "Read the conversation and give the following turn.",
)
NEXT_TURN_MARKS = ("Next turn:", "Reply:", "The next turn:", "")

# ---------------------------------------------------------------- option styles
OPTION_LEADS = (
    "\nOptions:\n", "\nChoices:\n", "\nPick one of the following:\n", "\nPossible answers:\n",
    "\nSelect from:\n", "\n\n", "\nAnswer choices:\n", "\nWhich is right?\n",
    "\nCandidates:\n", "\nChoose one:\n",
)
OPTION_ANSWERS = ("{label}", "{label}", "{label}. {text}", "{label}: {text}", "{text}")
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii")
LABEL_SCHEMES = (  # (label sequence, template); None = bullets (no distinct labels)
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


# ---------------------------------------------------------------- pattern pools
# A pattern is (input template, output template, shape); fields {q} question stem,
# {o} option block, {a} answer, {r} rationale. Pools are built by combining small
# hand-written pieces and sampling a fixed number of combinations with a fixed seed.

@dataclass(frozen=True)
class Pattern:
    inp: str
    out: str
    shape: str

    @property
    def lists_options(self) -> bool:
        return "{o}" in self.inp or "{o}" in self.out


def _sample(combos, n: int, tag: str) -> list:
    combos = list(combos)
    rng = random.Random(f"templify-pool:{tag}")
    return combos if len(combos) <= n else rng.sample(combos, n)


_QA_IN = ("{q}", "Question: {q}", "Q: {q}", "{q}\nAnswer the question above.",
          "Answer this question about the text: {q}", "Here is a question: {q}",
          "Respond to the following. {q}", "Task: {q}", "Input: {q}", "{q} Use the text to answer.",
          "Please answer: {q}", "Query: {q}")
_QA_OUT = ("{a}", "Answer: {a}", "A: {a}", "Response: {a}", "The answer is: {a}", "Output: {a}",
           "Reply: {a}")
_QA_INV_IN = ("Write a question about the text whose answer is: {a}", "The answer given: {a}\nWhat question produced it?",
              "{a}\nWhich question does this answer?", "Here is an answer: {a}\nAsk a question that leads to it.",
              "Come up with a question to which the answer is \"{a}\".")
_QA_INV_OUT = ("{q}", "Question: {q}")

_OPT_IN = ("{q}{o}", "Choose the right answer.\n{q}{o}", "Question: {q}{o}", "{q}{o}\nPick the best option.",
           "Multiple choice: {q}{o}")
_OPT_BARE_IN = ("{q}", "Question: {q}", "Answer briefly: {q}", "{q}\nGive a short answer.", "Q: {q}")
_OPT_OUT = ("{a}", "Answer: {a}", "The correct choice: {a}", "{a} is correct.", "My pick: {a}")

_COT_TRIGGERS = ("Let's think step by step.", "Reason it out first.", "Explain your reasoning.",
                 "Think it through before answering.", "Show your work.", "Walk through the logic.",
                 "Work it out step by step.", "Justify your answer.", "First reason, then answer.",
                 "Think carefully.", "Give a step-by-step solution.", "Reason before you answer.")
_COT_Q = ("{q}\n{t}", "{q} {t}", "Question: {q}\n{t}", "{t}\n{q}")
_COT_ENDINGS = ("So the answer is {a}.", "Therefore, the answer is {a}.", "Hence: {a}.",
                "The final answer: {a}.", "That gives {a}.", "Thus the answer is {a}.", "So, {a}.",
                "In the end: {a}.", "Answer: {a}.", "This leads to {a}.", "The result is {a}.",
                "Which means the answer is {a}.")
_AF_IN = ("{q}", "Question: {q}", "{q}\nAnswer, then explain.", "{q}\nGive the answer and the reason.",
          "{q}\nState the answer first, then justify it.")
_AF_OUT = ("{a}\nExplanation: {r}", "{a}. Reason: {r}", "Answer: {a}\nWhy: {r}",
           "The answer is {a}. Here is why: {r}", "{a}\nRationale: {r}", "{a}\nBecause: {r}",
           "Answer: {a}\nJustification: {r}", "{a}. My reasoning: {r}")
_RI_IN = ("{q}\nHint: {r}", "Reasoning: {r}\nQuestion: {q}", "{r}\nGiven the reasoning above, answer: {q}",
          "Use this reasoning to answer. {r}\n{q}", "{q}\nConsider this: {r}", "Notes: {r}\n{q}")
_RI_OUT = ("{a}", "Answer: {a}", "So the answer is {a}.", "{a}.")
# Inverted CoT: the answer is given and the question asked. An input that already holds the
# rationale asks for the question alone; an input that asks for the reasoning gets it in the output.
_CINV_R_IN = ("Here is a worked solution: {r}\nIts conclusion: {a}\nState the question it solves.",
              "{r} So the answer is {a}.\nWhich question is being answered?",
              "Given the argument \"{r}\" and the result {a}, what was asked?",
              "Explanation: {r}\nResult: {a}\nRecover the original question.")
_CINV_R_OUT = ("{q}", "Question: {q}", "Q: {q}", "The question was: {q}", "Asked: {q}")
_CINV_ASK_IN = ("Write a question and a step-by-step argument whose answer is {a}.",
                "{a}\nWhat question, reasoned through, gives this answer?",
                "The answer is {a}. Reconstruct the question and the reasoning.",
                "Here is a conclusion: {a}\nPose the question it answers, with the steps.",
                "Invent a question whose worked answer ends in: {a}",
                "Answer: {a}\nGive a matching question and a rationale.")
_CINV_ASK_OUT = ("{q}\n{r}", "Question: {q}\nReasoning: {r}", "Q: {q}\nSteps: {r}",
                 "{q}\nWorking: {r}")


def _cot_pool(with_options: bool) -> list[Pattern]:
    qo = "{q}{o}" if with_options else "{q}"
    tag = "optcot" if with_options else "cot"

    def sub(s):
        return s.replace("{q}", qo) if with_options else s

    fwd = [Pattern(sub(f.replace("{t}", t)), "{r} " + e, FORWARD)
           for f, t, e in itertools.product(_COT_Q, _COT_TRIGGERS, _COT_ENDINGS)]
    af = [Pattern(sub(i), o, ANSWER_FIRST) for i, o in itertools.product(_AF_IN, _AF_OUT)]
    ri = [Pattern(sub(i), o, RATIONALE_IN) for i, o in itertools.product(_RI_IN, _RI_OUT)]
    inv = [Pattern(i, sub(o), INVERTED) for ins, outs in ((_CINV_R_IN, _CINV_R_OUT), (_CINV_ASK_IN, _CINV_ASK_OUT))
           for i, o in itertools.product(ins, outs)]
    # sizes as in the release: ~200 patterns, ~20% inverted, ~19% answer-first, ~11% rationale-in
    return (_sample(fwd, 100, tag + "-fwd") + _sample(af, 38, tag + "-af") + _sample(ri, 22, tag + "-ri")
            + _sample(inv, 40, tag + "-inv"))


QA_POOL = (_sample([Pattern(i, o, FORWARD) for i, o in itertools.product(_QA_IN, _QA_OUT)], 70, "qa")
           + [Pattern(i, o, INVERTED) for i, o in itertools.product(_QA_INV_IN, _QA_INV_OUT)])
OPTION_POOL = ([Pattern(i, o, FORWARD) for i, o in itertools.product(_OPT_IN, _OPT_OUT)]
               + [Pattern(i, o, FORWARD) for i, o in itertools.product(_OPT_BARE_IN, _OPT_OUT)])
COT_POOL = _cot_pool(False)
OPTION_COT_POOL = _cot_pool(True)
POOLS = {PLAIN: QA_POOL, OPTIONS: OPTION_POOL, COT: COT_POOL, OPTIONS_COT: OPTION_COT_POOL}


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
    malformed: str = ""  # "" = usable; else why it is dropped ("cot", "option")


def _norm(s: str) -> str:
    return s.strip().rstrip(".").strip().lower()


def _is_none(s: str) -> bool:
    return bool(NONE_ANSWERS.match(s.strip()))


def parse_pair(instruction: str, response: str) -> ParsedPair:
    """Detect options ("\\nOptions:\\n- a\\n- b") and CoT (trigger + "Therefore, the answer is");
    mark the pair malformed where the release drops it."""
    q, a = instruction, response
    options: list[str] = []
    rationale, malformed = "", ""
    has_cot = q.rstrip().endswith(COT_TRIGGER)
    if has_cot:
        q = q.rstrip()[: -len(COT_TRIGGER)].rstrip()
        if a.count(COT_MARKER) != 1:
            malformed = "cot"
        else:
            rationale, _, a = a.partition(COT_MARKER)
            rationale, a = rationale.strip(), a.strip().rstrip(".").strip()
            if not a:
                malformed = "cot"
    if OPTIONS_MARK in q:
        stem, _, block = q.partition(OPTIONS_MARK)
        lines = block.split("\n")
        items = [ln[2:].strip() for ln in lines if ln.startswith("- ")]
        rest = [ln for ln in lines if not ln.startswith("- ") and ln.strip()]
        if len(items) >= 2 and not rest:
            q, options = stem.rstrip(), items
            if not malformed and not any(_norm(o) == _norm(a) or (_is_none(o) and _is_none(a))
                                         for o in options):
                malformed = "option"
    mode = {(False, False): PLAIN, (True, False): OPTIONS, (False, True): COT,
            (True, True): OPTIONS_COT}[(bool(options), has_cot)]
    if mode == PLAIN:
        q, a = instruction, response
    return ParsedPair(mode, q, a, options, rationale, (instruction, response), malformed)


def usable_pairs(pairs: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    """The (instruction, response) pairs templify keeps: the malformed ones dropped."""
    return [(q, a) for q, a in pairs if not parse_pair(q, a).malformed]


def render_options(p: ParsedPair, style: OptionStyle, rng: random.Random,
                   listed: bool = True) -> tuple[str, str]:
    """-> (option block, answer): options shuffled (per question), "none of the above"-style
    ones replaced by the style's phrase, the answer given by its label where the labels
    are distinct and it matches exactly one option. Unlisted: ("", the answer's text)."""
    opts = [style.unanswerable if _is_none(o) else o for o in p.options]
    answer = style.unanswerable if _is_none(p.answer) else p.answer
    if not listed:
        return "", answer
    order = list(range(len(opts)))
    rng.shuffle(order)
    shuffled = [opts[i] for i in order]
    if style.labels is not None and len(shuffled) > len(style.labels):
        style = OptionStyle(style.lead, [f"{c}{k}" for k in ("", 2, 3, 4) for c in _UPPER], "{}.",
                            style.separator, style.answer_tpl, style.unanswerable)
    items = [f"{style.label(i)} {o}" for i, o in enumerate(shuffled)]
    block = style.lead + style.separator.join(items)
    matches = [i for i, o in enumerate(shuffled) if _norm(o) == _norm(answer)]
    distinct = len({_norm(o) for o in shuffled}) == len(shuffled)
    if style.unique and distinct and len(matches) == 1:
        i = matches[0]
        answer = style.answer_tpl.format(label=style.label(i), text=shuffled[i])
    return block, answer


def render_pair(p: ParsedPair, pattern: Pattern, style: OptionStyle, rng: random.Random) -> tuple[str, str]:
    """(input, output) of one pair through its document's pattern for its type."""
    o, a = "", p.answer
    if p.mode in (OPTIONS, OPTIONS_COT):
        o, a = render_options(p, style, rng, pattern.lists_options)
    if p.mode in (COT, OPTIONS_COT):
        a = a.rstrip(".")
    f = {"q": p.question, "o": o, "a": a, "r": p.rationale}
    return pattern.inp.format(**f), pattern.out.format(**f)


# ---------------------------------------------------------------- documents

@dataclass
class Member:
    id: str
    text: str
    pairs: Sequence[Sequence[str]]


@dataclass
class _Doc:
    """Per-document draws."""
    lead: str
    bridge: str
    index: dict  # question type -> index of its pattern in POOLS[type]
    style: OptionStyle
    roles: tuple[str, str]
    layout: str
    numbered: tuple = ()
    inline: tuple = ()
    next_turn: tuple = ()
    pairs_first: tuple = ()
    qa_sep: str = "\n"

    @property
    def patterns(self) -> dict:
        return {t: POOLS[t][i] for t, i in self.index.items()}


def pick_layout(min_pairs: int, rng: random.Random) -> str:
    weights = LAYOUT_WEIGHTS if min_pairs >= 2 else FEW_PAIR_WEIGHTS
    r, acc = rng.random(), 0.0
    for name, w in weights.items():
        acc += w
        if r < acc:
            return name
    return "classic"


def _draw(rng: random.Random, min_pairs: int) -> _Doc:
    layout = pick_layout(min_pairs, rng)
    d = _Doc(lead=rng.choice(TEXT_PATTERNS), bridge="",
             index={t: rng.randrange(len(POOLS[t])) for t in QTYPES}, style=pick_option_style(rng),
             roles=rng.choice(DIALOG_ROLES), layout=layout, qa_sep=rng.choice(("\n", "\n", "\n\n")))
    if layout == "classic" and rng.random() < BRIDGE_SHARE:
        d.bridge = rng.choice(BRIDGES)
    elif layout == "numbered":
        d.numbered = rng.choice(NUMBERED_STYLES)
    elif layout == "inline":
        d.inline = rng.choice(INLINE_STYLES)
    elif layout == "next_turn":
        d.next_turn = (rng.choice(NEXT_TURN_FRAMES), rng.choice(NEXT_TURN_MARKS))
    elif layout == "pairs_first":
        d.pairs_first = (rng.choice(PAIRS_FIRST_HEADS), rng.choice(PAIRS_FIRST_FRAMES))
    return d


def _qa_block(qas: list[tuple[str, str]], d: _Doc) -> str:
    """The Q&A block of the classic and pairs-first layouts."""
    return "\n\n".join(f"{i}{d.qa_sep}{o}" for i, o in qas)


def _render_member(text: str, qas: list[tuple[str, str]], d: _Doc) -> str:
    user, bot = d.roles
    body = d.lead.format(text=text)
    if d.layout == "classic":
        block = _qa_block(qas, d)
        return f"{body}\n\n{d.bridge}\n\n{block}" if d.bridge else f"{body}\n\n{block}"
    if d.layout == "pairs_first":
        head, frame = d.pairs_first
        block = _qa_block(qas, d)
        return (f"{head}\n\n" if head else "") + f"{block}\n\n{frame}\n{text}"
    if d.layout == "dialog":
        return body + "\n\n" + "\n".join(f"{user}: {i}\n{bot}: {o}" for i, o in qas)
    if d.layout == "numbered":
        qh, qm, ah, am = d.numbered
        qs = "\n".join(qm.format(n=n) + i for n, (i, _) in enumerate(qas, 1))
        ans = "\n".join(am.format(n=n) + o for n, (_, o) in enumerate(qas, 1))
        return "\n\n".join(x for x in (body, qh, qs, ah, ans) if x)
    if d.layout == "inline":
        join, mark = d.inline
        shots = "\n\n".join(f"{i}{join}{o}" for i, o in qas[:-1])
        last_i, last_o = qas[-1]
        return f"{body}\n\n{shots}\n\n{mark}{last_i}{join}{last_o}"
    if d.layout == "next_turn":
        frame, mark = d.next_turn
        turns = [f"{user}: {body}\n\n{qas[0][0]}"]
        for k, (i, o) in enumerate(qas):
            if k:
                turns.append(f"{user}: {i}")
            if k < len(qas) - 1:
                turns.append(f"{bot}: {o}")
        last = f"{mark}\n{bot}: {qas[-1][1]}" if mark else f"{bot}: {qas[-1][1]}"
        return frame.format(bot=bot) + "\n\n" + "\n".join(turns) + "\n" + last
    raise ValueError(f"unknown layout {d.layout!r}")


def _raw_doc(m: Member, parsed: list[ParsedPair]) -> dict:
    dropped = sum(bool(p.malformed) for p in parsed)
    return {"id": m.id, "member_ids": [m.id], "text": m.text, "layout": RAW, "mode": RAW,
            "modes": {}, "patterns": {}, "pattern_index": {}, "option_less": None, "bridge": False,
            "dropped": dropped,
            "members": [{"id": m.id, "mode": RAW, "modes": {}, "pairs_kept": 0, "dropped": dropped}]}


def _mode_of(modes: Counter) -> str:
    return next(iter(modes)) if len(modes) == 1 else "mixed"


def render_document(members: Sequence[Member], parsed: Sequence[list[ParsedPair]], seed: int | str) -> dict:
    """One few-shot document of members that all keep >= 1 pair (parsed = their pairs)."""
    kept = [[p for p in ps if not p.malformed] for ps in parsed]
    doc_id = members[0].id
    rng = random.Random(f"templify:{seed}:{doc_id}")
    d = _draw(rng, min(len(k) for k in kept))
    pieces, infos, modes = [], [], Counter()
    pats = d.patterns
    for m, ps, ks in zip(members, parsed, kept):
        qas = [render_pair(p, pats[p.mode], d.style, rng) for p in ks]
        pieces.append(_render_member(m.text, qas, d))
        mm = Counter(p.mode for p in ks)
        modes.update(mm)
        infos.append({"id": m.id, "mode": _mode_of(mm), "modes": dict(mm), "pairs_kept": len(ks),
                      "dropped": len(ps) - len(ks)})
    return {"id": doc_id, "member_ids": [m.id for m in members], "text": document(pieces),
            "layout": d.layout, "mode": _mode_of(modes), "modes": dict(modes),
            "patterns": {t: pats[t].shape for t in modes},
            "pattern_index": {t: d.index[t] for t in modes},
            "option_less": (not pats[OPTIONS].lists_options) if OPTIONS in modes else None,
            "bridge": bool(d.bridge), "dropped": sum(i["dropped"] for i in infos), "members": infos}


def templify_chain(members: Sequence[Member], seed: int | str) -> list[dict]:
    """Render one chain (members in chain order) -> its documents, in order.

    Each document: {id (its first member's id), member_ids, text, layout, mode, modes,
    patterns (question type -> pattern shape), pattern_index (-> index in POOLS[type]),
    option_less, bridge, dropped, members: [{id, mode, modes, pairs_kept, dropped}]}. Seeds are per document.
    """
    docs: list[dict] = []
    run: list[tuple[Member, list[ParsedPair]]] = []

    def flush():
        if run:
            docs.append(render_document([m for m, _ in run], [p for _, p in run], seed))
            run.clear()

    for m in members:
        parsed = [parse_pair(q, a) for q, a in m.pairs]
        if any(not p.malformed for p in parsed):
            run.append((m, parsed))
        else:
            flush()
            docs.append(_raw_doc(m, parsed))
    flush()
    return docs


def document(pieces: Sequence[str]) -> str:
    """The few-shot document from its members' pieces."""
    return "\n\n".join(pieces)
