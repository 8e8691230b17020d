"""Stage 02: multi-round chaining (fake generator), budget, resume, backends, inputs, profiles."""
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from ipt_utils import format as fmt
from ipt_utils import augmented, generation, multiround, shards, synth_stats
from ipt_utils import synthesize as sy
from ipt_utils.generation import GenOut
from ipt_utils.multiround import RawText

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- fakes

class WordTok:
    """Markup tokens and whitespace-separated words, one id each."""

    PATTERN = re.compile(r"</?(?:s|CON|QUE|ANS|END)>|[^\s<]+|<")

    def __init__(self):
        self.vocab, self.words = {}, []

    def encode(self, text):
        ids = []
        for w in self.PATTERN.findall(text):
            if w not in self.vocab:
                self.vocab[w] = len(self.words)
                self.words.append(w)
            ids.append(self.vocab[w])
        return ids

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids)


class FakeGen:
    """Two pairs per text, none for texts starting with 'nopair'; records the prompts."""

    def __init__(self, tok):
        self.tok, self.prompts, self.calls = tok, [], 0

    def __call__(self, prompts):
        self.calls += 1
        outs = []
        for ids in prompts:
            text = self.tok.decode(ids)
            self.prompts.append(text)
            first = text.rsplit("<CON>", 1)[1].split()[0]
            outs.append("no markup here" if first.startswith("nopair") else
                        f"<QUE> what about {first}? <ANS> {first} is fine. </END>\n\n"
                        f"<QUE> and then {first}? <ANS> more. </END></s>")
        return outs

    generate = __call__


def _texts(names, filler=3):
    return [RawText(f"id-{n}", "general", f"{n} " + "filler " * filler) for n in names]


def _run(texts, rounds, budget=1000, tok=None):
    tok = tok or WordTok()
    gen = FakeGen(tok)
    return multiround.synthesize_texts(texts, rounds, tok, budget, gen), gen


# ----------------------------------------------------------------------------- algorithm

def test_round_bounds_partition():
    for n in range(0, 30):
        for m in range(1, 5):
            b = multiround.round_bounds(n, m)
            assert b[0][0] == 0 and b[-1][1] == n and all(x[1] == y[0] for x, y in zip(b, b[1:]))


def test_chaining_inherits_through_slots():
    out, gen = _run(_texts([f"w{i}" for i in range(9)]), rounds=3)
    by = {s.key: s for s in out}
    assert [s.round for s in out] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert by[3].history == [0] and by[6].history == [0, 3] and by[0].history == []
    assert [s.inherited for s in out] == [False] * 3 + [True] * 6
    assert by[0].chain_id == by[3].chain_id == by[6].chain_id == "0"
    assert len({s.chain_id for s in out}) == 3
    assert all(len(s.pairs) == 2 for s in out)
    # the prompt of text 6 holds texts 0 then 3 then its own context, each example closed
    p6 = gen.prompts[6]
    assert p6.index("w0") < p6.index("w3") < p6.index("w6") and p6.count("</s>") == 2


def test_example_without_pairs_breaks_the_chain():
    out, _ = _run(_texts(["a0", "nopair1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"]), rounds=3)
    by = {s.key: s for s in out}
    assert by[1].pairs == [] and by[1].items == 0
    assert not by[4].inherited and by[4].history == [] and by[4].chain_id == "4"
    assert by[7].history == [4] and by[7].chain_id == "4"
    assert by[6].history == [0, 3]


def test_leftover_slots_carried_unchained_nothing_dropped():
    # N=6, M=4 -> rounds of 1, 2, 1, 2: slot 1 of round 1 has no text in round 2
    out, _ = _run(_texts([f"w{i}" for i in range(6)]), rounds=4)
    by = {s.key: s for s in out}
    assert sorted(by) == list(range(6)) and len(out) == 6
    assert by[3].history == [0, 1] and by[4].history == [0, 1, 3]
    assert by[5].slot == 1 and not by[5].inherited and by[5].chain_id == "5"
    assert by[2].slot == 1 and not by[2].inherited


