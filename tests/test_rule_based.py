"""Rule-based task mining (ipt_utils.rule_based) and its stage-02 backend / variants."""
import json
import re
from pathlib import Path

import pytest

from ipt_utils import format as fmt
from ipt_utils import rule_based as rb
from ipt_utils import synthesize as sy
from ipt_utils.stage import RunParams, StageContext

REPO = Path(__file__).resolve().parent.parent

RIVER = ("Rising in the Baron Mountains, the Ulne River runs for some 1,920 kilometres. After crossing "
         "Dorene, the Ulne empties into the Vesoay Sea. The Lamalard Dam was built across the Ulne in 1987 "
         "because the river flooded almost every spring. However, shifting sandbanks make the upper Ulne "
         "impossible to navigate by boat.")
DRUG = ("A trial enrolled 1,004 patients with Ithemia to compare Garaltinib with placebo. Garaltinib "
        "lowered the relapse rate by 22% over 12 weeks. Therefore, the investigators recommended Garaltinib "
        "for adults with Ithemia. Because nausea was common, doses were split across the day.")
CAUSAL = {
    "because_mid": ("The harvest failed because the spring rains never came to the valley. Prices rose.",
                    "The spring rains never came to the valley.", "The harvest failed."),
    "because_lead": ("Because the bridge was closed for repairs, commuters took the ferry. It was slow and crowded.",
                     "The bridge was closed for repairs.", "Commuters took the ferry."),
    "due_to": ("The match was cancelled due to heavy snow on the pitch. Fans went home.",
               "Heavy snow on the pitch.", "The match was cancelled."),
    "so": ("The shop ran out of bread early, so customers bought rolls instead. Sales held up.",
           "The shop ran out of bread early.", "Customers bought rolls instead."),
    "since": ("Since the factory closed in 1998, the town has lost half of its residents. It is quiet.",
              "The factory closed in 1998.", "The town has lost half of its residents."),
}
PLAIN = "Mountains are tall."  # one short sentence: almost nothing can fire


def tagged(text, seed=0):
    return rb.mine_tagged(text, seed)


def by_rule(text, rule, seed=0):
    return [p for r, p in tagged(text, seed) if r == rule]


def assert_sane(text, pairs):
    for p in pairs:
        assert p.instruction.strip() and p.response.strip()
        assert re.sub(r"\W+", " ", p.response.lower()).strip() != re.sub(r"\W+", " ", text.lower()).strip()
        assert len(p.response) <= rb.MAX_SHARE * len(text)


# ----------------------------------------------------------------------------- helpers

def test_split_sentences_keeps_abbreviations_and_numbers():
    s = rb.split_sentences("Dr. Smith paid 4.50 dollars, e.g. for bread. He left.  Then (at 5 p.m.) he slept!")
    assert s == ["Dr. Smith paid 4.50 dollars, e.g. for bread.", "He left.", "Then (at 5 p.m.) he slept!"]
    assert rb.split_sentences("  ") == []


def test_names_and_topic():
    sents = rb.split_sentences(RIVER)
    known = rb.mid_caps(sents)
    assert "Vesoay Sea" in rb.names(sents[1], known)
    assert "However" not in " ".join(rb.names(sents[3], known))  # sentence-initial connective
    assert rb.topic(RIVER) == "Ulne"
    assert rb.topic("Prices rose. Wages fell.") is None  # nothing repeats


# ----------------------------------------------------------------------------- each rule

def test_topic_rule():
    (topic, title) = by_rule(DRUG, "topic")
    assert topic.response == "Garaltinib" and title.response == "Garaltinib and Ithemia"
    assert not by_rule(PLAIN, "topic")


def test_summary_is_first_sentence_and_needs_three():
    (p,) = by_rule(RIVER, "summary")
    assert p.response == rb.split_sentences(RIVER)[0]
    assert not by_rule("One long enough sentence here for sure. And a second one.", "summary")


def test_word2text_keywords_come_from_the_answer():
    (p,) = by_rule(RIVER, "word2text")
    kws = re.findall(r'"([^"]+)"', p.instruction)
    assert len(kws) == 3 and all(k in p.response for k in kws)
    assert p.response in rb.split_sentences(RIVER)
    assert not by_rule(PLAIN, "word2text")


@pytest.mark.parametrize("conn, label", [("Therefore,", "yes"), ("Thus", "yes"), ("As a result,", "yes"),
                                         ("However,", "no"), ("But", "no"),
                                         ("Moreover,", "it is not possible to tell")])
