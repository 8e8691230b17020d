"""Rule-based task mining from raw text: the paper's Table 4 baseline (AdaptLLM-style).

Instead of a tuned synthesizer, regex/heuristic rules turn a text into instruction-
response pairs (`format.Pair`) that then go through the same templify step as
synthesized pairs (stage 02, `backend: rule_based`). Our own rules and wording, in the
spirit of AdaptLLM's "reading comprehension" conversion (Cheng et al., 2023):

  topic        what the text is mainly about / a title  -> its most repeated name or term
  summary      one-sentence summary                     -> the first sentence
  word2text    write a sentence using given keywords    -> the source sentence
  nli          premise/hypothesis from a connective     -> yes / no / it is not possible to tell
               ("therefore", "thus", "as a result" -> yes; "however", "but", "yet" -> no;
                "moreover", "in addition" -> cannot tell)
  cause_effect cause or effect of a clause              -> the other clause
               ("because", "due to", "since", "as a result of", ", so")
  paraphrase   restate a "because" sentence with its clauses swapped; restore the order of
               shuffled sentences
  completion   continue the text from its first half    -> the next sentences
  fill_blank   a number or a name blanked out           -> the number / name
  verify       a statement (true, or with a number/name swapped) -> yes / no

Every rule returns [] when its pattern is absent; no rule returns an empty response or one
that copies the whole text (`_keep`). Output is a pure function of (text, seed).
`RuleTokenizer`/`RuleEngine` let stage 02's multi-round driver run with no model.
"""
from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .format import CON, CON_END, Pair, render_pairs

VERSION_SRC = Path(__file__).resolve()

STOPWORDS = frozenset("""
a about above after again against all almost also although am an and any are as at be because been
before being below between both but by can could did do does doing down during each either even
every few for from further had has have having he her here hers him his how however i if in into is
it its itself just last least less many may me meanwhile might more most much must my near never no
nor not now of off often on once one only or other our out over own per perhaps quite rather same
several she should since so some still such than that the their them then there therefore these
they this those though through thus to too under until up upon very was we were what when where
whether which while who whom whose why will with within without would yet you your first second
third new later early many made make makes known called became become becomes began each every
about around almost nearly roughly some moreover furthermore additionally consequently hence
nevertheless accordingly instead overall today
""".split())
MONTHS = frozenset("january february march april may june july august september october november "
                   "december".split())
SENT_START_WORDS = STOPWORDS | frozenset("born located rising after meanwhile historians other six "
                                         "cooks".split())

_ABBREV = re.compile(r"\b(?:e\.g|i\.e|etc|vs|Dr|Mr|Mrs|Ms|Prof|St|No|Fig|al|approx|Inc|Ltd|Co|U\.S)\.$")
_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_NUMBER = re.compile(r"(?<![\w.,])\d(?:[\d,]*\d)?(?:\.\d+)?%?(?![\w])")
# a run of capitalised words (allowing "of", "de", ...) = a name
_NAME = re.compile(r"\b[A-Z][a-z][\w'\-]*(?:\s+(?:of\s+|de\s+|the\s+)?[A-Z][a-z][\w'\-]*)*")

ENTAIL = ("therefore", "thus", "hence", "consequently", "as a result", "accordingly", "for this reason")
CONTRADICT = ("however", "but", "yet", "nevertheless", "in contrast", "on the contrary", "even so")
NEUTRAL = ("moreover", "furthermore", "in addition", "additionally", "meanwhile", "also")
NLI_OPTIONS = ("yes", "it is not possible to tell", "no")
NLI_LABEL = {**{c: "yes" for c in ENTAIL}, **{c: "no" for c in CONTRADICT},
             **{c: "it is not possible to tell" for c in NEUTRAL}}
_CONNECTIVE_START = re.compile(
    r"^(" + "|".join(sorted((re.escape(c) for c in NLI_LABEL), key=len, reverse=True)) + r")\b,?\s*(.+)$",
    re.IGNORECASE | re.DOTALL)
