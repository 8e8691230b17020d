"""Synthesizer evaluation metrics on hand-made examples."""
from types import SimpleNamespace

import pytest

from ipt_utils.format import Pair
from ipt_utils.synth_eval import (aggregate, exact_match, instruction_suffix, normalize, response_text,
                                  score_context, score_responses, token_f1)


def test_normalize_and_token_f1():
    assert normalize("The  Royal Quill Medal!") == "royal quill medal"
    assert token_f1("the Royal Quill Medal", "Royal Quill medal.") == 1.0
    # pred "quill medal" vs gold "royal quill medal": p=2/2, r=2/3 -> f1 = 0.8
    assert token_f1("quill medal", "royal quill medal") == pytest.approx(0.8)
    assert token_f1("banana", "royal quill medal") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0
    # SQuAD normalisation deletes punctuation (it does not split words on it)
    assert normalize("A deep-green, U.S.-made hull.") == "deepgreen usmade hull"
    assert exact_match("A deep-green", "a deepgreen") == 1.0 and exact_match("A deep-green", "a deep green") == 0.0
    assert token_f1("deep-green", "deep green") == 0.0


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


def test_gold_instruction_prompt_and_response():
    pairs = [Pair("What colour is Mokase?", "milky white"), Pair("What is Mokase used for?", "bicycle frames")]
    assert instruction_suffix(pairs, 0) == "<QUE> What colour is Mokase? <ANS>"
    assert instruction_suffix(pairs, 1) == ("<QUE> What colour is Mokase? <ANS> milky white </END>\n\n"
                                            "<QUE> What is Mokase used for? <ANS>")
    assert response_text(" bicycle frames </END>\n\n<QUE> Next? <ANS> x </END>") == "bicycle frames"
    assert response_text(" frames</s>") == "frames" and response_text(" frames <QUE> more") == "frames"
    assert response_text(" no end marker") == "no end marker" and response_text("</END>") == ""
    # a rephrasing synthesizer scores on its responses, whatever questions it would write itself
    r = score_responses(["Milky-white.", "frames"], pairs)
    # "milkywhite" vs "milky white": F1 0; "frames" vs "bicycle frames": P=1, R=1/2 -> 2/3
    assert r == {"gold": 2, "f1_sum": pytest.approx(2 / 3), "em_sum": 0.0}
    assert score_responses(["milky white", "bicycle frames"], pairs)["em_sum"] == 2.0


def test_aggregate():
    answered = [{"gold": 2, "f1_sum": 1.5, "em_sum": 1.0}, {"gold": 2, "f1_sum": 0.5, "em_sum": 0.0}]
    own = [{"gold": 2, "generated": 3, "matched": 1, "f1_sum": 0.5, "em_sum": 0.0},
           {"gold": 2, "generated": 1, "matched": 1, "f1_sum": 1.0, "em_sum": 1.0}]
    a = aggregate(answered, own, n_items=5, n_failed=1)
    assert a["contexts"] == 2 and a["gold_pairs"] == 4
    assert a["response_f1"] == pytest.approx(0.5) and a["response_em"] == pytest.approx(0.25)
    assert a["own_pairs_per_context"] == 2.0 and a["own_instruction_match_rate"] == 0.5
    assert a["own_response_f1_matched"] == pytest.approx(0.75) and a["own_response_f1_all"] == pytest.approx(0.375)
    assert a["own_parse_failure_rate"] == pytest.approx(0.2)
    empty = aggregate([], [], 0, 0)
    assert empty["response_f1"] == 0.0 and empty["own_response_f1_matched"] == 0.0 and empty["own_parse_failure_rate"] == 0.0