def test_budget_drops_oldest_link_first():
    tok = WordTok()
    texts = _texts([f"w{i}" for i in range(6)])
    out_free, gen = _run(texts, rounds=3, tok=tok)
    # budget = exactly the size of a one-link prompt: the two-link history of round 2 must lose its oldest
    budget = max(len(tok.encode(p)) for p in gen.prompts if p.count("</s>") == 1)
    out, gen = _run(texts, rounds=3, budget=budget, tok=tok)
    by = {s.key: s for s in out}
    assert by[4].history == [2] and by[4].history_dropped == 1 and by[4].inherited
    assert by[4].chain_id == by[0].chain_id  # still one chain: 4 was prompted with 2, 2 with 0
    assert "w0" not in gen.prompts[4] and "w2" in gen.prompts[4]
    assert all(s.prompt_tokens <= budget for s in out)
    assert sum(s.history_dropped for s in out) == 2


def test_text_over_budget_is_truncated_and_counted():
    tok = WordTok()
    texts = _texts(["long"], filler=200) + _texts(["short"])
    out, gen = _run(texts, rounds=1, budget=40, tok=tok)
    assert out[0].truncated and not out[1].truncated
    assert out[0].prompt_tokens <= 40 and len(out[0].prompt_text.split()) < 201
    assert out[0].raw_text == texts[0].text  # full text kept for pre-training


def test_history_too_long_is_dropped_entirely():
    tok = WordTok()
    texts = _texts(["w0"], filler=30) + _texts(["w1"], filler=30)
    out, _ = _run(texts, rounds=2, budget=40, tok=tok)
    assert not out[1].inherited and out[1].history_dropped == 1 and out[1].history == []


# ----------------------------------------------------------------------------- engine wrapper

class OOMError(RuntimeError):
    pass


OOMError.__name__ = "OutOfMemoryError"


def test_engine_halves_batch_on_oom_and_keeps_order():
    class Impl:
        def __init__(self):
            self.sizes = []

        def generate(self, prompts):
            if len(prompts) > 2:
                raise OOMError("CUDA out of memory")
            self.sizes.append(len(prompts))
            return [GenOut(str(p[0]), 1) for p in prompts]

    impl = Impl()
    eng = generation.Engine(lambda: impl, "fake", batch_size=8)
    prompts = [[i] * (i % 3 + 1) for i in range(7)]
    assert [o.text for o in eng(prompts)] == [str(i) for i in range(7)]
    assert [r["batch_size"] for r in eng.oom_retries] == [8, 4] and max(impl.sizes) == 2

    class Broken:
        def generate(self, prompts):
            raise ValueError("not memory")

    with pytest.raises(ValueError):
        generation.Engine(lambda: Broken(), "fake", 4)([[1]])


# ----------------------------------------------------------------------------- resume

def _cfg(**kw):
    base = dict(model="stage:01_synth_tune", corpus="x.jsonl", split="train", text_column="text",
                domain="general", max_texts=0, num_shards=1, shard_index=0, shard_by="records", rounds=3, max_new_tokens=16,
                max_model_len=1000, backend="transformers", batch_size=4, tensor_parallel_size=1,
                gpu_memory_utilization=0.9, enable_prefix_caching=True, variants=[])
    base.update(kw)
    return sy.Params(**base)


