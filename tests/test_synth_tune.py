"""Stage 01 data building, loss mask, training (full and LoRA) and resume."""
import json
from types import SimpleNamespace

import pytest

from ipt_utils import assets, collection, io, synth_tune
from ipt_utils.format import Pair, render_context, render_pairs
from ipt_utils.profiles import load_profile
from ipt_utils.schema import validate
from ipt_utils.registry import RunParams
from ipt_utils.stage import StageContext
from ipt_utils.packing import IGNORE
from ipt_utils.collection import Example

TINY = dict(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=2,
            max_position_embeddings=512, vocab_size=0)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return assets.build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _cfg(tmp_path, **over):
    base = load_profile("ci-tiny").section("synth_tune")
    base.update({"tiny_model": TINY, "max_steps": 6, "save_steps": 3, "batch_size": 2, "max_seq_len": 256, **over})
    return validate(synth_tune.Params, base)


def _ctx(tmp_path):
    run = RunParams(seed=0, work_dir="", device="cpu", offline=True, dtype="float32")
    return StageContext(profile="t", stage="01_synth_tune", run_dir=tmp_path / "run",
                        work_root=tmp_path / "work", run=run, interactive=False)


def test_loss_mask_token_by_token(tokenizer):
    ex = Example("d", "Rain fell.", [Pair("What fell?", "Rain"), Pair("When?", "Today")], "free-form")
    ids, labels = collection.encode_example(tokenizer, ex)
    ctx_ids = tokenizer(render_context("Rain fell."), add_special_tokens=False)["input_ids"]
    tgt = render_pairs(ex.pairs) + "</s>"
    tgt_ids = tokenizer(tgt, add_special_tokens=False)["input_ids"]
    assert ids == ctx_ids + tgt_ids
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert ids[-1] == tokenizer.eos_token_id
    for i, (tok_id, lab) in enumerate(zip(ids, labels)):
        if i < len(ctx_ids):
            assert lab == IGNORE, (i, tokenizer.decode([tok_id]))
        else:
            assert lab == tok_id
    assert tokenizer.decode([t for t, l in zip(ids, labels) if l != IGNORE]) == tgt


@pytest.fixture(scope="module")
def metaspace_tokenizer():
    """A SentencePiece-style tokenizer (Metaspace, a "▁" prepended to the first word, markup
    as plain text) like Mistral's: there, a piece tokenized on its own starts differently
    than the same piece inside a longer string."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tk.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    corpus = ["<CON> Rain fell on the hills. </CON>\n\n<QUE> What fell? <ANS> Rain </END>",
              "Prices rose 3% in May. Which? Options: up down Say hi. Hi. Other. q? a Next text. Where?"] * 20
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("which", ["tokenizer", "metaspace_tokenizer"])
def test_tuning_tokens_equal_the_tokens_inside_a_prompt(which, request):
    """An example is tuned on exactly the tokens it has as a history example in a synthesis
    prompt (stage 02 encodes prompts with format.encode_markup), and the loss starts where its
    context ends."""
    from ipt_utils.format import build_prompt, encode_markup, render_example

    tokenizer = request.getfixturevalue(which)

    examples = [Example("d", "Rain fell on the hills.", [Pair("What fell?", "Rain"), Pair("Where?", "On the hills")], "free-form"),
                Example("d", "Prices rose 3% in May.", [Pair("Which?\nOptions:\n- up\n- down", "up")], "multi-choice"),
                Example("d", "", [Pair("Say hi.", "Hi.")], "free-form")]
    for ex in examples:
        ids, labels = collection.encode_example(tokenizer, ex)
        assert ids == encode_markup(tokenizer, render_example(ex.context, ex.pairs))
        if ex.context or which == "tokenizer":  # a Metaspace "first" tokenizer starts a piece after
            # a parsed <s> without its "▁" (Mistral's own and the tiny one do not differ)
            assert ids == tokenizer(render_example(ex.context, ex.pairs), add_special_tokens=False)["input_ids"]
        prompt = encode_markup(tokenizer, build_prompt("Next text.", [(ex.context, ex.pairs)]))
        assert prompt[:len(ids)] == ids
        later = encode_markup(tokenizer, build_prompt("Next text.", [("Other.", [Pair("q?", "a")]),
                                                                     (ex.context, ex.pairs)]))
        assert any(later[i:i + len(ids)] == ids for i in range(len(later) - len(ids) + 1))
        n = labels.count(IGNORE)
        assert labels[n:] == ids[n:] and IGNORE not in labels[n:]
        # the context's tokens, the last of which may reach across the boundary (then it is not trained)
        ctx = render_context(ex.context).replace(" ", "")
        assert tokenizer.decode(ids[:n]).replace(" ", "").startswith(ctx)
        assert ctx.startswith(tokenizer.decode(ids[:n - 1]).replace(" ", ""))
        assert ids[-1] == tokenizer.eos_token_id


def test_collator_pads_without_a_pad_token(metaspace_tokenizer):
    """Mistral-7B's tokenizer has no pad token (found by the paper-500m rehearsal)."""
    tok = metaspace_tokenizer
    assert tok.pad_token_id is None
    batch = [dict(zip(("input_ids", "labels"), collection.encode_example(tok, Example("d", text, [Pair("q?", "a")], ""))))
             for text in ("Rain fell.", "Rain fell on the hills all day.")]
    out = collection.data_collator(tok)(batch)
    short = len(batch[0]["input_ids"])
    assert (out["input_ids"][0, short:] == tok.eos_token_id).all()
    assert (out["labels"][0, short:] == IGNORE).all() and (out["attention_mask"][0, short:] == 0).all()


