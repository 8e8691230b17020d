"""Rule-based task mining (ipt_utils.rule_based, AdaptLLM's six task types) and its stage-02
backend / variants. The rules are checked on paragraphs written by hand for this purpose
(tests/data/handwritten_paragraphs.jsonl: biomedicine, finance, general), not on the
generated fixtures, so that no rule can lean on the fixture generator's vocabulary."""
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from ipt_utils import format as fmt
from ipt_utils import rule_based as rb
from ipt_utils import synthesize as sy
from ipt_utils import templify as tp
from ipt_utils.registry import RunParams
from ipt_utils.stage import StageContext

REPO = Path(__file__).resolve().parent.parent
PARAS = [json.loads(x) for x in open(REPO / "tests/data/handwritten_paragraphs.jsonl")]
BY_ID = {p["id"]: p["text"] for p in PARAS}
PLAIN = "Mountains are tall."  # one short sentence: nothing can fire


def tagged(text, seed=0):
    return rb.mine_tagged(text, seed)


def by_rule(text, rule, seed=0):
    return [p for r, p in tagged(text, seed) if r == rule]


def assert_sane(text, pairs):
    for p in pairs:
        assert p.instruction.strip() and p.response.strip()
        assert re.sub(r"\W+", " ", p.response.lower()).strip() != re.sub(r"\W+", " ", text.lower()).strip()
        assert len(p.response) <= rb.MAX_SHARE * len(text)


def test_handwritten_set_every_type_fires_and_how_often():
    assert 12 <= len(PARAS) <= 20 and {p["domain"] for p in PARAS} == {"biomedicine", "finance", "general"}
    fired = Counter()
    for p in PARAS:
        t = tagged(p["text"])
        assert_sane(p["text"], [x for _, x in t])
        assert len({x.instruction.lower() for _, x in t}) == len(t)
        fired.update({name for name, _ in t})
        types = [name for name, _ in t]
        assert types == sorted(types, key=list(rb.RULES).index)  # grouped by type, in order
    assert set(fired) == set(rb.RULES)
    # texts (of 16) in which each type fires, as measured when the rules were written
    assert fired["text_completion"] == 16 and fired["word2text"] >= 7 and fired["nli"] >= 5
    assert fired["paraphrase"] >= 4 and fired["common_reason"] >= 4 and fired["summarize"] == 3


def test_at_most_two_per_subcategory():
    many = " ".join(f"The {w} reactor was shut down for the winter season. Therefore, the {w} plant bought power "
                    f"from its neighbours." for w in ("north", "south", "east", "west", "central"))
    pairs = by_rule(many, "common_reason")
    assert len(pairs) == 2
    # nli: 15 qualifying neighbours, each drawn as classify (80%) or generate (20%): exactly two of
    # a subcategory whenever it has more than two (classify always does; generate in most seeds)
    places = ("north", "south", "east", "west", "central", "upper", "lower", "harbour", "valley", "ridge",
              "coastal", "inland", "island", "forest", "desert")
    nli_text = " ".join(f"The {w} reactor was shut down for the whole winter season. However the {w} plant bought its power "
                        f"from the neighbouring grid operators." for w in places)
    assert len(rb.nli_items(rb.split_sentences(nli_text))) == 15
    generate_two = 0
    for seed in range(20):
        pairs = by_rule(nli_text, "nli", seed)
        n_cls = sum("Options:" in p.instruction for p in pairs)
        n_gen = len(pairs) - n_cls
        assert n_cls == 2 and n_gen <= 2
        generate_two += n_gen == 2
    assert generate_two >= 6  # P(>= 3 generate draws of 15) = 0.60