def test_resume_after_crash_gives_identical_output(tmp_path):
    tok = WordTok()
    texts = _texts(["w0", "nopair1"] + [f"w{i}" for i in range(2, 10)])
    cfg = _cfg()

    clean_ctx = SimpleNamespace(work=tmp_path / "clean", seed=0)
    clean, _ = sy.synthesize_shard(clean_ctx, cfg, texts, generation.Engine(lambda: FakeGen(tok), "fake", 4), tok)

    class Crashing(FakeGen):
        def generate(self, prompts):
            if self.calls >= 1:
                raise RuntimeError("simulated crash")
            return super().generate(prompts)

    ctx = SimpleNamespace(work=tmp_path / "crash", seed=0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sy.synthesize_shard(ctx, cfg, texts, generation.Engine(lambda: Crashing(tok), "fake", 4), tok)
    assert [p.name for p in sorted(shards.shard_dir(ctx.work, cfg).glob("round-*"))] == ["round-000.jsonl"]
    gen = FakeGen(tok)
    resumed, info = sy.synthesize_shard(ctx, cfg, texts, generation.Engine(lambda: gen, "fake", 4), tok)
    assert info["rounds_resumed"] == 1 and info["rounds_generated"] == 2
    assert len(gen.prompts) == len(texts) - 3  # round 0 (3 texts) was not regenerated
    assert resumed == clean
    assert augmented.build_rows(resumed, 0) == augmented.build_rows(clean, 0)
    # a third run generates nothing; changed inputs discard the finished rounds
    gen = FakeGen(tok)
    again, info = sy.synthesize_shard(ctx, cfg, texts, generation.Engine(lambda: gen, "fake", 4), tok)
    assert again == clean and gen.calls == 0 and info["rounds_resumed"] == 3
    gen = FakeGen(tok)
    sy.synthesize_shard(ctx, cfg, texts[:-1], generation.Engine(lambda: gen, "fake", 4), tok)
    assert len(gen.prompts) == len(texts) - 1
    # so do new weights behind the same model spec (e.g. stage 01 re-ran)
    gen = FakeGen(tok)
    sy.synthesize_shard(ctx, cfg, texts[:-1], generation.Engine(lambda: gen, "fake", 4, model_stamp="retrained"), tok)
    assert len(gen.prompts) == len(texts) - 1


def test_engine_stamp_follows_the_weights(tmp_path):
    from ipt_utils.assets import model_fingerprint

    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"a")
    first = model_fingerprint(str(d))
    assert model_fingerprint(str(d)) == first
    (d / "model.safetensors").write_bytes(b"bb")
    assert model_fingerprint(str(d)) != first
    assert model_fingerprint("org/hub-model") == "org/hub-model"


def test_rows_are_documents():
    """One row per pre-training document: a run of chained texts with pairs is one document,
    a text without pairs its own raw one; every text in exactly one row, in chain order."""
    out, _ = _run(_texts(["w0", "nopair1"] + [f"w{i}" for i in range(2, 9)]), rounds=3)
    rows = augmented.build_rows(out, seed=0)
    assert sorted(i for r in rows for i in r["member_ids"]) == sorted(s.id for s in out)
    keys = {"id", "member_ids", "domain", "chain_id", "text", "layout", "mode", "dropped_pairs", "members"}
    mkeys = {"id", "raw_text", "pairs", "mode", "inherited", "dropped_pairs"}
    by_id = {s.id: s for s in out}
    for r in rows:
        assert set(r) == keys and r["id"] == r["member_ids"][0]
        assert [m["id"] for m in r["members"]] == r["member_ids"]
        for m in r["members"]:
            assert set(m) == mkeys and m["raw_text"] in r["text"] and m["inherited"] == by_id[m["id"]].inherited
        keys_in_doc = [by_id[i].key for i in r["member_ids"]]
        assert keys_in_doc == sorted(keys_in_doc)
    # chains 0 (w0 w3 w6) and 2 (w2 w5 w8) are one document each; nopair1 is raw; w4 w7 chain anew
    docs = {tuple(r["member_ids"]) for r in rows}
    assert docs == {("id-w0", "id-w3", "id-w6"), ("id-w2", "id-w5", "id-w8"), ("id-nopair1",), ("id-w4", "id-w7")}
    raw = [r for r in rows if r["layout"] == "raw"]
    assert len(raw) == 1 and raw[0]["text"] == raw[0]["members"][0]["raw_text"] and raw[0]["mode"] == "raw"


