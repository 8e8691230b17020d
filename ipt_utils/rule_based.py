"""Rule-based task mining from raw text: the paper's Table 4 baseline.

The paper compares its synthesizer with AdaptLLM's "reading comprehension" conversion
(Cheng et al., 2023), which mines tasks from connectives and patterns in the raw text
itself. This module follows its six task types (our own code and wording):

  nli              a long sentence followed by one that opens with a connective: entail
                   (therefore, thus, ...), contradict (however, but, ...) or neutral
                   (moreover, also, ...); both >= 50 characters without commas. 80% ask to
                   classify the relation (options), 20% to generate the second sentence.
  common_reason    cause -> effect across sentences ("X. Therefore/Thus, Y.") and
                   effect -> cause inside one ("Y due to / owing to / on account of X").
  paraphrase       "X. In other words / Namely / That is to say / Similarly / Equally, Y."
                   and "X, i.e. Y" -> similar; contrast connectives -> different; generate
                   or classify.
  word2text        sentences with >= 3 domain keywords (words of a domain vocabulary that
                   are not common general words) -> write a sentence from the keywords;
                   definitions ("X is defined as Y"); topics ("X is about / talks about Y").
  summarize        a short first line is the title: write a title / write the opening of an
                   article with this title.
  text_completion  the text split at a sentence boundary: continue from the sentence
                   before the split (the continuation is at most two sentences, so the
                   text is not duplicated into the answer).

At most MAX_PER_SUBCATEGORY examples per subcategory; examples of one type are grouped, in
the order above. No rule keys on the vocabulary of our fixture generator: the domain word
lists below are general biomedical / financial terms written for this module.
Output is a pure function of (text, seed). `RuleTokenizer`/`RuleEngine` let stage 02's
multi-round driver run with no model.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Callable, Sequence

from .format import CON, CON_END, Pair, render_pairs
from .generation import GenOut
from .hashing import digest, file_digest
from .templify import Member, templify_chain

VERSION_SRC = Path(__file__).resolve()
MAX_PER_SUBCATEGORY = 2
MAX_SHARE = 0.8  # a response longer than this share of the text counts as copying it
NLI_MIN_CHARS = 50

_ABBREV = re.compile(r"\b(?:e\.g|i\.e|etc|vs|Dr|Mr|Mrs|Ms|Prof|St|No|Fig|al|approx|Inc|Ltd|Co|U\.S)\.$")
_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"[A-Za-z][A-Za-z\-]*")

# ---------------------------------------------------------------- vocabularies
# Common English words (function words and frequent general vocabulary): never keywords.
GENERAL_WORDS = frozenset("""
a about above after again against all almost also although always am among an and another any are
around as at away back be because been before being below between both but by can could day did
different do does done down during each early either enough even ever every few first for found from
further get give given good great had has have having he her here high him his how however i if in
into is it its just keep know large last later least less like little long made make many may me
might more most much must my near need never new next no not now number of off often old on once one
only or other our out over own part people place point right same see several she should show since
small so some still such take than that the their them then there these they thing think this those
though three through thus time to too two under until up upon use used very was way we well were
what when where whether which while who whom whose why will with within without work would year years
yet you your study result results level levels effect effects rate rates use case cases group
groups data increase increased higher lower change changes based associated including total
""".split())
# Domain vocabularies: words frequent in the domain's own writing.
DOMAIN_WORDS = {
    "biomedicine": frozenset("""