def test_evaluate_models_one_engine_at_a_time_all_prompts_in_one_call(tmp_path, monkeypatch, fake_synthesizer):
    """Memory is freed before the first engine; each model's prompts go in one call (the
    fake backend splits them into batch_size batches); every engine is closed before the next."""
    import math

    from ipt_utils import assets, generation, synth_eval
    from ipt_utils.format import Pair
    from ipt_utils.registry import RunParams
    from ipt_utils.stage import StageContext
    from ipt_utils.collection import Example

    tok = assets.build_tiny_tokenizer(tmp_path / "tok")
    models = {}
    for name in ("tuned", "base"):
        models[name] = str(tmp_path / name)
        assets.build_tiny_model(models[name], assets.ModelShape(64, 128, 1, 2, 2, 256, 0), tok, seed=0)
    exs = [Example("d", f"Text {i} about the river.", [Pair(f"What is text {i}?", "a river")], "free-form")
           for i in range(5)]
    events, calls = [], []
    real_make, real_close, real_call = generation.make_engine, generation.Engine.close, generation.Engine.__call__
    monkeypatch.setattr(generation, "free_memory", lambda: events.append("free"))

    def make(path, *a, **k):
        events.append(f"start {path}")
        return real_make(path, *a, **k)

    def call(self, prompts):
        out = real_call(self, prompts)
        calls.append((len(prompts), self.calls))
        return out

    def close(self):
        events.append("close")
        real_close(self)

    monkeypatch.setattr(generation, "make_engine", make)
    monkeypatch.setattr(generation.Engine, "__call__", call)
    monkeypatch.setattr(generation.Engine, "close", close)
    cfg = SimpleNamespace(eval_backend="transformers", batch_size=2, eval_max_new_tokens=8, max_seq_len=256,
                          eval_shots=1)
    ctx = StageContext(profile="t", stage="01_synth_tune", run_dir=tmp_path / "run", work_root=tmp_path / "w",
                       run=RunParams(seed=0, work_dir="", device="cpu", offline=True, dtype="float32"),
                       interactive=False)
    eval_sets = {"seen": exs[:3], "unseen": exs[3:]}
    df = synth_eval.evaluate_models(ctx, cfg, models, eval_sets, {"d": exs})
    assert len(df) == 2 * 2 * 2  # model x prompt kind x split
    n = 2 * 2 * len(exs)  # zero- and few-shot: an own-questions prompt and one per gold pair (1) of every example
    assert calls == [(n, math.ceil(n / (2 * cfg.batch_size)))] * 2  # one engine call per model
    assert events[0] == "free"
    assert [e for e in events if e != "free"] == [f"start {models['tuned']}", "close",
                                                  f"start {models['base']}", "close"]


def test_answer_prompts_put_the_gold_instruction_after_context_and_history(tmp_path):
    from ipt_utils import assets, multiround, synth_eval
    from ipt_utils.collection import Example

    tok = multiround.Tokenizer(assets.build_tiny_tokenizer(tmp_path / "tok"))
    e = Example("d", "Mokase is a milky white metal.", [Pair("What colour is Mokase?", "milky white"),
                                                         Pair("What is Mokase?", "a metal")], "free-form")
    demo = SimpleNamespace(prompt_text="Thalova is a town.", pairs=[Pair("What is Thalova?", "a town")])
    ids = synth_eval.answer_prompts(e, [demo], tok, 512)
    assert len(ids) == 2
    text = [tok.decode(i) for i in ids]
    assert text[1].endswith("Mokase is a milky white metal. </CON>\n\n<QUE> What colour is Mokase? <ANS> "
                            "milky white </END>\n\n<QUE> What is Mokase? <ANS>")
    assert text[0].index("What is Thalova?") < text[0].index("Mokase is") < text[0].index("What colour")
    # a small budget cuts the context, never the gold instruction
    short = tok.decode(synth_eval.answer_prompts(e, [], tok, 30)[1])
    assert short.endswith("<QUE> What is Mokase? <ANS>") and len(tok.encode(short)) <= 30


def test_answer_prompts_fit_the_budget_when_gold_pairs_are_long(tmp_path):
    """The rehearsal's case: many long earlier gold pairs (and one huge instruction) must not
    push a prompt past max_model_len - max_new_tokens."""
    from ipt_utils import assets, multiround, synth_eval
    from ipt_utils.collection import Example

    tok = multiround.Tokenizer(assets.build_tiny_tokenizer(tmp_path / "tok"))
    long_q = " ".join(["Which metal is milky white and soft?"] * 40)
    pairs = [Pair(f"Question {i}: what is said about Mokase in part {i}?", "a long answer " * 20) for i in range(6)]
    e = Example("d", "Mokase is a milky white metal. " * 30, pairs + [Pair(long_q, "Mokase")], "free-form")
    budget = 120
    prompts = synth_eval.answer_prompts(e, [], tok, budget)
    assert len(prompts) == 7
    for ids in prompts:
        text = tok.decode(ids)
        assert len(ids) <= budget and text.rstrip().endswith("<ANS>") and "Mokase is a milky" in text
    assert "Which metal" in tok.decode(prompts[6])  # the huge instruction is cut, not dropped