def test_nli_label_follows_the_connective(conn, label):
    text = f"The mill burned down in the winter of 1850. {conn} the village had no flour for a year."
    nli, link = by_rule(text, "nli")
    assert nli.response == label and "\nOptions:\n- yes\n- it is not possible to tell\n- no" in nli.instruction
    assert "the mill burned down in the winter of 1850" in nli.instruction.lower()
    assert "the village had no flour for a year" in nli.instruction.lower()
    assert link.response == conn.rstrip(",").lower() and f"- {link.response}" in link.instruction


def test_nli_mid_sentence_connective_and_absent():
    (nli, _) = by_rule("Mutations keep the protein active; therefore carriers have a higher risk. Fine.", "nli")
    assert nli.response == "yes" and '"Carriers have a higher risk"' in nli.instruction
    assert not by_rule("The river is long. The sea is salty.", "nli")


@pytest.mark.parametrize("case", sorted(CAUSAL))
def test_cause_effect(case):
    text, cause, effect = CAUSAL[case]
    why, what = by_rule(text, "cause_effect")
    assert why.response == cause and what.response == effect
    assert effect.rstrip(".").lower() in why.instruction.lower()
    assert cause.rstrip(".").lower() in what.instruction.lower()


def test_cause_effect_ignores_non_causal_so():
    assert not by_rule("He did so far more than needed. It is so that we wait. All good.", "cause_effect")


def test_paraphrase_swaps_because_clauses_and_orders_sentences():
    para = by_rule(RIVER, "paraphrase")
    assert para[0].response == ("Because the river flooded almost every spring, the Lamalard Dam was built "
                                "across the Ulne in 1987.")
    lead = by_rule(CAUSAL["because_lead"][0], "paraphrase")
    assert lead[0].response == "Commuters took the ferry because the bridge was closed for repairs."
    order = para[1]
    shown = re.findall(r"\((\d)\) (.+)", order.instruction)
    ranks = [int(k) for k in re.findall(r"\d", order.response)]
    sents = rb.split_sentences(RIVER)
    restored = [dict(shown)[str(k)] for k in ranks]
    assert restored == sents[sents.index(restored[0]):sents.index(restored[0]) + 3]
    assert ranks != [1, 2, 3]
    assert not by_rule(PLAIN, "paraphrase")


def test_completion_continues_from_first_half():
    (p,) = by_rule(RIVER, "completion")
    sents = rb.split_sentences(RIVER)
    assert " ".join(sents[:2]) in p.instruction and p.response == " ".join(sents[2:4])
    assert not by_rule("Only one sentence. And two.", "completion")


def test_fill_blank_numbers_and_names():
    pairs = by_rule(RIVER, "fill_blank")
    assert len(pairs) == 2
    for p in pairs:
        filled = p.instruction.split('"')[1].replace("___", p.response)
        assert filled in RIVER and "___" not in p.response
    assert re.fullmatch(r"[\d,]+", pairs[0].response)
    assert not by_rule("the sea is salty and wide. the river is long.", "fill_blank")


def test_verify_true_and_false_statements():
    seen = {}
    for seed in range(30):
        (p,) = by_rule(DRUG, "verify", seed)
        claim = re.search(r'"([^"]+)"|that (.+)\?\n', p.instruction)
        claim = claim.group(1) or claim.group(2)
        assert p.instruction.endswith("\nOptions:\n- yes\n- no")
        assert (claim.lower() in DRUG.lower()) == (p.response == "yes"), (claim, p.response)
        seen[p.response] = True
    assert set(seen) == {"yes", "no"}
    assert not by_rule(PLAIN, "verify")


# ----------------------------------------------------------------------------- whole miner

def test_every_rule_fires_on_the_fixture_corpus_and_answers_are_sane():
    rows = [json.loads(line) for line in open(REPO / "ipt_utils/fixtures/raw_corpus.jsonl")][:120]
    fired = set()
    for r in rows:
        t = tagged(r["text"])
        fired |= {name for name, _ in t}
        assert_sane(r["text"], [p for _, p in t])
        assert len({p.instruction.lower() for _, p in t}) == len(t)
    assert fired == set(rb.RULES)


def test_deterministic_per_seed():
    assert tagged(RIVER, 3) == tagged(RIVER, 3)
    assert any(tagged(t, 0) != tagged(t, 1) for t in (RIVER, DRUG))


def test_pairs_round_trip_through_the_markup():
    pairs = rb.mine(DRUG)
    assert fmt.parse_pairs(fmt.render_pairs(pairs)) == pairs  # nothing the parser would drop
    assert rb.mine("") == [] and rb.mine(PLAIN) == []


def test_preview_tables():
    df = rb.preview([RIVER, DRUG])
    assert list(df.columns) == ["text", "rule", "instruction", "response"] and len(df) > 10
    doc = rb.preview_document(RIVER)
    assert RIVER in doc and len(doc) > len(RIVER)