def test_inherited_means_history_and_pairs():
    # nopair4 is prompted with w1's example (a history) but yields no pairs: not inherited
    out, _ = _run(_texts(["w0", "w1", "w2", "w3", "nopair4", "w5"]), rounds=2)
    by = {s.id: s for s in out}
    assert by["id-nopair4"].history and not by["id-nopair4"].pairs and not by["id-nopair4"].inherited
    assert by["id-w3"].inherited and not by["id-w0"].inherited
    rows = augmented.build_rows(out, seed=0)
    assert ("id-w1",) in {tuple(r["member_ids"]) for r in rows}  # its successor broke off


def test_identical_id_less_texts_in_different_chains_are_different_documents():
    """An id-less corpus's id is the text's hash: two identical texts share it. Documents are
    keyed by (chain_id, id), so each copy keeps its own document and both are counted."""
    from ipt_utils import explore
    from ipt_utils.io import record_id

    dup = RawText(record_id({}, "same words here"), "general", "same words here")
    out, _ = _run([dup, dup], rounds=1)  # one round: two chains of one text each
    assert out[0].chain_id != out[1].chain_id and out[0].id == out[1].id
    rows = augmented.build_rows(out, seed=0)
    m = synth_stats.document_metrics(synth_stats.stats_frame(out, rows))
    assert len(rows) == m["documents"] == 2 and m["texts_per_document"] == 1.0
    # two rounds: the copies sit in different multi-text chains (dup w2) and (w1 dup)
    texts = [dup, *_texts(["w1", "w2"]), dup]
    out, _ = _run(texts, rounds=2)
    rows = augmented.build_rows(out, seed=0)
    df = synth_stats.stats_frame(out, rows)
    assert set(zip(df["chain_id"], df["doc_id"])) == {(r["chain_id"], r["id"]) for r in rows}
    assert synth_stats.document_metrics(df)["documents"] == len(rows) == 2
    own = {(r["chain_id"], i): r["member_ids"] for r in rows for i in r["member_ids"]}
    for e in explore.build_entries(out, rows):
        assert e.document_members == own[e.chain_id, e.id]
    assert sorted(e.document_members for e in explore.build_entries(out, rows) if e.id == dup.id) == \
        sorted([[dup.id, "id-w2"], ["id-w1", dup.id]])


# ----------------------------------------------------------------------------- inputs