@pytest.mark.parametrize("conn,label", [("Therefore", "yes"), ("However", "no"), ("Moreover", "maybe")])
def test_nli_label_follows_the_connective(conn, label):
    text = (f"The committee reviewed every application that arrived before the deadline. {conn} the final list "
            f"of grants was published on the city website in early May. Nothing else happened.")
    found = {}
    for seed in range(30):  # 80% classify, 20% generate
        for p in by_rule(text, "nli", seed):
            found["classify" if "Options:" in p.instruction else "generate"] = p
    cls = found["classify"]
    assert cls.response == label and tp.parse_pair(*cls).mode == tp.OPTIONS
    assert found["generate"].response == "The final list of grants was published on the city website in early May."


def test_nli_needs_long_comma_free_sentences():
    short = "The trial ended early. Therefore the drug was approved by the agency in the same year."
    comma = ("The trial, which enrolled many adults, ended early in the year. Therefore the drug was approved "
             "by the national agency in the same year.")
    assert by_rule(short, "nli") == [] and by_rule(comma, "nli") == []


def test_common_reason_both_directions():
    (fwd,) = [p for p in by_rule(BY_ID["gen-1"], "common_reason")]
    assert "lighthouse" in fwd.instruction and fwd.response.startswith("The keepers")
    (back,) = by_rule(BY_ID["gen-3"], "common_reason")
    assert "festival was cancelled" in back.instruction and back.response == "Heavy rain across the whole valley."


def test_paraphrase_similar_and_different():
    seen = set()
    for seed in range(20):
        for p in by_rule(BY_ID["bio-4"], "paraphrase", seed):
            if "Options:" in p.instruction:
                assert p.response == "yes"
            else:
                assert p.response.startswith("Blood glucose can look normal")
            seen.add("Options:" in p.instruction)
    assert seen == {True, False}
    for seed in range(20):
        for p in by_rule(BY_ID["gen-4"], "paraphrase", seed):
            assert p.response in ("no", "Many adults reach a high level of fluency within a few years of steady study.")


def test_word2text_keywords_definitions_topics():
    pairs = by_rule(BY_ID["fin-3"], "word2text")
    assert any(p.instruction.startswith(("How is Liquidity", "What is meant by Liquidity", "Give the definition of Liquidity"))
               and p.response.startswith("The ease with which") for p in pairs)
    kw = [p for p in by_rule(BY_ID["bio-2"], "word2text") if "finance" in p.instruction or "biomedicine" in p.instruction]
    assert kw and all("biomedicine" in p.instruction for p in kw)
    for p in kw:  # the keywords are words of the answer sentence
        words = p.instruction.rsplit(":", 1)[-1] if ":" in p.instruction else p.instruction
        assert sum(w.strip(" .,").lower() in p.response.lower() for w in words.split(",")) >= 3
    topics = [p for p in by_rule(BY_ID["bio-6"], "word2text") if "this review" in p.instruction]
    assert topics and topics[0].response == "The role of gut bacteria in inflammatory bowel disease."
    assert rb.domain_keywords("The cat sat on the mat near the door.")[1] == []


def test_summarize_uses_the_title_line():
    pairs = by_rule(BY_ID["gen-5"], "summarize")
    assert [p.response for p in pairs][0] == "A Guide to Winter Cycling"
    assert "A Guide to Winter Cycling" in pairs[1].instruction and pairs[1].response.startswith("Riding a bicycle")
    assert by_rule(BY_ID["gen-1"], "summarize") == []  # no title line
    # the title is not glued to the first sentence of the body
    assert all(not p.response.startswith("A Guide") for p in by_rule(BY_ID["gen-5"], "text_completion"))


def test_text_completion_is_a_short_continuation_of_the_text():
    for p in PARAS:
        (c,) = by_rule(p["text"], "text_completion")
        assert c.response in re.sub(r"\s+", " ", p["text"]) and len(rb.split_sentences(c.response)) <= 2