patient patients clinical trial trials tumor tumour tumors cancer cancers cell cells gene genes
genetic protein proteins receptor receptors enzyme enzymes mutation mutations dose doses dosage
therapy therapies treatment treatments drug drugs placebo randomized cohort cohorts disease diseases
infection infections antibody antibodies antigen immune inflammation inflammatory chronic acute
symptom symptoms diagnosis diagnostic biopsy tissue tissues serum plasma blood insulin glucose
diabetes cardiovascular cardiac hypertension renal hepatic liver kidney lung pulmonary neuronal
neurons brain cortex syndrome pathway pathways expression transcription kinase inhibitor inhibitors
inhibition metabolism metabolic mortality morbidity prognosis survival incidence prevalence
epidemiological vaccine vaccination virus viral bacterial bacteria pathogen pathogens microbial
antibiotic antibiotics surgery surgical postoperative intravenous oral adverse toxicity efficacy
pharmacokinetics biomarker biomarkers genome genomic chromosome dna rna mrna sequencing mice rats
murine vitro vivo assay lesion lesions carcinoma lymphocytes macrophages cytokine cytokines
apoptosis stem membrane mitochondrial oxidative hormone hormones estrogen obesity asthma
""".split()),
    "finance": frozenset("""
revenue revenues earnings profit profits margin margins dividend dividends equity equities bond
bonds yield yields coupon maturity interest inflation deflation liquidity leverage debt debts
credit lender lenders loan loans mortgage mortgages asset assets liability liabilities balance
sheet cash flow flows capital investor investors investment investments portfolio portfolios stock
stocks share shares shareholder shareholders valuation volatility hedge hedging derivative
derivatives futures options swap swaps currency currencies exchange fiscal monetary central bank
banks banking deposit deposits fund funds mutual etf index indices market markets trading trader
traders broker brokerage securities issuer issuance underwriting ipo merger mergers acquisition
acquisitions quarterly annual guidance forecast analyst analysts eps ebitda depreciation
amortization tax taxes budget deficit surplus treasury treasuries default spread spreads
benchmark basis points premium insurance insurer underwriter pension retirement savings fintech
payment payments lending borrowing borrowers collateral recession gdp unemployment
""".split()),
}

# ---------------------------------------------------------------- connectives
ENTAIL = ("therefore", "thus", "hence", "consequently", "accordingly", "as a result", "so", "yes")
CONTRADICT = ("however", "but", "nevertheless", "nonetheless", "in contrast", "on the contrary", "yet",
              "still", "no")
NEUTRAL = ("moreover", "furthermore", "additionally", "in addition", "also", "besides", "maybe", "perhaps")
CAUSE_EFFECT = ("therefore", "thus", "hence", "consequently", "as a result", "as a consequence",
                "for this reason")
EFFECT_CAUSE = ("due to", "owing to", "on account of")
SIMILAR = ("in other words", "namely", "that is to say", "that is", "i.e.", "similarly", "equally",
           "likewise")
CONTRAST = ("however", "in contrast", "on the contrary", "conversely", "by contrast")


# Words that open ordinary sentences too ("No further ...", "So many ...", "Still water ...",
# "That is a ..."): they count as a connective only when a comma follows them.
COMMA_ONLY = frozenset(("yes", "no", "so", "yet", "still", "also", "besides", "maybe", "perhaps", "that is",
                        "equally"))


def _alts(words) -> str:
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


def _lead_re(words: Sequence[str]) -> re.Pattern:
    """(connective, rest) of a sentence opening with one of `words`; COMMA_ONLY words need a comma."""
    free = [w for w in words if w not in COMMA_ONLY]
    comma = [w for w in words if w in COMMA_ONLY]
    guard = "|".join(x for x in (rf"(?:{_alts(free)})(?:,|\s)" if free else "",
                                 rf"(?:{_alts(comma)})," if comma else "") if x)
    return re.compile(rf"^(?={guard})({_alts(words)})(?:,\s*|\s+)(.+)$", re.IGNORECASE | re.DOTALL)


_NLI_LEAD = _lead_re(ENTAIL + CONTRADICT + NEUTRAL)
_CAUSE_LEAD = _lead_re(CAUSE_EFFECT)
_PARA_LEAD = _lead_re(SIMILAR + CONTRAST)
_EFFECT_CAUSE = re.compile(rf"^(.{{15,}}?),?\s+(?:{'|'.join(EFFECT_CAUSE)})\s+(.{{6,}})$", re.IGNORECASE)
_IE_MID = re.compile(r"^(.{15,}?)\s*[,(]\s*(?:i\.e\.|that is|namely|in other words),?\s+(.{8,}?)\)?$",
                     re.IGNORECASE)
_DEFINITION = re.compile(r"^(?:An?\s+|The\s+)?([\w\- ]{2,60}?)\s+(?:is|are)\s+(?:defined as|known as|"
                         r"referred to as|described as)\s+(.{8,})$", re.IGNORECASE)
# "is about 1,200 kilometres long" gives a quantity, not a topic: no number after "about".
_NUMBER = (r"(?:[\d$€£]|(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
           r"fifty|hundred|thousand|half|a (?:third|quarter|half|hundred|thousand|dozen|million))\b)")
_TOPIC = re.compile(r"^(.{3,80}?)\s+(?:(?:is|are|talks?) about\s+(?!\s|" + _NUMBER + r")|is concerned with\s+|"
                    r"deals with\s+|focuses on\s+)(.{6,})$", re.IGNORECASE)


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


def _sentence(s: str) -> str:
    s = _strip_end(s)
    return _cap(s) + "." if s else ""


def _keep(pair: Pair, text: str) -> bool:
    """Non-empty, and the response is not the (near-)whole text."""
    q, a = pair.instruction.strip(), pair.response.strip()
    if not q or not a:
        return False
    na, nt = _norm(a), _norm(text)
    return bool(na) and na != nt and len(a) <= MAX_SHARE * len(text.strip())


def _options(items: Sequence[str]) -> str:
    return "\nOptions:\n" + "\n".join(f"- {x}" for x in items)


def _pick(rng: random.Random, pool: Sequence[str]) -> str:
    return pool[rng.randrange(len(pool))]


def _take(rng: random.Random, items: list, k: int = MAX_PER_SUBCATEGORY) -> list:
    """At most k items, chosen at random, in text order."""
    if len(items) <= k:
        return items
    return [items[i] for i in sorted(rng.sample(range(len(items)), k))]


def domain_keywords(sentence: str) -> tuple[str, list[str]]:
    """(domain, its keywords in the sentence, first occurrence order) for the domain with most."""
    words = [w.lower() for w in _WORD.findall(sentence)]
    best = ("", [])
    for dom, vocab in DOMAIN_WORDS.items():
        kws = list(dict.fromkeys(w for w in words if w in vocab and w not in GENERAL_WORDS))
        if len(kws) > len(best[1]):
            best = (dom, kws)
    return best


# ---------------------------------------------------------------- rules
# Each rule: (text, sentences, rng) -> list[Pair]; at most MAX_PER_SUBCATEGORY per subcategory.

NLI_LABELS = {"entail": "yes", "contradict": "no", "neutral": "maybe"}
NLI_CLASSIFY = ('"{a}"\nDoes it follow that "{b}"?', 'Premise: {a}\nHypothesis: {b}\nIs the hypothesis entailed by the premise?',
                'Given that "{a}", can we conclude that "{b}"?', 'Sentence 1: {a}\nSentence 2: {b}\nDoes sentence 1 imply sentence 2?')
NLI_GENERATE = {"entail": ('Write a sentence that follows from this one: "{a}"', 'What can be concluded from "{a}"?'),
                "contradict": ('Write a sentence that contrasts with this one: "{a}"',
                               'State something that goes against "{a}"'),
                "neutral": ('Add a related statement to this sentence: "{a}"',
                            'Write a sentence that neither follows from nor contradicts "{a}"')}


def _relation(conn: str) -> str:
    c = conn.lower()
    return "entail" if c in ENTAIL else "contradict" if c in CONTRADICT else "neutral"


def nli_items(sents: Sequence[str]) -> list[tuple[str, str, str]]:
    """(first sentence, second without its connective, relation) of qualifying neighbours."""
    out = []
    for a, b in zip(sents, sents[1:]):
        m = _NLI_LEAD.match(b)
        if not m:
            continue
        rest = _sentence(m.group(2))
        if len(a) >= NLI_MIN_CHARS and len(rest) >= NLI_MIN_CHARS and "," not in a and "," not in rest:
            out.append((a, rest, _relation(m.group(1))))
    return out


def rule_nli(text, sents, rng):
    classify, generate = [], []
    for a, b, rel in nli_items(sents):
        if rng.random() < 0.8:
            q = _pick(rng, NLI_CLASSIFY).format(a=_strip_end(a), b=_strip_end(b)) + _options(("yes", "maybe", "no"))
            classify.append(Pair(q, NLI_LABELS[rel]))
        else:
            generate.append(Pair(_pick(rng, NLI_GENERATE[rel]).format(a=_strip_end(a)), b))
    return _take(rng, classify) + _take(rng, generate)


EFFECT_Q = ('What is a consequence of the following? "{x}"', 'Given that {x_l}, what follows?',
            'What resulted from this: "{x}"?')
CAUSE_Q = ('Why is it that {y_l}?', 'What is the cause of the following? "{y}"', 'What explains this: "{y}"?')


def _lower_start(s: str) -> str:
    w = s.split(" ", 1)[0]
    return s if w.isupper() or any(c.isupper() for c in w[1:]) else s[:1].lower() + s[1:]


def rule_common_reason(text, sents, rng):
    forward, backward = [], []
    for a, b in zip(sents, sents[1:]):
        m = _CAUSE_LEAD.match(b)
        if m and len(a) >= 20:
            x = _strip_end(a)
            forward.append(Pair(_pick(rng, EFFECT_Q).format(x=x, x_l=_lower_start(x)), _sentence(m.group(2))))
    for s in sents:
        m = _EFFECT_CAUSE.match(_strip_end(s))
        if m:
            y = _strip_end(m.group(1))
            backward.append(Pair(_pick(rng, CAUSE_Q).format(y=y, y_l=_lower_start(y)), _sentence(m.group(2))))
    return _take(rng, forward) + _take(rng, backward)


PARA_GEN = {"similar": ('Say this in other words: "{a}"', 'Paraphrase the sentence: "{a}"',
                        'Restate the following: "{a}"'),
            "different": ('Write a sentence that contrasts with: "{a}"', 'Give a statement that differs from "{a}"')}
PARA_CLS = ('"{a}"\n"{b}"\nDo these two sentences express the same idea?',
            'Sentence A: {a}\nSentence B: {b}\nAre A and B paraphrases of each other?')


def paraphrase_items(sents: Sequence[str]) -> list[tuple[str, str, str]]:
    out = []
    for a, b in zip(sents, sents[1:]):
        m = _PARA_LEAD.match(b)
        if m and len(a) >= 20 and len(m.group(2)) >= 15:
            out.append((a, _sentence(m.group(2)), "similar" if m.group(1).lower() in SIMILAR else "different"))
    for s in sents:
        m = _IE_MID.match(_strip_end(s))
        if m:
            out.append((_sentence(m.group(1)), _sentence(m.group(2)), "similar"))
    return out


def rule_paraphrase(text, sents, rng):
    gen, cls = [], []
    for a, b, rel in paraphrase_items(sents):
        if rng.random() < 0.5:
            gen.append(Pair(_pick(rng, PARA_GEN[rel]).format(a=_strip_end(a)), b))
        else:
            q = _pick(rng, PARA_CLS).format(a=_strip_end(a), b=_strip_end(b)) + _options(("yes", "no"))
            cls.append(Pair(q, "yes" if rel == "similar" else "no"))
    return _take(rng, gen) + _take(rng, cls)


KEYWORD_Q = ("Write a sentence about {dom} that uses these words: {kw}.",
             "Generate a {dom} sentence containing the keywords {kw}.",
             "Use the following {dom} terms in one sentence: {kw}.")
DEFINE_Q = ("How is {x} defined?", "What is meant by {x}?", "Give the definition of {x}.")
TOPIC_Q = ("What does {x_l} talk about?", "What is {x_l} about?", "Which subject does {x_l} deal with?")


def rule_word2text(text, sents, rng):
    kw, defs, topics = [], [], []
    for s in sents:
        dom, words = domain_keywords(s)
        if len(words) >= 3:
            shown = words[:4]
            kw.append(Pair(_pick(rng, KEYWORD_Q).format(dom=dom, kw=", ".join(shown)), s))
        m = _DEFINITION.match(_strip_end(s))
        if m:
            defs.append(Pair(_pick(rng, DEFINE_Q).format(x=m.group(1).strip()), _sentence(m.group(2))))
        m = _TOPIC.match(_strip_end(s))
        if m:
            x = m.group(1).strip()
            topics.append(Pair(_pick(rng, TOPIC_Q).format(x_l=_lower_start(x)), _sentence(m.group(2))))
    return _take(rng, kw) + _take(rng, defs) + _take(rng, topics)


TITLE_Q = ("Write a title for this text.", "What would be a good headline for the article?",
           "Suggest a title for the passage.")
ARTICLE_Q = ('Write the opening of an article with the title "{t}".', 'Begin an article titled "{t}".',
             'Here is a title: "{t}". Write the first lines of the article.')


def title_of(text: str) -> tuple[str, str] | None:
    """(title, body) when the first line is short and title-like and a body follows."""
    first, _, body = text.strip().partition("\n")
    first, body = first.strip(), body.strip()
    if not body or not first or len(first) > 120 or len(first.split()) > 16 or first[-1] in ".,;:":
        return None
    if len(split_sentences(body)) < 2:
        return None
    return first, body


def rule_summarize(text, sents, rng):
    found = title_of(text)
    if not found:
        return []
    title, body = found
    opening = " ".join(split_sentences(body)[:2])
    return [Pair(_pick(rng, TITLE_Q), title), Pair(_pick(rng, ARTICLE_Q).format(t=title), opening)]


COMPLETION_Q = ('How does the text continue after "{s}"?', 'Continue the passage from: "{s}"',
                'What comes next in the text after this sentence? "{s}"')


def rule_text_completion(text, sents, rng):
    ss = list(sents)
    if len(ss) < 3:
        return []
    k = rng.randrange(1, len(ss) - 1)  # split after sentence k-1 (>= 1 sentence on each side)
    return [Pair(_pick(rng, COMPLETION_Q).format(s=_strip_end(ss[k - 1])), " ".join(ss[k:k + 2]))]


RULES: dict[str, Callable] = {
    "nli": rule_nli, "common_reason": rule_common_reason, "paraphrase": rule_paraphrase,
    "word2text": rule_word2text, "summarize": rule_summarize, "text_completion": rule_text_completion,
}


def _rng(text: str, seed: int, rule: str) -> random.Random:
    return random.Random(int(digest(f"{seed}\x00{rule}\x00{text}", n=16), 16))  # the hash's first 8 bytes


def mine_tagged(text: str, seed: int = 0, rules: Sequence[str] | None = None) -> list[tuple[str, Pair]]:
    """(task type, pair) for every rule that fires, grouped by type; pure function of (text, seed)."""
    text = text.strip()
    titled = title_of(text)  # a title line is not a sentence of the body
    sents = split_sentences(titled[1] if titled else text)
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
    return "rule_based-" + file_digest(VERSION_SRC, n=12)


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
    body = getattr(text, "text", text)
    tid = getattr(text, "id", "preview")
    return templify_chain([Member(tid, body, mine(body, seed))], seed)[0]["text"]


def _clip(s: str, width: int) -> str:
    s = s.replace("\n", " / ")
    return s if len(s) <= width else s[:width - 1] + "…"