def test_load_texts_skips_neutralises_and_shards(tmp_path):
    path = tmp_path / "c.jsonl"
    recs = [{"id": "a", "text": "one"}, {"id": "b", "text": "   "}, {"id": "c", "text": "has <QUE> markup"},
            {"id": "d", "text": "four", "domain": "finance"}, {"id": "e", "text": ""}, {"id": "f", "text": "six"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    texts, st = sy.load_texts(_cfg(corpus=str(path)))
    assert [t.id for t in texts] == ["a", "c", "d", "f"]
    assert st == {"records_read": 6, "texts_in": 6, "texts_skipped_empty": 2, "texts_neutralised": 1,
                  "shard_by": "records"}
    # the text keeps its bytes (the documents carry it); only its prompt copy is neutralised
    assert texts[1].text == "has <QUE> markup" and texts[1].neutralised and texts[2].domain == "finance"
    texts, st = sy.load_texts(_cfg(corpus=str(path), num_shards=2, shard_index=1, max_texts=5))
    assert [t.id for t in texts] == ["b", "d"][1:] and st["texts_in"] == 2 and st["records_read"] == 5
    import pandas as pd

    pq = tmp_path / "c.parquet"
    pd.DataFrame(recs).to_parquet(pq)
    assert [t.id for t in sy.load_texts(_cfg(corpus=str(pq)))[0]] == ["a", "c", "d", "f"]
    txt = tmp_path / "c.txt"
    txt.write_bytes(b"first line\n\nthird \xff line\n")
    with pytest.raises(ValueError, match=r"c\.txt:3: invalid UTF-8"):
        sy.load_texts(_cfg(corpus=str(txt)))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: invalid UTF-8"):
        sy.load_texts(_cfg(corpus=str(bad)))


def test_markup_is_neutralised_in_the_prompt_only():
    """A text spelling the markup: its prompt copy is inert (one context, one BOS), its pairs are
    parsed, and the pre-training document carries the text's own bytes (as the vanilla arm does)."""
    hostile = "spells <s> and </s> and <CON> x </CON> and <QUE> q <ANS> a </END> inline"
    texts = [RawText("id-h", "general", hostile, True)] + _texts(["w1", "w2", "w3"])
    out, gen = _run(texts, rounds=2)
    h = next(s for s in out if s.id == "id-h")
    assert h.raw_text == hostile and h.neutralised and h.pairs
    assert "<" + "QUE>" not in h.prompt_text and fmt.neutralise(hostile)[0] == h.prompt_text
    for prompt in gen.prompts:  # the literal markup only where the renderer put it
        assert prompt.split().count("<s>") == prompt.split().count("<CON>") == prompt.split().count("</CON>")
    rows = augmented.build_rows(out, seed=0)
    doc = next(r for r in rows if "id-h" in r["member_ids"])
    assert hostile in doc["text"] and next(m for m in doc["members"] if m["id"] == "id-h")["raw_text"] == hostile


def test_prompt_encoding_places_bos_eos_only_where_the_markup_has_them(tokenizer_kinds):
    """format.encode_markup equals tokenizing the whole rendered string with its literals
    parsed (Mistral kind and the tiny tokenizer), and never parses special strings out of a
    text (Llama-3 kind: its own BOS/EOS strings inside a text stay text)."""
    toks = {kind: tok for kind, (_, tok) in tokenizer_kinds.items()}
    history = [("", [("q", "a")]), ("first text", [("q2?", "a2"), ("q3", "a3")])]
    prompts = [fmt.build_prompt("hello there", history), fmt.render_example("", [("What?", "That.")]),
               fmt.build_prompt(""), fmt.render_example("日本 😀 a\x00b", [("é", "ß")]), "no markup at all"]
    for kind in ("tiny", "sentencepiece"):
        tok = toks[kind]
        for p in prompts:
            assert fmt.encode_markup(tok, p) == tok(p, add_special_tokens=False)["input_ids"], (kind, p)
    for kind, tok in toks.items():
        forged = " ".join(tok.all_special_tokens)
        ids = fmt.encode_markup(tok, fmt.build_prompt(fmt.neutralise(forged)[0], history))
        assert ids.count(tok.bos_token_id) == 3 and ids.count(tok.eos_token_id) == 2, kind
        assert multiround.Tokenizer(tok).encode(fmt.render_context("x")) == fmt.encode_markup(tok, fmt.render_context("x"))


def test_records_without_id_get_a_text_hash_id(tmp_path):
    """No `id` field: the id hashes the raw text, so it does not depend on position or sharding."""
    from ipt_utils.io import record_id

    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["one", "two", "one", "three"]))
    one = [t.id for t in sy.load_texts(_cfg(corpus=str(path)))[0]]
    assert one[0] == one[2] == record_id({}, "one") and one[0].startswith("sha1:") and len(set(one)) == 3
    two = [t.id for i in (0, 1) for t in sy.load_texts(_cfg(corpus=str(path), num_shards=2, shard_index=i))[0]]
    assert sorted(two) == sorted(one)
    assert record_id({"id": 7, "text": "one"}, "one") == "7"


def test_params_cross_checks():
    with pytest.raises(ValueError, match="shard_index"):
        _cfg(num_shards=2, shard_index=2)
    with pytest.raises(ValueError, match="shard_by: files needs an hf: corpus"):
        _cfg(shard_by="files", corpus="x.jsonl")
    with pytest.raises(ValueError, match="max_new_tokens"):
        _cfg(max_new_tokens=1000)