def test_no_rule_keys_on_fixture_vocabulary():
    """A rule keyed on the fixture generator's words fires far more often on fixture texts than on
    the hand-written paragraphs: every rule must fire on the hand-written set at least half as often
    (per text) as on the fixture corpus (measured: hand-written nli .44, common_reason .31,
    paraphrase .38, word2text .56, summarize .19; fixtures .08, .06, .25, .35, 0)."""
    from conftest import fixture_gen as fg

    def rates(texts):
        c = Counter()
        for t in texts:
            c.update({r for r, _ in tagged(t)})
        return {r: c[r] / len(texts) for r in rb.RULES}

    fixture = rates([json.loads(x)["text"] for x in open(fg.FIXTURE_DIR / "raw_corpus.jsonl")])
    hand = rates([p["text"] for p in PARAS])
    for rule in rb.RULES:
        assert hand[rule] > 0 and hand[rule] >= 0.5 * fixture[rule], (rule, hand, fixture)
    src = (REPO / "ipt_utils/rule_based.py").read_text()
    assert "fixture_gen" not in src.split('"""', 2)[2]  # only the docstring may name it


def test_single_word_connective_needs_a_comma():
    # "No further ..." is a plain negative sentence: dropping "No" would flip it into a contradiction
    text = ("The city council closed the housing grant programme in March this year. No further applications "
            "were accepted after the spring deadline had passed.")
    assert rb.nli_items(rb.split_sentences(text)) == []
    assert all("Further applications" not in p.response + p.instruction for _, p in tagged(text))
    ok = text.replace("No further", "Still, several late applications")
    assert [r for _, _, r in rb.nli_items(rb.split_sentences(ok))] == ["contradict"]


def test_that_is_needs_a_comma_to_be_a_paraphrase():
    text = ("The new policy doubled the number of inspectors in every district. That is a large change for "
            "a small agency with a tight budget.")
    assert rb.paraphrase_items(rb.split_sentences(text)) == []
    ok = text.replace("That is a large change", "That is, twice as many people now check")
    assert [r for _, _, r in rb.paraphrase_items(rb.split_sentences(ok))] == ["similar"]


def test_about_a_number_is_not_a_topic():
    text = ("The Amber River is about 1,200 kilometres long. It drains a wide plain of farms and small towns "
            "before it reaches the sea.")
    assert not any(p.instruction in {q.format(x_l=x) for q in rb.TOPIC_Q for x in ("the Amber River", "The Amber River")}
                   for p in by_rule(text, "word2text"))
    assert rb._TOPIC.match("The Amber River is about 1,200 kilometres long") is None
    assert rb._TOPIC.match("The survey is about twenty villages") is None
    assert rb._TOPIC.match("The survey is about the river's flood defences").group(2) == "the river's flood defences"


def test_split_sentences_keeps_abbreviations_and_numbers():
    s = rb.split_sentences("Dr. Smith paid $1.5 million, e.g. for land. It rained. Then it stopped.")
    assert s == ["Dr. Smith paid $1.5 million, e.g. for land.", "It rained.", "Then it stopped."]


def test_deterministic_per_seed():
    t = BY_ID["bio-1"]
    assert tagged(t, 3) == tagged(t, 3)
    assert any(tagged(x, 0) != tagged(x, 1) for x in BY_ID.values())


def test_pairs_round_trip_through_the_markup_and_templify():
    for p in PARAS:
        pairs = rb.mine(p["text"])
        assert fmt.parse_pairs(fmt.render_pairs(pairs)) == pairs  # nothing the parser would drop
        (doc,) = tp.templify_chain([tp.Member(p["id"], p["text"], pairs)], 0)
        assert doc["dropped"] == 0 and p["text"] in doc["text"]
    assert rb.mine("") == [] and rb.mine(PLAIN) == []


def test_preview_tables():
    df = rb.preview([BY_ID["bio-1"], BY_ID["fin-1"]])
    assert list(df.columns) == ["text", "rule", "instruction", "response"] and len(df) > 6
    doc = rb.preview_document(BY_ID["fin-1"])
    assert BY_ID["fin-1"] in doc and len(doc) > len(BY_ID["fin-1"])


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
    assert m["backend"] == "rule_based" and m["pairs_per_text"] > 1 and m["parse_failure_rate"] == 0
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