_CONNECTIVE_MID = re.compile(r"^(.{12,}?)[,;]\s+(therefore|thus|hence|but|yet|so)\s+(.{8,})$", re.IGNORECASE)

MAX_SHARE = 0.8  # a response longer than this share of the text counts as copying it


# ---------------------------------------------------------------- text helpers

def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph (a period after a common abbreviation does not end one)."""
    text = re.sub(r"\s+", " ", text.strip())
    if not text:
        return []
    out: list[str] = []
    start = 0
    for m in _SENT_END.finditer(text):
        piece = text[start:m.start() + len(m.group(0).rstrip())].strip()
        if _ABBREV.search(piece):
            continue
        out.append(piece)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def _norm(s: str) -> str:
    return re.sub(r"\W+", " ", s.lower()).strip()


def _strip_end(s: str) -> str:
    return s.strip().rstrip(".!?;:,").strip()


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _lower_first(s: str) -> str:
    """Lower-case the first letter unless the first word looks like a name (capitalised later too)."""
    if not s:
        return s
    first = s.split()[0].strip(",.;:")
    if first in ("I",) or (len(first) > 1 and first[1:].lower() != first[1:]):  # I, acronyms
        return s
    return s[:1].lower() + s[1:] if first.lower() in SENT_START_WORDS or first.lower() in STOPWORDS else s


def _sentence(s: str) -> str:
    s = _strip_end(s)
    return _cap(s) + "." if s else ""


def _words(s: str) -> list[str]:
    return _WORD.findall(s)


def content_words(s: str) -> list[str]:
    return [w for w in _words(s) if w.lower() not in STOPWORDS and len(w) > 2]


def mid_caps(sents: Sequence[str]) -> set[str]:
    """Capitalised words seen inside a sentence (not first): evidence that a word is a name."""
    out = set()
    for s in sents:
        for m in _NAME.finditer(s):
            out.update(m.group(0).split() if m.start() > 0 else m.group(0).split()[1:])
    return out


def names(sentence: str, known: set[str] | None = None) -> list[str]:
    """Capitalised word runs that are names. A sentence-initial word counts only if it is
    capitalised elsewhere too (`known`, from mid_caps) and is not a function word."""
    known = mid_caps([sentence]) if known is None else known
    out = []
    for m in _NAME.finditer(sentence):
        words = m.group(0).split()
        if m.start() == 0:
            while words and (words[0].lower() in SENT_START_WORDS or words[0] not in known):
                words = words[1:]
        while words and words[0].lower() in ("of", "de", "the"):
            words = words[1:]
        if words and words[0].lower() not in STOPWORDS and words[0].lower() not in MONTHS:
            out.append(" ".join(words))
    return out


def topic(text: str, sents: Sequence[str] | None = None) -> str | None:
    """The most repeated name (else content word) of the text; None if nothing repeats."""
    sents = list(sents) if sents is not None else split_sentences(text)
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    known = mid_caps(sents)
    for s in sents:
        for n in names(s, known):
            counts[n] = counts.get(n, 0) + 1
            first.setdefault(n, len(first))
    best = sorted(counts, key=lambda n: (-counts[n], -len(n.split()), first[n]))
    if best and counts[best[0]] >= 2:
        return best[0]
    words: dict[str, int] = {}
    for w in content_words(text):
        words[w.lower()] = words.get(w.lower(), 0) + 1
    top = sorted(words, key=lambda w: (-words[w], w))
    return top[0] if top and words[top[0]] >= 2 else None


def _keep(pair: Pair, text: str) -> bool:
    """Non-empty, and the response is not the (near-)whole text."""
    q, a = pair.instruction.strip(), pair.response.strip()
    if not q or not a:
        return False
    na, nt = _norm(a), _norm(text)
    return bool(na) and na != nt and len(a) <= MAX_SHARE * len(text.strip())


def _options(items: Iterable[str]) -> str:
    return "\nOptions:\n" + "\n".join(f"- {x}" for x in items)


def _pick(rng: random.Random, pool: Sequence[str]) -> str:
    return pool[rng.randrange(len(pool))]


# ---------------------------------------------------------------- rules
# Each rule: (text, sentences, rng) -> list[Pair]; at most a couple of pairs per rule.

TOPIC_Q = ("What is the main topic of this text?", "What is this passage mainly about?",
           "Which subject does the text discuss?", "Name the focus of the passage in a few words.")
TITLE_Q = ("Suggest a short title for the text.", "Give this passage a title.",
           "What would be a fitting headline for the article?")


def repeated_names(sents: Sequence[str]) -> list[str]:
    """Names mentioned at least twice, most frequent first."""
    counts: dict[str, int] = {}
    known = mid_caps(sents)
    for s in sents:
        for n in names(s, known):
            counts[n] = counts.get(n, 0) + 1
    return [n for n in sorted(counts, key=lambda n: (-counts[n], -len(n.split()))) if counts[n] >= 2]


def rule_topic(text, sents, rng):
    t = topic(text, sents)
    if not t or len(sents) < 2:
        return []
    pairs = [Pair(_pick(rng, TOPIC_Q), t)]
    others = [n for n in repeated_names(sents) if n != t and n not in t and t not in n]
    if others:
        pairs.append(Pair(_pick(rng, TITLE_Q), f"{t} and {others[0]}"))
    return pairs


SUMMARY_Q = ("Summarize the text in one sentence.", "Write a one-sentence summary of the passage.",
             "In a single sentence, what does the text say?", "Give the gist of the text in one sentence.")


def rule_summary(text, sents, rng):
    if len(sents) < 3 or len(_words(sents[0])) < 5:
        return []
    return [Pair(_pick(rng, SUMMARY_Q), sents[0])]


WORD2TEXT_Q = ("Write a sentence that uses these words: {w}.", "Compose one sentence containing {w}.",
               "Use the following keywords in a sentence about {t}: {w}.",
               "Form a sentence with the words {w}.")


def rule_word2text(text, sents, rng):
    if len(sents) < 2:
        return []
    cands = [s for s in sents if len(set(w.lower() for w in content_words(s))) >= 4]
    if not cands:
        return []
    s = cands[rng.randrange(len(cands))]
    uniq = list(dict.fromkeys(content_words(s)))
    idx = sorted(rng.sample(range(len(uniq)), 3))
    kw = ", ".join(f'"{uniq[i]}"' for i in idx)
    q = _pick(rng, WORD2TEXT_Q).format(w=kw, t=topic(text, sents) or "the text")
    return [Pair(q, s)]


NLI_Q = ('Premise: "{p}"\nHypothesis: "{h}"\nDoes the premise support the hypothesis?',
         'Sentence A: "{p}"\nSentence B: "{h}"\nIs sentence B a consequence of sentence A?',
         '"{p}" Based on this, can we say that "{h}"?',
         'Given that "{p}", does it follow that "{h}"?')
CONNECTIVE_Q = ('Which word best links the two sentences?\n"{p}" ___ "{h}"',
                'Fill in the connective between "{p}" and "{h}".')


def _nli_items(sents):
    """(premise, connective, hypothesis) from a leading connective or a mid-sentence one."""
    items = []
    for i, s in enumerate(sents):
        m = _CONNECTIVE_START.match(s)
        if m and i > 0 and len(_words(m.group(2))) >= 3:
            items.append((sents[i - 1], m.group(1).lower(), m.group(2)))
            continue
        m = _CONNECTIVE_MID.match(s)
        if m and m.group(2).lower() != "so":  # ", so" is cause/effect's
            items.append((m.group(1), m.group(2).lower(), m.group(3)))
    return items


def rule_nli(text, sents, rng):
    items = _nli_items(sents)
    if not items:
        return []
    p, c, h = items[rng.randrange(len(items))]
    p, h = _sentence(p), _sentence(_cap(h))
    pairs = [Pair(_pick(rng, NLI_Q).format(p=_strip_end(p), h=_strip_end(h)) + _options(NLI_OPTIONS),
                  NLI_LABEL[c])]
    family = ENTAIL if c in ENTAIL else CONTRADICT if c in CONTRADICT else NEUTRAL
    others = [f[0] for f in (ENTAIL, CONTRADICT, NEUTRAL) if f is not family]
    choices = sorted({c, *others}, key=lambda x: rng.random())
    pairs.append(Pair(_pick(rng, CONNECTIVE_Q).format(p=_strip_end(p), h=_strip_end(h)) + _options(choices), c))
    return pairs


CAUSE_Q = ('What is the reason for the following? "{e}"', 'Why is it that {e_l}?',
           'What causes this: "{e}"?', 'Explain why {e_l}.')
EFFECT_Q = ('What is a result of the following? "{c}"', 'What follows from the fact that {c_l}?',
            'What is the effect of this: "{c}"?', 'Given that {c_l}, what happened?')
_CAUSAL = [  # tried in order; the first match decides
    # "Because B, A."
    re.compile(r"^(?:because|since)\s+(?P<c>[^,]{8,}),\s*(?P<e>.{8,})$", re.I),
    # "A because B" / "A due to B" / "A as a result of B" / "A since B"
    re.compile(r"^(?P<e>.{8,}?)[,]?\s+(?:because(?! of)|due to|as a result of|owing to|because of)\s+(?P<c>.{4,})$",
               re.I),
    # "A, so B" (not "so that", "so far", ...)
    re.compile(r"^(?P<c>.{8,}?),\s+so\s+(?!that\b|far\b|long\b|much\b|many\b|called\b)(?P<e>.{8,})$", re.I),
]


def causal_items(sents):
    out = []
    for s in sents:
        body = _strip_end(s)
        for rx in _CAUSAL:
            m = rx.match(body)
            if m:
                c, e = _strip_end(m.group("c")), _strip_end(m.group("e"))
                if len(_words(c)) >= 2 and len(_words(e)) >= 2:
                    out.append((s, c, e))
                break
    return out


def rule_cause_effect(text, sents, rng):
    items = causal_items(sents)
    if not items:
        return []
    _, c, e = items[rng.randrange(len(items))]
    c_l, e_l = _lower_first(c), _lower_first(e)
    pairs = [Pair(_pick(rng, CAUSE_Q).format(e=_cap(e), e_l=e_l), _sentence(c))]
    pairs.append(Pair(_pick(rng, EFFECT_Q).format(c=_cap(c), c_l=c_l), _sentence(e)))
    return pairs


PARA_Q = ('Rewrite the sentence so that it starts with "because": "{s}"',
          'Paraphrase by putting the reason first: "{s}"',
          'Restate this sentence with the cause and the result in the other order: "{s}"')
PARA_Q2 = ('Rewrite the sentence so that the reason comes last: "{s}"',
           'Paraphrase with the result first: "{s}"')
ORDER_Q = ("These sentences from the text are out of order:\n{items}\nWhat is their original order?",
           "Put the following sentences back in order:\n{items}")


def rule_paraphrase(text, sents, rng):
    pairs = []
    items = [(s, c, e) for s, c, e in causal_items(sents)
             if re.search(r"\bbecause\b", s, re.I) and not re.search(r"\bbecause of\b", s, re.I)]
    if items:
        s, c, e = items[rng.randrange(len(items))]
        if re.match(r"^because\b", s, re.I):  # "Because B, A." -> "A because B."
            pairs.append(Pair(_pick(rng, PARA_Q2).format(s=s), _sentence(f"{_cap(e)} because {_lower_first(c)}")))
        else:  # "A because B." -> "Because B, A."
            pairs.append(Pair(_pick(rng, PARA_Q).format(s=s), _sentence(f"Because {_lower_first(c)}, {_lower_first(e)}")))
    if len(sents) >= 4:
        start = rng.randrange(len(sents) - 2)
        chunk = sents[start:start + 3]
        perm = [0, 1, 2]
        while perm == [0, 1, 2]:
            rng.shuffle(perm)
        shown = "\n".join(f"({k + 1}) {chunk[j]}" for k, j in enumerate(perm))
        order = [perm.index(j) + 1 for j in range(3)]
        pairs.append(Pair(_pick(rng, ORDER_Q).format(items=shown), ", ".join(f"({k})" for k in order)))
    return pairs


COMPLETION_Q = ('How might the following text continue?\n"{s}"', 'Continue the passage: "{s}"',
                'Write the next part of this text: "{s}"', 'What comes next? "{s}"')


def rule_completion(text, sents, rng):
    if len(sents) < 3:
        return []
    cut = max(1, len(sents) // 2)
    rest = sents[cut:cut + 2]
    return [Pair(_pick(rng, COMPLETION_Q).format(s=" ".join(sents[:cut])), " ".join(rest))]


BLANK_Q = ('Fill in the blank: "{s}"', 'Complete the sentence from the text: "{s}"',
           'What goes in the blank? "{s}"', 'Which {kind} is missing? "{s}"')


def _blank_candidates(sents, text_topic):
    out = []
    known = mid_caps(sents)
    for i, s in enumerate(sents):
        for m in _NUMBER.finditer(s):
            out.append((i, m.start(), m.end(), "number"))
        for n in names(s, known):
            if text_topic and n == text_topic:
                continue
            k = s.find(n, 1 if s.startswith(n) else 0) if not s.startswith(n) else 0
            if k >= 0 and len(_words(s)) >= 5:
                out.append((i, k, k + len(n), "name"))
    return out


def rule_fill_blank(text, sents, rng):
    cands = _blank_candidates(sents, topic(text, sents))
    if not cands:
        return []
    pairs = []
    for kind in ("number", "name"):
        pool = [c for c in cands if c[3] == kind]
        if not pool:
            continue
        i, a, b, _ = pool[rng.randrange(len(pool))]
        s = sents[i]
        ans = s[a:b].strip()
        pairs.append(Pair(_pick(rng, BLANK_Q).format(s=s[:a] + "___" + s[b:], kind=kind), ans))
    return pairs


VERIFY_Q = ('Based on the text, is this statement true? "{s}"', 'True or false, according to the passage: "{s}"',
            'Does the text support the claim "{s}"?', 'Is it correct that {s_l}')


def _corrupt_number(num: str, rng) -> str | None:
    digits = num.replace(",", "")
    try:
        val = float(digits.rstrip("% ").strip())
    except ValueError:
        return None
    for _ in range(8):
        if val.is_integer() and 1000 <= val <= 2100:  # a year
            new = val + rng.choice((-30, -12, -7, 5, 11, 25))
        else:
            new = round(val * rng.choice((0.5, 0.75, 1.5, 2.0, 3.0)), 2 if not val.is_integer() else 0)
            if new == val:
                new = val + rng.choice((1, 2, 3))
        out = f"{int(new):,}" if float(new).is_integer() and "," in num else \
            (str(int(new)) if float(new).is_integer() else str(new))
        out += "%" if num.rstrip().endswith("%") else ""
        if out != num:
            return out
    return None


def rule_verify(text, sents, rng):
    facts = [s for s in sents if len(_words(s)) >= 5]
    if len(sents) < 2 or not facts:
        return []
    s = facts[rng.randrange(len(facts))]
    truth = rng.random() < 0.5
    stmt = s
    if not truth:
        nums = list(_NUMBER.finditer(s))
        known = mid_caps(sents)
        other_names = [n for t in sents for n in names(t, known)]
        swapped = None
        if nums:
            m = nums[rng.randrange(len(nums))]
            new = _corrupt_number(m.group(0), rng)
            swapped = s[:m.start()] + new + s[m.end():] if new else None
        if swapped is None:
            own = [n for n in names(s, known) if n in s]
            alts = [n for n in dict.fromkeys(other_names) if n not in own]
            if own and alts:
                o = own[rng.randrange(len(own))]
                swapped = s.replace(o, alts[rng.randrange(len(alts))], 1)
        if swapped is None or _norm(swapped) in _norm(text):
            truth = True
        else:
            stmt = swapped
    q = _pick(rng, VERIFY_Q).format(s=_strip_end(stmt), s_l=_lower_first(_strip_end(stmt)) + "?")
    return [Pair(q + _options(("yes", "no")), "yes" if truth else "no")]


RULES: dict[str, Callable] = {
    "topic": rule_topic, "summary": rule_summary, "word2text": rule_word2text, "nli": rule_nli,
    "cause_effect": rule_cause_effect, "paraphrase": rule_paraphrase, "completion": rule_completion,
    "fill_blank": rule_fill_blank, "verify": rule_verify,
}


def _rng(text: str, seed: int, rule: str) -> random.Random:
    h = hashlib.sha256(f"{seed}\x00{rule}\x00{text}".encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def mine_tagged(text: str, seed: int = 0, rules: Sequence[str] | None = None) -> list[tuple[str, Pair]]:
    """(rule name, pair) for every rule that fires; pure function of (text, seed)."""
    text = text.strip()
    sents = split_sentences(text)
    out, seen = [], set()
    for name in rules or RULES:
        for p in RULES[name](text, sents, _rng(text, seed, name)):
            p = Pair(p.instruction.strip(), p.response.strip())
            if _keep(p, text) and p.instruction.lower() not in seen:
                seen.add(p.instruction.lower())
                out.append((name, p))
    return out


def mine(text: str, seed: int = 0) -> list[Pair]:
    """The rule-based pairs of a raw text."""
    return [p for _, p in mine_tagged(text, seed)]


def version() -> str:
    """Changes whenever the rules change (stage 02 discards finished rounds of older rules)."""
    return "rule_based-" + hashlib.sha256(VERSION_SRC.read_bytes()).hexdigest()[:12]


# ---------------------------------------------------------------- stage 02 engine

class RuleTokenizer:
    """encode/decode for the model-free backend: a "token" is a word with its leading spaces.

    The pieces themselves serve as ids (decode joins them back exactly), so prompt budgets
    and "tokens per pair" are measured in words.
    """

    _piece = re.compile(r"\s*\S+|\s+")

    def encode(self, text: str) -> list[str]:
        return self._piece.findall(text)

    def decode(self, ids: Sequence[str]) -> str:
        return "".join(ids)


def last_context(prompt: str) -> str:
    """The new text of a synthesizer prompt (the last <CON> ... </CON>)."""
    a, b = prompt.rfind(CON), prompt.rfind(CON_END)
    return prompt[a + len(CON):b].strip() if a >= 0 and b > a else ""


class RuleEngine:
    """A `generate(prompts)` backend: mines pairs from each prompt's new text (history unused)."""

    name = "rule_based"

    def __init__(self, tokenizer: RuleTokenizer, seed: int = 0):
        self.tok = tokenizer
        self.seed = seed

    def generate(self, prompts):
        from .synthesize import GenOut

        outs = []
        for p in prompts:
            text = render_pairs(mine(last_context(self.tok.decode(p)), self.seed))
            outs.append(GenOut(text, len(self.tok.encode(text))))
        return outs


# ---------------------------------------------------------------- preview

def preview(texts: Sequence, seed: int = 0, width: int = 90):
    """A table of the pairs mined from a few texts (str or objects with .text/.id)."""
    import pandas as pd

    rows = []
    for i, t in enumerate(texts):
        text = getattr(t, "text", t)
        tid = getattr(t, "id", str(i))
        for rule, p in mine_tagged(text, seed):
            rows.append({"text": tid, "rule": rule,
                         "instruction": _clip(p.instruction, width), "response": _clip(p.response, width)})
    return pd.DataFrame(rows, columns=["text", "rule", "instruction", "response"])


def preview_document(text, seed: int = 0) -> str:
    """One raw text turned into its pre-training document (rule-based pairs, templified)."""
    from .templify import Member, templify_chain

    body = getattr(text, "text", text)
    tid = getattr(text, "id", "preview")
    return templify_chain([Member(tid, body, mine(body, seed))], seed, f"preview-{tid}")[0]["text"]


def _clip(s: str, width: int) -> str:
    s = s.replace("\n", " / ")
    return s if len(s) <= width else s[:width - 1] + "…"