def _write_collection(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_load_split_cap_and_malformed(tmp_path):
    rows = []
    for ds in ("a", "b", "held"):
        for i in range(10):
            rows.append({"context": f"{ds} context {i}.", "QA_list": [{"Q": f"q{j}?", "A": f"a{j}"} for j in range(1 + i % 4)],
                         "QA_type": "free-form", "rc_name": ds})
    rows.append({"context": "no pairs", "QA_list": [], "QA_type": "x", "rc_name": "a"})
    rows.append({"context": 5, "QA_list": [{"Q": "q", "A": "a"}], "rc_name": "a"})
    src = tmp_path / "c.jsonl"
    _write_collection(src, rows)
    cfg = _cfg(tmp_path, data=str(src), heldout_datasets=["held"], max_per_dataset=4, eval_per_dataset=1)
    examples, stats = collection.load_collection(cfg)
    assert stats["records_malformed"] == 2 and stats["records_read"] == 32
    assert str(src) in stats["first_malformed"]
    train, seen, unseen = collection.split_examples(examples, cfg, seed=0)
    assert {e.dataset for e in unseen} == {"held"} and not any(e.dataset == "held" for e in train)
    assert len(seen) == 2 and not set(map(id, seen)) & set(map(id, train))
    for ds in ("a", "b"):
        kept = [e for e in train if e.dataset == ds]
        assert len(kept) == 4
        # the cap prefers contexts with the most pairs (among those not held out)
        pool = sorted((len(e.pairs) for e in examples if e.dataset == ds and e not in seen), reverse=True)
        assert sorted((len(e.pairs) for e in kept), reverse=True) == pool[:4]


@pytest.mark.parametrize("kind", ["tiny", "sentencepiece", "llama3"])
def test_collection_spelling_special_tokens_is_text(tmp_path, tokenizer_kinds, kind):
    """Contexts and pairs that spell <s>, </s>, <pad>, <|begin_of_text|>, markup ...: neutralised
    and counted, then tokenized as text, so an example holds exactly one BOS and one EOS, and its
    ids are those stage 02 gives it as a history example (format.encode_markup)."""
    from conftest import FORGED

    from ipt_utils.format import MARKUP, build_prompt, encode_markup, render_example

    f = " ".join(FORGED + MARKUP)
    src = tmp_path / "c.jsonl"
    _write_collection(src, [{"context": f"Context {f}", "QA_list": [{"Q": f"Q {f}?", "A": f"A {f}"}], "rc_name": "a"},
                            {"context": "plain", "QA_list": [{"Q": "q?", "A": "a"}], "rc_name": "a"}])
    examples, stats = collection.load_collection(_cfg(tmp_path, data=str(src), datasets=[], heldout_datasets=[]))
    assert stats["records_neutralised"] == 1 and stats["records_read"] == 2
    tok = tokenizer_kinds[kind][1]
    for ex in examples:
        assert not any(m in ex.context + ex.pairs[0].instruction + ex.pairs[0].response for m in MARKUP)
        ids, labels = collection.encode_example(tok, ex)
        assert ids.count(tok.bos_token_id) == 1 == ids.count(tok.eos_token_id)
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id == labels[-1]
        assert ids == encode_markup(tok, render_example(ex.context, ex.pairs))
        prompt = encode_markup(tok, build_prompt("Next.", [(ex.context, ex.pairs)]))
        assert prompt[:len(ids)] == ids


def test_hostile_collection_records_are_used_skipped_or_counted(tmp_path, tokenizer):
    """Empty and whitespace-only contexts are examples without a text (as in the release), a
    340k-character context is too long and counted, NUL/control/CJK/emoji are tuned on,
    malformed records are counted, invalid UTF-8 is refused with file and line."""
    from conftest import HOSTILE

    rows = [{"context": t, "QA_list": [{"Q": f"q {k}?", "A": f"a {k}"}], "rc_name": "a"} for k, t in HOSTILE.items()]
    rows += [{"context": "c", "QA_list": [{"Q": "\x00", "A": "a"}], "rc_name": "a"},  # NUL is not blank: kept
             {"context": "c", "QA_list": [{"Q": " ", "A": "a"}], "rc_name": "a"}, {"QA_list": [], "rc_name": "a"}]
    src = tmp_path / "c.jsonl"
    _write_collection(src, rows)
    examples, stats = collection.load_collection(_cfg(tmp_path, data=str(src), datasets=[], heldout_datasets=[]))
    assert stats["records_read"] == len(rows) and stats["records_malformed"] == 2
    assert stats["first_malformed"] == f"{src}:{len(HOSTILE) + 2}"
    assert [e.context for e in examples[:2]] == ["", ""]
    seqs, st = collection.build_sequences(tokenizer, examples, max_len=256, seed=0)
    assert st["examples_too_long"] == 1 and st["examples_used"] == len(examples) - 1
    for seq in seqs:
        assert seq["input_ids"].count(tokenizer.bos_token_id) == seq["input_ids"].count(tokenizer.eos_token_id)
    text = tokenizer.decode([t for s in seqs for t in s["input_ids"]])
    assert HOSTILE["nul"] in text and HOSTILE["cjk_emoji"] in text and HOSTILE["control"] in text
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"context": "ok", "QA_list": [{"Q": "q", "A": "a"}]}\n{"context": "\xff"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: invalid UTF-8"):
        collection.load_collection(_cfg(tmp_path, data=str(bad), datasets=[], heldout_datasets=[]))


def test_sequences_concatenate_same_dataset(tokenizer):
    exs = [Example(ds, f"Text {ds}{i} about things.", [Pair(f"Q{i}?", f"A{i}")], "free-form")
           for ds in ("x", "y") for i in range(12)]
    seqs, stats = collection.build_sequences(tokenizer, exs, max_len=96, seed=0)
    assert stats["examples_used"] == 24 and stats["sequences"] == len(seqs)
    for s in seqs:
        assert len(s["input_ids"]) <= 96 and len(s["input_ids"]) == len(s["labels"])
        text = tokenizer.decode(s["input_ids"])
        other = "y" if s["dataset"] == "x" else "x"
        assert f"Text {other}" not in text  # never mixes datasets
    assert any(tokenizer.decode(s["input_ids"]).count("<CON>") > 1 for s in seqs)  # few-shot
    long = [Example("z", "word " * 200, [Pair("q?", "a")], "free-form")]
    _, st = collection.build_sequences(tokenizer, long, max_len=64, seed=0)
    assert st["examples_too_long"] == 1


@pytest.mark.parametrize("method", ["full", "lora"])
def test_train_saves_plain_checkpoint_and_resumes(tmp_path, method, stop_after):
    from transformers import AutoModelForCausalLM

    ctx = _ctx(tmp_path)
    cfg = _cfg(tmp_path, method=method, learning_rate=0.01)
    examples, _ = collection.load_collection(cfg)
    train, _, _ = collection.split_examples(examples, cfg, 0)
    model, tok = synth_tune.base_model_and_tokenizer(ctx, cfg)
    seqs, _ = collection.build_sequences(tok, train[:40], cfg.max_seq_len, 0)
    m = synth_tune.train(ctx, cfg, seqs, model, tok)
    assert m["steps"] == 6 and m["resumed_from_step"] == 0 and m["final_loss"] is not None
    out = ctx.work / "model"
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    assert reloaded.config.model_type == "mistral"
    assert (ctx.stage_dir / "train_log.csv").read_text().startswith("step,loss,lr")
    if method == "full":
        # an interrupted run (stopped after the step-3 checkpoint) resumes with the same
        # data order and schedule: its later losses equal the uninterrupted run's
        import pandas as pd

        full_log = pd.read_csv(ctx.stage_dir / "train_log.csv")
        ctx2 = _ctx(tmp_path / "again")
        model2, _ = synth_tune.base_model_and_tokenizer(ctx2, cfg)
        with stop_after(3):
            part = synth_tune._train_in_process(ctx2, cfg, seqs, model2, tok)
        assert part == {"steps": 3, "completed": False} and not (ctx2.work / "model").exists()
        model3, _ = synth_tune.base_model_and_tokenizer(ctx2, cfg)
        m3 = synth_tune.train(ctx2, cfg, seqs, model3, tok)
        assert m3["resumed_from_step"] == 3 and m3["steps"] == 6
        resumed_log = pd.read_csv(ctx2.stage_dir / "train_log.csv")
        later = full_log["step"] > 3
        assert list(resumed_log["step"]) == list(full_log["step"])
        assert resumed_log["loss"][later].tolist() == pytest.approx(full_log["loss"][later].tolist(), rel=1e-4)
        assert not list(ctx2.work.glob("checkpoints-*/checkpoint-*"))  # cleaned after success


def test_changed_params_never_resume_stale_checkpoints(tmp_path, tokenizer, stop_after):
    ctx = _ctx(tmp_path)
    cfg = _cfg(tmp_path)
    examples, _ = collection.load_collection(cfg)
    train, _, _ = collection.split_examples(examples, cfg, 0)
    model, tok = synth_tune.base_model_and_tokenizer(ctx, cfg)
    seqs, _ = collection.build_sequences(tok, train[:40], cfg.max_seq_len, 0)
    assert seqs
    with stop_after(3):
        synth_tune._train_in_process(ctx, cfg, seqs, model, tok)
    other = _cfg(tmp_path, learning_rate=0.02)
    assert synth_tune.run_key(ctx, other, seqs) != synth_tune.run_key(ctx, cfg, seqs)
    assert synth_tune.run_key(ctx, cfg, seqs[:-1]) != synth_tune.run_key(ctx, cfg, seqs)
    model, _ = synth_tune.base_model_and_tokenizer(ctx, other)
    m = synth_tune.train(ctx, other, seqs, model, tok)
    assert m["resumed_from_step"] == 0 and m["steps"] == 6


def test_accelerate_launch_on_cpu(tmp_path):
    """The multi-GPU path (accelerate launch of this module) with a one-process CPU config."""
    cfg_file = tmp_path / "cpu.yaml"
    cfg_file.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nnum_processes: 1\n"
                        "num_machines: 1\nmachine_rank: 0\nmixed_precision: 'no'\nuse_cpu: true\n")
    ctx = _ctx(tmp_path)
    cfg = _cfg(tmp_path, accelerate_config=str(cfg_file), max_steps=2)
    examples, _ = collection.load_collection(cfg)
    train, _, _ = collection.split_examples(examples, cfg, ctx.seed)
    seqs, _ = collection.build_sequences(synth_tune.base_tokenizer(ctx, cfg), train, cfg.max_seq_len, ctx.seed)
    m = synth_tune.train(ctx, cfg, seqs, None, None)
    assert m["steps"] == 2 and (ctx.work / "model" / "model.safetensors").exists()
    # the launched process trained on the notebook's sequences (it never re-read the collection)
    assert io.read_jsonl(ctx.work / synth_tune.SEQUENCES) == seqs


