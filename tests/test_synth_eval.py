"""Synthesizer evaluation metrics on hand-made examples."""
from types import SimpleNamespace

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


def test_evaluate_models_one_engine_at_a_time_all_prompts_in_one_call(tmp_path, monkeypatch):
    """Memory is freed before the first engine; each model's prompts go in one call (the
    fake backend splits them into batch_size batches); every engine is closed before the next."""
    import math

    from ipt_utils import assets, synth_eval, synthesize
    from ipt_utils.format import Pair
    from ipt_utils.stage import RunParams, StageContext
    from ipt_utils.synth_tune import Example

    tok = assets.build_tiny_tokenizer(tmp_path / "tok")
    models = {}
    for name in ("tuned", "base"):
        models[name] = str(tmp_path / name)
        assets.build_tiny_model(models[name], assets.ModelShape(64, 128, 1, 2, 2, 256, 0), tok, seed=0)
    exs = [Example("d", f"Text {i} about the river.", [Pair(f"What is text {i}?", "a river")], "free-form")
           for i in range(5)]
    events, calls = [], []
    monkeypatch.setenv(synthesize.TEST_ENGINE_ENV, "0")
    real_make, real_close, real_call = synthesize.make_engine, synthesize.Engine.close, synthesize.Engine.__call__
    monkeypatch.setattr(synthesize, "_free_memory", lambda: events.append("free"))

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

    monkeypatch.setattr(synthesize, "make_engine", make)
    monkeypatch.setattr(synthesize.Engine, "__call__", call)
    monkeypatch.setattr(synthesize.Engine, "close", close)
    cfg = SimpleNamespace(eval_backend="transformers", batch_size=2, eval_max_new_tokens=8, max_seq_len=256,
                          eval_shots=1)
    ctx = StageContext(profile="t", stage="01_synth_tune", run_dir=tmp_path / "run", work_root=tmp_path / "w",
                       run=RunParams(seed=0, work_dir="", device="cpu", offline=True, dtype="float32"),
                       interactive=False)
    eval_sets = {"seen": exs[:3], "unseen": exs[3:]}
    df = synth_eval.evaluate_models(ctx, cfg, models, eval_sets, {"d": exs})
    assert len(df) == 2 * 2 * 2  # model x prompt kind x split
    n = 2 * len(exs)  # zero- and few-shot prompts of every example
    assert calls == [(n, math.ceil(n / (2 * cfg.batch_size)))] * 2  # one engine call per model
    assert events[0] == "free"
    assert [e for e in events if e != "free"] == [f"start {models['tuned']}", "close",
                                                  f"start {models['base']}", "close"]