# ----------------------------------------------------------------------------- stage 02 backend

def test_rule_tokenizer_round_trips():
    tok = rb.RuleTokenizer()
    s = "<s> <CON> a  b\n c </CON>\n\n"
    assert tok.decode(tok.encode(s)) == s and len(tok.encode("one two three")) == 3


def _ctx(tmp_path):
    run = RunParams(seed=0, work_dir="", device="cpu", offline=True, dtype="auto")
    return StageContext(profile="t", stage="02_synthesize", run_dir=tmp_path, work_root=tmp_path / "work",
                        run=run, interactive=False)


def _cfg(**kw):
    base = dict(model="stage:01_synth_tune", corpus="ipt_utils/fixtures/raw_corpus.jsonl", split="train",
                text_column="text", domain="general", max_texts=12, num_shards=1, shard_index=0, shard_by="records", rounds=2,
                max_new_tokens=16, max_model_len=2000, backend="rule_based", batch_size=4,
                tensor_parallel_size=1, gpu_memory_utilization=0.9, enable_prefix_caching=False, variants=[])
    base.update(kw)
    return sy.Params(**base)


def test_stage02_rule_based_needs_no_model_and_variants(tmp_path):
    ctx = _ctx(tmp_path)  # no 01_synth_tune model exists under tmp_path
    one = sy.Variant(name="one_shot_rules", rounds=1, backend="rule_based")
    cfg = _cfg(variants=[one])
    texts, stats = sy.load_texts(cfg)
    engine, tok = sy.open_engine(ctx, cfg)
    synths, info = sy.synthesize_shard(ctx, cfg, texts, engine, tok)
    assert engine.backend == "rule_based" and info["rounds_generated"] == 2
    assert all(s.pairs == [list(p) for p in rb.mine(s.raw_text, 0)] for s in synths)
    assert sum(s.inherited for s in synths) == len(texts) // 2  # round 1 inherits round 0's chains
    rows = sy.write_augmented(ctx, cfg, synths)
    assert all(m["raw_text"] in r["text"] and m["pairs"] for r in rows for m in r["members"])
    m = sy.summarize(stats, synths, engine, info, sy.write_stats(ctx, synths, rows, cfg))
    assert m["backend"] == "rule_based" and m["pairs_per_text"] > 5 and m["parse_failure_rate"] == 0
    out = sy.run_variants(ctx, cfg, texts, stats, engine, tok)
    path = sy.variant_augmented(ctx.work_root, "one_shot_rules")
    vrows = [json.loads(line) for line in open(path)]
    assert len(vrows) == len(texts) and not any(m["inherited"] for r in vrows for m in r["members"])
    assert out["one_shot_rules"]["rounds"] == 1
    assert (tmp_path / "02_synthesize/variants/one_shot_rules/metrics.json").exists()
    df = sy.variants_frame(m, out)
    assert list(df.setting) == ["main", "one_shot_rules"]
    # a rerun resumes every round; changed rules (version) would discard them
    again, info2 = sy.synthesize_shard(ctx, cfg, texts, sy.open_engine(ctx, cfg)[0], tok)
    assert info2["rounds_resumed"] == 2 and again == synths


def test_variant_names_checked():
    with pytest.raises(ValueError, match="variant names"):
        _cfg(variants=[sy.Variant("a b", 1, "rule_based")])
    with pytest.raises(ValueError, match="variant names"):
        _cfg(variants=[sy.Variant("x", 1, "rule_based"), sy.Variant("x", 2, "auto")])


def test_sharded_rule_based_with_variant_merges_like_one_shard(tmp_path):
    one = sy.Variant(name="single", rounds=1, backend="rule_based")
    whole = _ctx(tmp_path / "whole")
    sy.run_shard(whole, _cfg(max_texts=20, variants=[one]))
    ctx = _ctx(tmp_path / "sharded")
    for i in range(2):
        m = sy.run_shard(ctx, _cfg(max_texts=20, num_shards=2, shard_index=i, variants=[one]))
        assert m["variants"]["single"]["texts_synthesized"] == 10
    cfg = _cfg(max_texts=20, num_shards=2, variants=[one])
    merged = sy.merge_variants(ctx, cfg)
    assert merged["single"]["texts_synthesized"] == 20 and merged["single"]["shards"] == 2
    a = [json.loads(x) for x in open(sy.variant_augmented(ctx.work_root, "single"))]
    b = [json.loads(x) for x in open(sy.variant_augmented(whole.work_root, "single"))]
    # shards take every other record, so compare by id: same texts, same mined pairs
    assert len(a) == 20 and {m["id"]: m["pairs"] for r in a for m in r["members"]} == \
        {m["id"]: m["pairs"] for r in b for m in r["members"]}
