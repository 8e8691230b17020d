"""ipt_utils.eval_models: answer-token counts from the harness's own calls, multiple-choice
inputs never cut (counted), generation prompts cut from the left with their BOS kept."""
from __future__ import annotations

import json

import pytest
import torch

from ipt_utils import assets
from ipt_utils.eval_models import IptHFLM, OptionScore, keep_bos, make_lm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("evm")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"The river {i} flows north past the mill. Answer: yes no maybe"})
                              + "\n" for i in range(40)))
    tok = assets.build_tiny_tokenizer(root / "tok", vocab_size=300, files=(str(corpus),))
    shape = assets.ModelShape(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                              num_kv_heads=1, max_position_embeddings=512, vocab_size=0)
    assets.build_tiny_model(root / "model", shape, tok, seed=0)
    return str(root / "model")


def req(context, continuation, task="t", doc_id=0):
    from lm_eval.api.instance import Instance

    return Instance(request_type="loglikelihood", doc={}, arguments=(context, continuation), idx=0,
                    metadata=(task, doc_id, 1))


def full_loglik(lm, context, continuation):
    """Sum of log p(continuation tokens) from one forward pass over the whole, uncut input."""
    ctx, cont = lm._encode_pair(context, continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    return float(logp[torch.arange(len(targets)), targets][-len(cont):].sum()), len(cont)


def test_scores_carry_answer_tokens_and_long_prompts_are_counted_not_cut(tiny):
    lm = make_lm("hf", {"pretrained": tiny, "device": "cpu", "max_length": 24, "add_bos_token": True,
                        "dtype": "float32"}, batch_size=4)
    assert isinstance(lm, IptHFLM)
    short = "The river flows"
    long_ctx = " ".join(["The river 3 flows north past the mill."] * 6)  # well over 24 tokens
    reqs = [req(short, " yes", doc_id=0), req(short, " no maybe yes", doc_id=0),
            req(long_ctx, " yes", doc_id=1), req(long_ctx, " no maybe", doc_id=1),
            req(long_ctx, " no", task="u", doc_id=5)]
    out = lm.loglikelihood(reqs)
    assert all(isinstance(o, OptionScore) and len(o) == 2 for o in out)  # (ll, greedy) for the harness
    for r, o in zip(reqs, out):
        ll, n = full_loglik(lm, *r.args)
        assert o.n_tokens == n  # the count the harness scored over
        assert o[0] == pytest.approx(ll, abs=1e-4)  # the whole input, not its last 24 tokens
    assert out[1].n_tokens > out[0].n_tokens
    assert lm.max_length == 24  # the limit is lifted only for the call
    st = lm.stats()
    assert st["t"]["requests"] == 4 and st["t"]["over_context"] == 2 and st["t"]["docs_over_context"] == 1
    assert st["t"]["truncated"] == 0 and st["t"]["longest_tokens"] > 24 and st["t"]["context_tokens"] == 24
    assert st["u"]["docs_over_context"] == 1
    # general tasks read (ll, greedy) as before
    lls, greedy = zip(*out)
    assert len(lls) == 5
    import pickle

    assert pickle.loads(pickle.dumps(out[1])).n_tokens == out[1].n_tokens


def test_generation_prompt_keeps_bos_when_cut(tiny):
    lm = make_lm("hf", {"pretrained": tiny, "device": "cpu", "max_length": 24, "add_bos_token": True,
                        "dtype": "float32"}, batch_size=4)
    bos = lm.tokenizer.bos_token_id
    long_text = " ".join(["The river 3 flows north past the mill."] * 6)
    ids, mask = lm.tok_batch_encode([long_text, "The river"], left_truncate_len=10)
    full = lm.tokenizer(long_text)["input_ids"]
    assert ids.shape == (2, 10)
    assert ids[0].tolist() == [bos] + full[-9:] and mask[0].tolist() == [1] * 10
    short = lm.tokenizer("The river")["input_ids"]
    assert ids[1, -len(short):].tolist() == short and mask[1].sum() == len(short) and short[0] == bos


def test_keep_bos_rows():
    B, P = 1, 0
    ids = torch.tensor([[B, 5, 6, 7, 8, 9], [P, P, B, 5, 6, 7], [P, P, P, P, B, 5]])
    mask = (ids != P).long()
    out, m = keep_bos(ids, mask, 4, B)
    # row 0 (6 tokens): BOS + last 3; row 1 (4 = keep): unchanged; row 2 (2 tokens): whole, pad first
    assert out.tolist() == [[B, 7, 8, 9], [B, 5, 6, 7], [P, P, B, 5]]
    assert m.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]]
    same, _ = keep_bos(ids[:, -3:], mask[:, -3:], 4, B)
    assert same.shape == (3, 3)  # nothing to cut


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        make_lm("tgi", {}, 1)
