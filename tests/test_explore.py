"""The synthesis explorer shows what was really sent and produced (rebuilt from the round files)."""
from types import SimpleNamespace

import pytest

from ipt_utils import explore, generation, io, shards
from ipt_utils import synthesize as sy
from test_synthesize import FakeGen, WordTok, _texts


@pytest.fixture
def synthesized(tmp_path):
    """A 3-round shard synthesized with a recording fake engine, as stage 02 writes it."""
    tok = WordTok()
    gen = FakeGen(tok)
    texts = _texts(["w0", "nopair1"] + [f"w{i}" for i in range(2, 11)])
    # the settings synthesize_shard / write_augmented read (the stage's Params has more)
    cfg = SimpleNamespace(model="m", corpus="c.jsonl", split="train", text_column="text", domain="general",
                          max_texts=0, num_shards=1, shard_index=0, shard_by="records", rounds=3, max_new_tokens=16,
                          max_model_len=1000, budget=984)
    ctx = SimpleNamespace(work=tmp_path / "02_synthesize", seed=0)
    synths, _ = sy.synthesize_shard(ctx, cfg, texts, generation.Engine(lambda: gen, "fake", 64), tok)
    rows = sy.write_augmented(ctx, cfg, synths)
    return SimpleNamespace(tok=tok, gen=gen, cfg=cfg, work=ctx.work, synths=synths, rows=rows)


def test_prompts_are_rebuilt_exactly_from_the_round_files(synthesized):
    s = synthesized
    entries = explore.load(s.work, s.cfg)
    assert [e.key for e in entries] == list(range(11))
    # the fake engine recorded each decoded prompt; Engine sorts by length, so compare as sets per text
    sent = {tuple(s.tok.encode(p)) for p in s.gen.prompts}
    for e in entries:
        assert tuple(s.tok.encode(e.prompt)) in sent
        assert e.prompt_tokens == len(s.tok.encode(e.prompt))
        assert e.prompt.endswith(e.context) and e.raw_text.split()[0] in e.context
    by_key = {e.key: e for e in entries}
    inherited = [e for e in entries if e.inherited]
    assert inherited and all(e.history for e in inherited)
    for e in inherited:  # history = the slot's chain, oldest first, each as a full example
        assert [h.key for h in e.history] == next(x.history for x in s.synths if x.key == e.key)
        for h in e.history:
            assert h.rendered.endswith("</s>") and by_key[h.key].raw_text.split()[0] in h.rendered
    assert any(len(e.history) == 2 for e in entries)  # round 2 inherits two examples


def test_entries_carry_pairs_and_final_text(synthesized):
    s = synthesized
    entries = explore.load(s.work, s.cfg)
    rows = {m["id"]: (r, m) for r in io.iter_jsonl(shards.augmented_path(s.work, s.cfg)) for m in r["members"]}
    for e in entries:
        r, m = rows[e.id]
        assert (e.text, e.mode, e.layout, e.pairs) == (r["text"], m["mode"], r["layout"], m["pairs"])
        assert e.document == r["id"] and e.id in e.document_members and m["raw_text"] in e.text
    assert any(len(e.document_members) > 1 for e in entries)  # chained texts share one document
    nopair = next(e for e in entries if e.id == "id-nopair1")
    assert nopair.pairs == [] and nopair.mode == "raw" and nopair.text == nopair.raw_text


def test_filters_and_views(synthesized):
    entries = explore.load(synthesized.work, synthesized.cfg)
    opts = explore.choices(entries)
    assert "raw" in opts["mode"] and opts["inherited"] == [True, False]
    assert explore.select(entries) == entries
    raw = explore.select(entries, mode="raw")
    assert raw and all(e.mode == "raw" for e in raw)
    inh = explore.select(entries, inherited=True, mode=explore.ALL)
    assert inh and all(e.inherited for e in inh)
    assert explore.select(entries, mode="raw", layout="no-such-layout") == []

    e = next(e for e in entries if len(e.history) == 2)
    page = explore.entry_html(e)
    for part in ("Raw text", "Prompt sent to the synthesizer", "Generated pairs", "Pre-training text",
                 "history 2/2", e.layout):
        assert part in page
    assert "&lt;CON&gt;" in page  # markup is shown escaped, not swallowed as HTML tags
    static = explore.static_html(entries)
    assert "Texts by mode / layout / inherited" in static and static.count("class='ipt-x'") == 3


def test_explorer_widget_and_fallback(synthesized):
    ctx = SimpleNamespace(interactive=False, work_of=lambda stage: synthesized.work)
    html = explore.explorer(ctx, synthesized.cfg)
    assert "Pre-training text" in html.data

    ctx.interactive = True
    box = explore.explorer(ctx, synthesized.cfg)
    (mode, _layout, inherited), (pick, count), view = box.children[0].children, box.children[1].children, \
        box.children[2]
    assert "11 of 11" in count.value and "Raw text" in view.value
    mode.value = "raw"
    assert "1 of 11" in count.value and "id-nopair1" in view.value
    mode.value, inherited.value = explore.ALL, True
    assert all("inherited" in label for label, _ in pick.options)
