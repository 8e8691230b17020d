"""templify: property tests (verbatim text, plain pairs kept, determinism) and the modes."""
import random
from collections import Counter

from ipt_utils import templify as tp
from ipt_utils.templify import Member

WORDS = "cell price gene market rate study patient growth bank model result tissue asset".split()


def _sentence(rng, n=8):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _pair(rng, kind):
    q, a = _sentence(rng, 6)[:-1] + "?", _sentence(rng, 4)
    if kind == "options":
        opts = [_sentence(rng, 2) for _ in range(3)]
        return f"{q}\nOptions:\n" + "\n".join(f"- {o}" for o in opts), opts[1]
    if kind == "cot":
        return f"{q}\nLet's think step by step.", f"{_sentence(rng)}\nTherefore, the answer is {a}"
    return q, a


def _chain(rng, cid):
    members = []
    for j in range(rng.randint(1, 3)):
        n = rng.choice([0, 1, 2, 3, 4]) if j == 0 else rng.choice([1, 2, 3])
        pairs = [_pair(rng, rng.choice(["plain", "plain", "options", "cot"])) for _ in range(n)]
        members.append(Member(f"{cid}.{j}", " ".join(_sentence(rng) for _ in range(3)), pairs))
        if not pairs:
            break
    return members


def _chains(seed, n=200):
    rng = random.Random(seed)
    return [(f"c{i}", _chain(rng, f"c{i}")) for i in range(n)]


def test_properties_verbatim_text_plain_pairs_and_determinism():
    for seed in range(3):
        for cid, members in _chains(seed):
            out = tp.templify_chain(members, seed, cid)
            assert out == tp.templify_chain(members, seed, cid)
            assert [o["id"] for o in out] == [m.id for m in members]
            for m, o in zip(members, out):
                assert m.text in o["text"]
                for q, a in m.pairs:
                    if tp.parse_pair(q, a).mode == tp.PLAIN:
                        assert q in o["text"] and a in o["text"]
                if not m.pairs:
                    assert o["text"] == m.text and o["mode"] == o["layout"] == tp.RAW
                # one layout per document
                assert o["layout"] in (out[0]["layout"], tp.RAW)


def test_seed_changes_output():
    members = _chains(0, 1)[0][1]
    texts = {tp.templify_chain(members, s, "c0")[0]["text"] for s in range(30)}
    assert len(texts) > 5


def test_parse_pair_modes():
    p = tp.parse_pair("Which?\nOptions:\n- red\n- blue", "blue")
    assert (p.mode, p.question, p.options, p.answer) == (tp.OPTIONS, "Which?", ["red", "blue"], "blue")
    p = tp.parse_pair("Why?\nLet's think step by step.", "Because X.\nTherefore, the answer is Y.")
    assert (p.mode, p.question, p.rationale, p.answer) == (tp.COT, "Why?", "Because X.", "Y")
    p = tp.parse_pair("Which?\nOptions:\n- a\n- b\nLet's think step by step.",
                      "Since...\nTherefore, the answer is b")
    assert (p.mode, p.options, p.answer) == (tp.OPTIONS_COT, ["a", "b"], "b")
    assert tp.parse_pair("Just a question?", "Answer.").mode == tp.PLAIN
    # an "Options:" line without a list stays plain
    assert tp.parse_pair("Options:\nnone here", "x").mode == tp.PLAIN


def test_options_shuffled_and_answer_mapped_to_label():
    p = tp.parse_pair("Which?\nOptions:\n- red\n- blue\n- green", "green")
    style = tp.OptionStyle("\nChoices:\n", "ABC", "({})", "\n", "{label}", "unknowable")
    seen = set()
    for s in range(20):
        q, a = tp.render_options(p, style, random.Random(s))
        lines = q.split("\n")[2:]
        assert sorted(line[4:] for line in lines) == ["blue", "green", "red"]
        assert f"{a} green" in lines  # answer is the label of "green"
        seen.add(tuple(lines))
    assert len(seen) > 1  # shuffled
    bullets = tp.OptionStyle("\n", None, "-", "\n", "{label}", "unknowable")
    assert tp.render_options(p, bullets, random.Random(0))[1] == "green"  # no unique labels


def test_none_of_the_above_maps_to_unanswerable():
    p = tp.parse_pair("Which?\nOptions:\n- red\n- none of the above", "None of the above.")
    style = tp.OptionStyle("\nOptions:\n", "ABC", "{}.", "\n", "{label}. {text}", "It is impossible to tell.")
    q, a = tp.render_options(p, style, random.Random(1))
    assert "It is impossible to tell." in q and a.endswith("It is impossible to tell.")
    assert "none of the above" not in q


def test_layout_mix():
    rng = random.Random(5)
    many = [Member(f"m{i}", _sentence(rng), [_pair(rng, "plain") for _ in range(3)]) for i in range(2000)]
    mix = Counter(tp.templify_chain([m], 0, m.id)[0]["layout"].split("+")[0] for m in many)
    assert set(mix) == set(tp.LAYOUTS)
    assert 0.75 < mix["classic"] / 2000 < 0.85
    few = [Member(f"f{i}", _sentence(rng), [_pair(rng, "plain")]) for i in range(500)]
    mix = Counter(tp.templify_chain([m], 0, m.id)[0]["layout"].split("+")[0] for m in few)
    assert set(mix) <= {"classic", "dialog"}


def test_pattern_pools_are_well_formed():
    for pat in tp.TEXT_PATTERNS:
        assert pat.count("{text}") == 1
    for pool in (tp.QA_PATTERNS, tp.INLINE_PATTERNS):
        for pat in pool:
            assert pat.format(q="Q", a="A").count("Q") >= 1
    assert 15 <= len(tp.QA_PATTERNS) <= 30
    assert sum(p == "{text}" for p in tp.TEXT_PATTERNS) * 2 == len(tp.TEXT_PATTERNS)
