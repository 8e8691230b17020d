"""Synthesizer evaluation metrics on hand-made examples."""
import pytest

from ipt_utils.format import Pair
from ipt_utils.synth_eval import aggregate, exact_match, normalize, score_context, token_f1


def test_normalize_and_token_f1():
    assert normalize("The  Royal Quill Medal!") == "royal quill medal"
    assert token_f1("the Royal Quill Medal", "Royal Quill medal.") == 1.0
    # pred "quill medal" vs gold "royal quill medal": p=2/2, r=2/3 -> f1 = 0.8
    assert token_f1("quill medal", "royal quill medal") == pytest.approx(0.8)
    assert token_f1("banana", "royal quill medal") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0
    assert exact_match("A deep-green", "a deep green") == 1.0


def test_score_context_matches_each_generated_pair_once():
    gold = [Pair("What colour is Mokase?", "milky white"), Pair("What is Mokase used for?", "bicycle frames")]
    gen = [Pair("What colour is Mokase?", "white"),  # matched to gold 0, F1 = 2/3
           Pair("Where was Mokase found?", "Thalova")]  # instruction F1 with gold 1 = 0.4 (< 0.5)
    r = score_context(gen, gold)
    assert r["gold"] == 2 and r["generated"] == 2 and r["matched"] == 1
    assert r["f1_sum"] == pytest.approx(2 / 3) and r["em_sum"] == 0.0
    # one generated pair cannot serve two gold pairs
    dup_gold = [Pair("What colour is Mokase?", "white"), Pair("What colour is Mokase?", "white")]
    assert score_context([Pair("What colour is Mokase?", "white")], dup_gold)["matched"] == 1


def test_aggregate():
    rows = [{"gold": 2, "generated": 3, "matched": 1, "f1_sum": 0.5, "em_sum": 0.0},
            {"gold": 2, "generated": 1, "matched": 1, "f1_sum": 1.0, "em_sum": 1.0}]
    a = aggregate(rows, n_items=5, n_failed=1)
    assert a["contexts"] == 2 and a["pairs_per_context"] == 2.0
    assert a["instruction_match_rate"] == 0.5
    assert a["response_f1_matched"] == pytest.approx(0.75) and a["response_em_matched"] == 0.5
    assert a["response_f1_all"] == pytest.approx(0.375)
    assert a["parse_failure_rate"] == pytest.approx(0.2)
    empty = aggregate([], 0, 0)
    assert empty["response_f1_matched"] == 0.0 and empty["parse_failure_rate"] == 0.0