def test_profile_refuses_a_config_the_collection_lacks(tmp_path):
    """PubMedQA is not a config of the collection (PubMedQA_no_opt / _yes_opt are): refused at
    validation, naming the bad name, the key and the valid names."""
    import yaml

    from ipt_utils.schema import REPO_ROOT, SchemaError

    data = yaml.safe_load((REPO_ROOT / "params" / "paper-500m.yaml").read_text())
    data["synth_tune"]["datasets"] = ["squad", "PubMedQA"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(SchemaError) as e:
        load_profile(str(bad))
    msg = str(e.value)
    assert "synth_tune" in msg and "datasets" in msg and "'PubMedQA'" in msg
    assert "PubMedQA_no_opt" in msg and "PubMedQA_yes_opt" in msg and "AQUA_RAT" in msg
    section = {**load_profile("paper-500m").section("synth_tune"), "heldout_datasets": ["PubMedQA"]}
    with pytest.raises(SchemaError, match="heldout_datasets"):
        validate(synth_tune.Params, section)
    # unknown repos and local files are not second-guessed
    validate(synth_tune.Params, {**section, "heldout_datasets": [], "data": "hf:someone/other", "datasets": ["x"]})


def test_stage_metrics_follow_the_declared_schema(tmp_path):
    """Stage 01's metrics.json (synth_tune.stage_metrics over the steps' outputs, as the notebook
    builds it) passes the SynthTuneMetrics check finish_stage makes; a count nothing raised is 0."""
    import typing

    import pandas as pd

    from ipt_utils import contracts, synth_eval

    ctx, cfg = _ctx(tmp_path), _cfg(tmp_path, max_steps=2, save_steps=2, max_seq_len=768)
    examples, read_stats = collection.load_collection(cfg)
    assert "records_malformed" not in read_stats  # counted by load_collection only when one is
    train, seen, unseen = collection.split_examples(examples, cfg, 0)
    tok = synth_tune.base_tokenizer(ctx, cfg)
    seqs, seq_stats = collection.build_sequences(tok, train[:8], cfg.max_seq_len, 0)
    train_metrics = synth_tune.train(ctx, cfg, seqs, None, tok)
    table = pd.DataFrame([{"model": "tuned", "prompt": "zero-shot", "split": "seen",
                           **synth_eval.aggregate([], [], 0, 0)}])
    m = synth_tune.stage_metrics(read_stats, seq_stats, train_metrics, synth_eval.write_table(ctx, table),
                                 (train, seen, unseen))
    contracts.check_metrics("01_synth_tune", m)
    assert m["records_malformed"] == 0 and m["train_examples"] == len(train) and m["steps"] == 2
    assert set(m["synth_eval"][0]) == set(typing.get_type_hints(synth_eval.SynthEvalRow))
    with pytest.raises(contracts.ContractError, match="eval_seen: missing"):
        contracts.check_metrics("01_synth_tune", {k: v for k, v in m.items() if k != "eval_seen"})


def test_a_hub_collection_with_a_config_in_data_is_refused(tmp_path):
    """hf:NAME:CONFIG plus a datasets list would read that config once per listed name."""
    cfg = SimpleNamespace(data="hf:instruction-pretrain/ft-instruction-synthesizer-collection:squad",
                          datasets=["squad", "hotpot"])
    with pytest.raises(ValueError, match="names a config"):
        list(collection._iter_records(cfg))


def test_tiny_base_is_built_with_tiny_tokenizer_and_named_by_it(tmp_path, tokenizer):
    """A tiny base takes `tiny_tokenizer` (here a local dir fitted to other texts); changing
    it (or the shape) builds a new base instead of reusing one made with the old tokenizer."""
    own = tmp_path / "own_tok"
    assets.build_tiny_tokenizer(own, vocab_size=300, texts=["Marco Marten was born in Osenburg."] * 20,
                                add_prefix_space=True)
    ctx = _ctx(tmp_path)
    run_tok = synth_tune.base_model_dir(ctx, _cfg(tmp_path))
    own_base = synth_tune.base_model_dir(ctx, _cfg(tmp_path, tiny_tokenizer=str(own)))
    assert run_tok != own_base
    assert synth_tune.base_model_dir(ctx, _cfg(tmp_path, tiny_tokenizer=str(own))) == own_base  # built once
    base_tok = synth_tune.base_tokenizer(ctx, _cfg(tmp_path, tiny_tokenizer=str(own)))
    assert base_tok.get_vocab() == assets.load_tokenizer(ctx, str(own)).get_vocab()
    cfg = json.loads((tmp_path / "work" / "01_synth_tune").joinpath(own_base.rsplit("/", 1)[1], "config.json").read_text())
    assert cfg["vocab_size"] == len(base_tok) < len(assets.tiny_tokenizer(ctx))