# ----------------------------------------------------------------------------- real backends

@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """A tiny Mistral (head_dim 32) with scaled-up random weights, so greedy outputs vary."""
    import torch
    from transformers import AutoModelForCausalLM

    from ipt_utils import assets

    d = tmp_path_factory.mktemp("tiny")
    corpus = d / "corpus.jsonl"
    with open(corpus, "w") as f:
        for i in range(200):
            f.write(json.dumps({"text": f"Text {i} is about cells, prices and a question {i * 7}."}) + "\n")
    tok = assets.build_tiny_tokenizer(d / "tok", vocab_size=400, files=(str(corpus),))
    shape = assets.ModelShape(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
                              num_kv_heads=1, max_position_embeddings=512, vocab_size=0)
    assets.build_tiny_model(d / "model", shape, tok, seed=0)
    model = AutoModelForCausalLM.from_pretrained(d / "model")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(30.0)
    assets.save_model(model, tok, d / "model")
    prompts = [multiround.Tokenizer(tok).encode(fmt.render_context(t)) for t in
               ["Cells.", "Prices of cells and a question " * 4, "Text 3 is about a question.", "7"]]
    return str(d / "model"), tok, prompts


def test_transformers_batched_equals_one_at_a_time(tiny_synth):
    import torch

    path, tok, prompts = tiny_synth
    eng = generation.TransformersEngine(path, tok, _cfg(max_new_tokens=24), "cpu", torch.float32)
    batched = eng.generate(prompts)
    single = [eng.generate([p])[0] for p in prompts]
    assert batched == single
    assert len({o.text for o in batched}) == len(prompts)  # outputs differ, so the check means something
    assert all(o.n_tokens <= 24 for o in batched)


def test_grouped_attention_matches_stock_sdpa_on_padded_batch(tiny_synth):
    """The CPU engine swaps in ipt_utils.attention (no KV-head copy); same logits and tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    from ipt_utils import attention

    path, tok, prompts = tiny_synth
    eng = generation.TransformersEngine(path, tok, _cfg(max_new_tokens=24), "cpu", torch.float32)
    assert eng.grouped_attention and eng.model.config._attn_implementation == attention.NAME
    ref = AutoModelForCausalLM.from_pretrained(path).eval()
    assert ref.config._attn_implementation == "sdpa"
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        a = eng.model(input_ids=ids, attention_mask=mask).logits
        b = ref(input_ids=ids, attention_mask=mask).logits
        real = mask.bool()
        torch.testing.assert_close(a[real], b[real], rtol=1e-4, atol=1e-4)
        kw = dict(attention_mask=mask, max_new_tokens=24, do_sample=False, pad_token_id=0)
        assert torch.equal(eng.model.generate(ids, **kw), ref.generate(ids, **kw))
    # on CUDA the stock sdpa is kept (a mask plus enable_gqa falls back to the math kernel there)
    assert not attention.use_grouped(ref, "cuda") and ref.config._attn_implementation == "sdpa"


def test_vllm_backend_on_tiny_model(tiny_synth):
    ok, why = generation.vllm_available()
    if not ok:
        pytest.skip(f"import vllm failed: {why}")
    import torch

    path, tok, prompts = tiny_synth
    cfg = _cfg(max_new_tokens=24, max_model_len=512, backend="vllm")
    eng = generation.make_engine(path, tok, cfg, seed=0, device="cpu", dtype=torch.float32)
    assert eng.backend == "vllm"
    outs = eng(prompts)
    ref = generation.TransformersEngine(path, tok, cfg, "cpu", torch.float32).generate(prompts)
    assert all(o.n_tokens == 24 or o.text != "" for o in outs) and eng.calls == 1
    # both greedy from the same weights: same start of every continuation (fp32 ties may differ later)
    for o, r in zip(outs, ref):
        assert o.text[:8] == r.text[:8], (o.text, r.text)
