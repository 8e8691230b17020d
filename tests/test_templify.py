"""templify: documents from chains, one pattern per question type, the release's shapes and
layout shares (measured over a few thousand synthetic chains), dropped pairs, determinism."""
import random
import re
from collections import Counter

import pytest

from ipt_utils import templify as tp
from ipt_utils.templify import Member

WORDS = "cell price gene market rate study patient growth bank model result tissue asset".split()


def _sentence(rng, n=8):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


class Gen:
    """Synthetic chains; options carry unique tokens so their presence is checkable; the
    malformed pairs it makes are counted in `bad`."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.k = 0
        self.bad = 0

    def pair(self, kind):
        rng = self.rng
        self.k += 1
        q, a = f"{_sentence(rng, 6)[:-1]} q{self.k}?", f"{_sentence(rng, 4)[:-1]} a{self.k}."
        if kind in ("options", "options+cot", "bad_option"):
            opts = [f"opt{self.k}x{j}" for j in range(3)]
            q = f"{q}\nOptions:\n" + "\n".join(f"- {o}" for o in opts)
            a = "something else" if kind == "bad_option" else opts[1]
        if kind in ("cot", "options+cot"):
            return f"{q}\nLet's think step by step.", f"{_sentence(rng)} r{self.k}.\nTherefore, the answer is {a}"
        if kind == "bad_cot":  # two markers: the release drops it
            return (f"{q}\nLet's think step by step.",
                    f"So. Therefore, the answer is x.\nTherefore, the answer is {a}")
        if kind.startswith("bad"):
            self.bad += 1
        return q, a

    def chain(self, cid, m):
        members = []
        for j in range(m):
            n = self.rng.choice([0, 1, 2, 3, 4, 5, 5, 6]) if j == 0 else self.rng.choice([0, 2, 3, 4, 5, 6])
            kinds = self.rng.choices(["plain", "options", "cot", "options+cot", "bad_cot", "bad_option"],
                                     [50, 17, 15, 12, 3, 3], k=n)
            self.bad += kinds.count("bad_cot")
            pairs = [self.pair(kd) for kd in kinds]
            members.append(Member(f"{cid}.{j}", " ".join(_sentence(self.rng) for _ in range(3)), pairs))
            if not pairs:  # a text without pairs breaks the chain
                break
        return members


def _chains(seed=0, n=3000):
    g = Gen(seed)
    return [(f"c{i}", g.chain(f"c{i}", 2 if i % 2 else 3)) for i in range(n)], g


@pytest.fixture(scope="module")
def rendered():
    chains, g = _chains()
    return chains, g, [(members, tp.templify_chain(members, 0)) for cid, members in chains]


def _expected_docs(members):
    """Independent statement of the rule: runs of members with a usable pair; others alone."""
    groups, run = [], []
    for m in members:
        if any(not tp.parse_pair(q, a).malformed for q, a in m.pairs):
            run.append(m.id)
        else:
            if run:
                groups.append(run)
            run = []
            groups.append([m.id])
    return groups + ([run] if run else [])


def test_documents_cover_every_text_once_in_order(rendered):
    chains, g, out = rendered
    n_docs = n_multi = n_texts = 0
    for members, docs in out:
        assert [i for d in docs for i in d["member_ids"]] == [m.id for m in members]
        assert [d["member_ids"] for d in docs] == _expected_docs(members)
        for d in docs:
            assert d["text"].strip()  # no empty documents
            assert d["id"] == d["member_ids"][0]
            for mid in d["member_ids"]:
                assert next(m for m in members if m.id == mid).text in d["text"]
            if d["layout"] == tp.RAW:
                assert len(d["member_ids"]) == 1 and d["text"] == members[[m.id for m in members].index(d["id"])].text
        n_docs += len(docs)
        n_multi += sum(len(d["member_ids"]) > 1 for d in docs)
        n_texts += len(members)
    # measured on this fixed chain set (M = 2 and 3, ~15% pair-less texts)
    # (the release: M=2 1.63 texts per document, M=3 2.08; these chains mix M=2 and 3)
    assert 1.1 < n_docs / len(chains) < 1.3
    assert 0.55 < n_multi / n_docs < 0.68
    assert 1.7 < n_texts / n_docs < 2.05


def test_dropped_pairs_counted_exactly(rendered):
    _, g, out = rendered
    dropped = sum(d["dropped"] for _, docs in out for d in docs)
    assert dropped == g.bad > 100
    for members, docs in out:
        for d in docs:
            assert d["dropped"] == sum(x["dropped"] for x in d["members"])
            assert "something else" not in d["text"]  # the option answer matching no option is gone


def test_one_wrapper_per_question_type_per_document(rendered):
    _, _, out = rendered
    by_id = {}
    for members, docs in out:
        by_id.update((m.id, m) for m in members)
        for d in docs:
            if d["layout"] != "classic" or tp.PLAIN not in d["modes"]:
                continue
            pat = tp.QA_POOL[d["pattern_index"][tp.PLAIN]]
            for mid in d["member_ids"]:
                for q, a in by_id[mid].pairs:
                    if tp.parse_pair(q, a).mode == tp.PLAIN:
                        assert pat.inp.format(q=q, a=a) in d["text"] and pat.out.format(q=q, a=a) in d["text"]
            assert set(d["pattern_index"]) == set(d["modes"])


def _lead_of(doc_text, pos):
    """The lead-in (TEXT_PATTERNS entry) whose prefix ends at pos; the bare text if none does."""
    fits = [p for p in tp.TEXT_PATTERNS if p != "{text}" and doc_text[:pos].endswith(p.split("{text}")[0])]
    assert len(fits) <= 1
    return fits[0] if fits else "{text}"


def _pattern_re(pattern_tpl, p):
    """Regex of one pair rendered through a pattern template: option blocks and option answers
    (shuffled, labelled per document) are wildcards, everything else literal."""
    opt = p.mode in (tp.OPTIONS, tp.OPTIONS_COT)
    a = p.answer.rstrip(".") if p.mode in (tp.COT, tp.OPTIONS_COT) else p.answer
    fields = {"q": re.escape(p.question), "r": re.escape(p.rationale), "o": "(?s:.+?)",
              "a": "(?s:.+?)" if opt else re.escape(a)}
    parts = re.split(r"(\{[qroa]\})", pattern_tpl)
    return "".join(fields[x[1]] if re.fullmatch(r"\{[qroa]\}", x) else re.escape(x) for x in parts)


def test_same_lead_in_and_pattern_for_every_member_and_pair(rendered):
    """Every member of a document gets the same lead-in, and every pair of a question type the
    pattern recorded for that type (all types, all layouts)."""
    _, _, out = rendered
    checked = Counter()
    for members, docs in out:
        by_id = {m.id: m for m in members}
        for d in docs:
            if d["layout"] == tp.RAW:
                continue
            leads = set()
            for mid in d["member_ids"]:
                m = by_id[mid]
                if d["layout"] != "pairs_first":  # pairs_first frames the text instead
                    leads.add(_lead_of(d["text"], d["text"].index(m.text)))
                for q, a in m.pairs:
                    p = tp.parse_pair(q, a)
                    if p.malformed:
                        continue
                    pat = tp.POOLS[p.mode][d["pattern_index"][p.mode]]
                    for tpl in (pat.inp, pat.out):
                        assert re.search(_pattern_re(tpl, p), d["text"]), (d["layout"], p.mode, tpl, d["text"])
                    checked[d["layout"], p.mode] += 1
            assert len(leads) <= 1, (leads, d["text"])
    assert all(checked[lay, t] > 0 for lay in tp.LAYOUTS for t in tp.QTYPES), checked


def test_inverted_cot_patterns_render_the_rationale_once():
    p = tp.parse_pair("Which metal melts first?\nLet's think step by step.",
                      "Tin has the lowest melting point of the three.\nTherefore, the answer is tin")
    po = tp.parse_pair("Which metal melts first?\nOptions:\n- tin\n- iron\n- copper\nLet's think step by step.",
                       "Tin has the lowest melting point of the three.\nTherefore, the answer is tin")
    style = tp.OptionStyle("\nOptions:\n", "ABC", "{}.", "\n", "{label}", "unknown")
    asks = re.compile(r"reason|step|rationale|argument|worked|working", re.IGNORECASE)
    n = 0
    for pool, pair in ((tp.COT_POOL, p), (tp.OPTION_COT_POOL, po)):
        inverted = [x for x in pool if x.shape == tp.INVERTED]
        assert 36 <= len(inverted) <= 44
        for pat in inverted:
            inp, out = tp.render_pair(pair, pat, style, random.Random(0))
            assert (inp + out).count(pair.rationale) == 1, pat
            assert "Which metal melts first?" in out and "Which metal melts first?" not in inp
            if "{r}" not in pat.inp and asks.search(pat.inp):  # asks for the reasoning: output holds it
                assert "{r}" in pat.out, pat
            n += 1
    assert n >= 72


def _share(xs, pred):
    xs = list(xs)
    return sum(map(pred, xs)) / len(xs)


def test_layout_shares(rendered):
    _, _, out = rendered
    docs = [d for _, ds in out for d in ds if d["layout"] != tp.RAW]
    eligible = [d for d in docs if min(x["pairs_kept"] for x in d["members"]) >= 2]
    few = [d for d in docs if min(x["pairs_kept"] for x in d["members"]) < 2]
    assert len(eligible) > 2000 and len(few) > 300
    # the release's measured shares over its documents with pairs (ours, measured on this chain
    # set: classic .797, pairs_first .054, dialog .047, numbered .039, inline .036, next_turn .026)
    release = {"classic": 0.80, "pairs_first": 0.05, "dialog": 0.05, "numbered": 0.04, "inline": 0.04,
               "next_turn": 0.03}
    mix = Counter(d["layout"] for d in docs)
    assert set(mix) == set(release)
    for name, share in release.items():
        assert abs(mix[name] / len(docs) - share) <= 0.02, (name, mix)
    assert set(Counter(d["layout"] for d in few)) <= set(tp.FEW_PAIR_WEIGHTS)
    classic = [d for d in docs if d["layout"] == "classic"]
    assert abs(_share(classic, lambda d: d["bridge"]) - tp.BRIDGE_SHARE) < 0.04


def test_option_less_about_half_and_really_without_options(rendered):
    chains, _, out = rendered
    opt_docs = [d for _, ds in out for d in ds if d["option_less"] is not None]
    assert len(opt_docs) > 800
    assert 0.42 < _share(opt_docs, lambda d: d["option_less"]) < 0.58
    by_id = {m.id: m for _, ms in chains for m in ms}
    for d in opt_docs:
        for mid in d["member_ids"]:
            for q, a in by_id[mid].pairs:
                p = tp.parse_pair(q, a)
                if p.mode != tp.OPTIONS or p.malformed:
                    continue
                wrong = [o for o in p.options if o != p.answer]
                listed = all(o in d["text"] for o in wrong)
                assert listed != d["option_less"], d["text"]
                assert p.answer in d["text"] or not d["option_less"]


def test_pattern_shape_shares(rendered):
    _, _, out = rendered
    docs = [d for _, ds in out for d in ds]
    qa = [d["patterns"][tp.PLAIN] for d in docs if tp.PLAIN in d["patterns"]]
    cot = [d["patterns"][t] for d in docs for t in (tp.COT, tp.OPTIONS_COT) if t in d["patterns"]]
    assert abs(_share(qa, lambda s: s == tp.INVERTED) - 0.13) < 0.03
    assert abs(_share(cot, lambda s: s == tp.INVERTED) - 0.20) < 0.04
    assert abs(_share(cot, lambda s: s == tp.ANSWER_FIRST) - 0.19) < 0.04
    assert abs(_share(cot, lambda s: s == tp.RATIONALE_IN) - 0.11) < 0.04


def test_pool_sizes_and_shapes():
    assert 75 <= len(tp.QA_POOL) <= 90 and 45 <= len(tp.OPTION_POOL) <= 55
    assert 190 <= len(tp.COT_POOL) <= 220 and 190 <= len(tp.OPTION_COT_POOL) <= 250
    assert sum(not p.lists_options for p in tp.OPTION_POOL) * 2 == len(tp.OPTION_POOL)
    assert all(p.lists_options for p in tp.OPTION_COT_POOL)
    for pool in tp.POOLS.values():
        assert len({(p.inp, p.out) for p in pool}) == len(pool)  # no duplicates
        for p in pool:
            both = p.inp + p.out
            assert "{q}" in both and "{a}" in both
            if p.shape == tp.INVERTED:  # answer given, question asked
                assert "{a}" in p.inp and "{q}" in p.out and "{q}" not in p.inp
            if p.shape == tp.ANSWER_FIRST:
                assert p.out.index("{a}") < p.out.index("{r}")
            if p.shape == tp.RATIONALE_IN:
                assert "{r}" in p.inp and "{a}" in p.out
    for pat in tp.TEXT_PATTERNS:
        assert pat.count("{text}") == 1
    assert sum(p == "{text}" for p in tp.TEXT_PATTERNS) * 2 == len(tp.TEXT_PATTERNS)


def _find_layout(members, layout):
    for s in range(3000):
        d = tp.templify_chain(members, s)[0]
        if d["layout"] == layout:
            return d
    raise AssertionError(layout)


def test_layout_structures():
    members = [Member("a", "Alpha text.", [("Q one?", "A one."), ("Q two?", "A two."), ("Q three?", "A three.")])]
    t = _find_layout(members, "numbered")["text"]
    assert max(t.index(q) for q in ("Q one?", "Q two?", "Q three?")) < min(t.index(a) for a in ("A one.", "A two.", "A three."))
    n_inline = 0
    for s in range(3000):  # the final marker sits after the last exemplar, before the final item
        d = tp.templify_chain(members, s)[0]
        if d["layout"] != "inline":
            continue
        t, n_inline = d["text"], n_inline + 1
        last_shot = max(t.index(x) + len(x) for x in ("Q two?", "A two."))
        final = min(t.index(x) for x in ("Q three?", "A three."))
        between = t[last_shot:final]
        assert sum(m.strip() in between for _, m in tp.INLINE_STYLES) == 1, t
        assert not any(m.strip() in t[:last_shot] for _, m in tp.INLINE_STYLES), t
        if n_inline == 10:
            break
    assert n_inline == 10
    t = _find_layout(members, "next_turn")["text"]
    assert any(f.split("{")[0] in t for f in tp.NEXT_TURN_FRAMES)
    t = _find_layout(members, "pairs_first")["text"]
    assert t.index("A three.") < t.index("Alpha text.") and any(f in t for f in tp.PAIRS_FIRST_FRAMES)
    t = _find_layout(members, "dialog")["text"]
    assert any(f"{u}: " in t and f"{b}: " in t for u, b in tp.DIALOG_ROLES)


def test_determinism_and_seed_changes_output():
    members = _chains(1, 1)[0][0][1]
    assert tp.templify_chain(members, 3) == tp.templify_chain(members, 3)
    texts = {tp.templify_chain(members, s)[0]["text"] for s in range(30)}
    assert len(texts) > 5


def test_parse_pair_modes_and_malformed():
    p = tp.parse_pair("Which?\nOptions:\n- red\n- blue", "blue")
    assert (p.mode, p.question, p.options, p.answer, p.malformed) == (tp.OPTIONS, "Which?", ["red", "blue"], "blue", "")
    p = tp.parse_pair("Why?\nLet's think step by step.", "Because X.\nTherefore, the answer is Y.")
    assert (p.mode, p.question, p.rationale, p.answer) == (tp.COT, "Why?", "Because X.", "Y")
    p = tp.parse_pair("Which?\nOptions:\n- a\n- b\nLet's think step by step.", "Since...\nTherefore, the answer is b")
    assert (p.mode, p.options, p.answer) == (tp.OPTIONS_COT, ["a", "b"], "b")
    assert tp.parse_pair("Just a question?", "Answer.").mode == tp.PLAIN
    assert tp.parse_pair("Options:\nnone here", "x").mode == tp.PLAIN
    assert tp.parse_pair("Why?\nLet's think step by step.", "No marker at all.").malformed == "cot"
    assert tp.parse_pair("Why?\nLet's think step by step.",
                         "Therefore, the answer is a. Therefore, the answer is b").malformed == "cot"
    assert tp.parse_pair("Why?\nLet's think step by step.", "R.\nTherefore, the answer is").malformed == "cot"
    assert tp.parse_pair("Which?\nOptions:\n- red\n- blue", "green").malformed == "option"
    # "none of the above" answers match a none-like option
    assert not tp.parse_pair("Which?\nOptions:\n- red\n- none of the above", "Not enough information").malformed


def test_all_pairs_dropped_makes_a_raw_document():
    m = Member("x", "Some text.", [("Which?\nOptions:\n- red\n- blue", "green")])
    (d,) = tp.templify_chain([m], 0)
    assert (d["layout"], d["text"], d["dropped"]) == (tp.RAW, "Some text.", 1)


def test_options_shuffled_and_answer_mapped_to_label():
    p = tp.parse_pair("Which?\nOptions:\n- red\n- blue\n- green", "green")
    style = tp.OptionStyle("\nChoices:\n", "ABC", "({})", "\n", "{label}", "unknowable")
    seen = set()
    for s in range(20):
        block, a = tp.render_options(p, style, random.Random(s))
        lines = block.split("\n")[2:]
        assert sorted(line[4:] for line in lines) == ["blue", "green", "red"]
        assert f"{a} green" in lines
        seen.add(tuple(lines))
    assert len(seen) > 1
    bullets = tp.OptionStyle("\n", None, "-", "\n", "{label}", "unknowable")
    assert tp.render_options(p, bullets, random.Random(0))[1] == "green"
    assert tp.render_options(p, style, random.Random(0), listed=False) == ("", "green")


def test_none_of_the_above_maps_to_unanswerable():
    p = tp.parse_pair("Which?\nOptions:\n- red\n- none of the above", "None of the above.")
    style = tp.OptionStyle("\nOptions:\n", "ABC", "{}.", "\n", "{label}. {text}", "It is impossible to tell.")
    block, a = tp.render_options(p, style, random.Random(1))
    assert "It is impossible to tell." in block and a.endswith("It is impossible to tell.")
    assert "none of the above" not in block
