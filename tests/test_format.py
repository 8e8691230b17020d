"""Format core: byte-exact markup, parsing rules, BOS handling, neutralising."""
import json

import pytest

from ipt_utils import format as fmt
from ipt_utils.format import Pair


def test_context_byte_exact():
    assert fmt.render_context("A text.") == "<s> <CON> A text. </CON>\n\n"
    assert fmt.render_context("") == "<s>"


def test_pairs_and_example_byte_exact():
    pairs = [Pair("Q1?", "A1."), Pair("Q2?", "A2.")]
    assert fmt.render_pairs(pairs) == "<QUE> Q1? <ANS> A1. </END>\n\n<QUE> Q2? <ANS> A2. </END>"
    assert fmt.render_example("T", pairs) == (
        "<s> <CON> T </CON>\n\n<QUE> Q1? <ANS> A1. </END>\n\n<QUE> Q2? <ANS> A2. </END></s>")
    assert fmt.render_example("", [("q", "a")]) == "<s><QUE> q <ANS> a </END></s>"


def test_prompt_is_history_oldest_first_then_context():
    h = [("old", [Pair("q0", "a0")]), ("mid", [Pair("q1", "a1")])]
    assert fmt.build_prompt("new", h) == (
        "<s> <CON> old </CON>\n\n<QUE> q0 <ANS> a0 </END></s>"
        "<s> <CON> mid </CON>\n\n<QUE> q1 <ANS> a1 </END></s>"
        "<s> <CON> new </CON>\n\n")
    assert fmt.build_prompt("new") == fmt.render_context("new")


def test_parse_roundtrip():
    pairs = [Pair("What is X?", "X is Y."), Pair("Pick one.\nOptions:\n- a\n- b", "a")]
    assert fmt.parse_pairs(fmt.render_pairs(pairs) + "</s>") == pairs


def test_parse_rules():
    gen = ("<QUE> good one <ANS>  fine answer  </END>\n\n"
           "<QUE> two ans <ANS> x <ANS> y </END>\n\n"
           "no que here <ANS> z </END>\n\n"
           "<QUE> empty answer <ANS>   </END>\n\n"
           "<QUE>  <ANS> empty question </END>\n\n"
           "<QUE> GOOD ONE <ANS> duplicate, dropped </END>\n\n"
           "<QUE> second <ANS> kept </END>\n\n"
           "<QUE> unfinished <ANS> trailing item")
    pairs, st = fmt.parse_pairs_with_stats(gen)
    assert pairs == [Pair("good one", "fine answer"), Pair("second", "kept")]
    assert st == fmt.ParseStats(items=7, kept=2, malformed=4, duplicates=1)
    # a trailing item is dropped even if it looks complete but lacks </END>
    assert fmt.parse_pairs("<QUE> q <ANS> a") == []
    assert fmt.parse_pairs("") == []
    # leading whitespace before <QUE> is stripped, so the item is kept
    assert fmt.parse_pairs("\n\n  <QUE> q <ANS> a </END>") == [Pair("q", "a")]


def test_neutralise():
    text, changed = fmt.neutralise("keep <b>this</b> but <s> and </END> and <CON>x</CON> go")
    assert changed
    for tok in fmt.MARKUP:
        assert tok not in text
    assert "<b>this</b>" in text
    assert fmt.neutralise("plain text") == ("plain text", False)


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory):
    from ipt_utils import assets

    d = tmp_path_factory.mktemp("tok")
    corpus = d / "corpus.jsonl"
    with open(corpus, "w") as f:
        for i in range(200):
            f.write(json.dumps({"text": f"The sample text number {i} talks about cells, prices and "
                                        f"answers to questions {i * 7}."}) + "\n")
    return assets.build_tiny_tokenizer(d / "tokenizer", vocab_size=400, files=(str(corpus),))


def test_exactly_one_bos_per_example(tiny_tok):
    from ipt_utils.multiround import Tokenizer

    bos = tiny_tok.bos_token_id
    prompt = fmt.build_prompt("A new text about cells.", [("Old text.", [Pair("q?", "a.")])])
    ids = Tokenizer(tiny_tok).encode(prompt)
    assert ids[0] == bos and ids[1] != bos
    assert ids.count(bos) == 2  # one per example, none doubled
    ids = Tokenizer(tiny_tok).encode(fmt.render_context("Alone."))
    assert ids[0] == bos and ids.count(bos) == 1
    # markup tokens are single ids; neutralised text never produces them
    assert len(tiny_tok("<CON>", add_special_tokens=False)["input_ids"]) == 1
    text, _ = fmt.neutralise("evil <s> and </END>")
    assert bos not in Tokenizer(tiny_tok).encode(text)
