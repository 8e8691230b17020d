"""Stage 03: arm recipes, equal budgets, mixing ratios, LR schedule, MFU, training and resume."""
import json
import math
import random

import numpy as np
import pytest

from ipt_utils import arms as arm_data
from ipt_utils import assets, contracts, flops, io, packing, pretrain, training
from ipt_utils import sources as record_sources
from ipt_utils.registry import ARMS, RunParams
from ipt_utils.schema import validate
from ipt_utils.stage import StageContext

TINY = dict(hidden_size=64, intermediate_size=256, num_layers=2, num_heads=2, num_kv_heads=2,
            max_position_embeddings=512, vocab_size=0)
WORDS = "the cell protein market bank rate gene study result price model data river city water light".split()


def _para(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Small raw corpus, tuning collection, augmented corpus, general instructions + tokenizer."""
    d = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    raw = [{"id": f"r{i}", "domain": "general", "text": _para(rng, rng.randint(10, 80))} for i in range(120)]
    coll = [{"context": _para(rng, 30), "QA_list": [{"Q": _para(rng, 5) + "?", "A": _para(rng, 3)}] * 2,
             "QA_type": "free-form", "rc_name": "squad"} for _ in range(15)]
    # augmented rows as stage 02 writes them: one per document (here: single-text documents)
    aug = [{"id": f"r{i}", "member_ids": [f"r{i}"], "domain": "general", "chain_id": f"c{i}",
            "text": "AUG " + raw[i]["text"] + "\n\nQ: why?\nA: because.", "layout": "classic", "mode": "plain",
            "dropped_pairs": 0,
            "members": [{"id": f"r{i}", "raw_text": raw[i]["text"], "mode": "plain", "inherited": False,
                         "dropped_pairs": 0, "pairs": [["Why is it so?", "Because."], ["What?", "This."]]}]}
           for i in range(0, 120, 5)]
    gen = [{"id": f"g{i}", "question": _para(rng, 8) + "?", "response": _para(rng, 12)} for i in range(40)]
    files = dict(raw=_jsonl(d / "raw.jsonl", raw), coll=_jsonl(d / "coll.jsonl", coll),
                 aug=_jsonl(d / "aug.jsonl", aug), gen=_jsonl(d / "gen.jsonl", gen))
    tok_dir = d / "tok"
    assets.build_tiny_tokenizer(tok_dir, vocab_size=512, files=[files["raw"], files["coll"], files["gen"]])
    return files, tok_dir


def _setup(tmp_path, inputs, **over):
    files, tok_dir = inputs
    run = RunParams(seed=0, work_dir="", device="cpu", offline=True, dtype="auto")
    ctx = StageContext(profile="t", stage="03_pretrain", run_dir=tmp_path / "run", work_root=tmp_path / "work",
                       run=run, interactive=False)
    import shutil

    shutil.copytree(tok_dir, ctx.work_root / "assets" / "tokenizer", dirs_exist_ok=True)
    aug_dir = ctx.work_of("02_synthesize")
    shutil.copy(files["aug"], aug_dir / "augmented.jsonl")
    section = dict(arms=["vanilla", "mix", "instruct"], raw_corpus=files["raw"], synth_collection=files["coll"],
                   general_instructions=files["gen"], tuning_repeat=4, general_ratio=0.5, init="scratch",
                   base_model="tiny", model=TINY, tokenizer="tiny", seq_len=64, train_tokens=8 * 512,
                   batch_tokens=512, micro_batch_size=4, learning_rate=3e-3, min_lr_ratio=0.1, warmup_ratio=0.25,
                   weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, grad_clip=1.0, save_steps=3, log_steps=1,
                   gradient_checkpointing=False, num_proc=1, accelerate_config="", arm_variants={},
                   chunk_docs=16, doc_mask=False, attn_implementation="sdpa", compile=False)
    section.update(over)
    return ctx, validate(pretrain.Params, section, prefix="pretrain")


def test_params_cross_checks(tmp_path, inputs):
    with pytest.raises(Exception, match="multiple of seq_len"):
        _setup(tmp_path, inputs, batch_tokens=500)
    with pytest.raises(Exception, match="expected one of"):
        _setup(tmp_path, inputs, arms=["vanilla", "nope"])


def test_instruct_corpus_replaces_converted_texts_only(tmp_path, inputs):
    ctx, cfg = _setup(tmp_path, inputs)
    src = arm_data.source_texts(ctx, cfg)
    raw, inst = list(src["raw"].texts()), list(src["instruct_corpus"].texts())
    assert len(raw) == len(inst) == 120
    # streamed: the augmented texts, then the unconverted raw texts in order (a budget cuts raw only)
    assert inst[:24] == ["AUG " + raw[i] + "\n\nQ: why?\nA: because." for i in range(0, 120, 5)]
    assert inst[24:] == [r for i, r in enumerate(raw) if i % 5]
    pairs = list(src["pairs"].texts())
    assert len(pairs) == 24 and all("Why is it so?" in p and "AUG" not in p for p in pairs)
    tuning = list(src["tuning"].texts())
    assert len(tuning) == 15 and all(t.strip() for t in tuning)
    general = list(src["general"].texts())
    assert general[0].endswith(".") and "?" in general[0] and len(general) == 40
    assert general[0] == "{question} {response}".format(**json.loads(open(inputs[0]["gen"]).readline()))


def test_id_less_parquet_corpus_links_stage_02_to_03(tmp_path, inputs):
    """A corpus without an `id` field (Parquet here): 02's row ids hash the raw text, and the
    instruct arm replaces exactly those records (none left over, no error)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ipt_utils import synthesize as sy

    raw = [{"text": r["text"] if i != 3 else "   "} for i, r in enumerate(io.read_jsonl(inputs[0]["raw"]))]
    pq.write_table(pa.Table.from_pylist(raw), tmp_path / "raw.parquet", row_group_size=16)
    scfg = sy.Params(model="stage:01_synth_tune", corpus=str(tmp_path / "raw.parquet"), split="train",
                     text_column="text", domain="general", max_texts=0, num_shards=1, shard_index=0, shard_by="records", rounds=2,
                     max_new_tokens=16, max_model_len=1000, backend="transformers", batch_size=4,
                     tensor_parallel_size=1, gpu_memory_utilization=0.9, enable_prefix_caching=True, variants=[])
    texts, stats = sy.load_texts(scfg)
    assert stats["texts_skipped_empty"] == 1
    assert [t.id for t in texts[:4]] == [io.record_id({}, raw[i]["text"]) for i in (0, 1, 2, 4)]
    ctx, cfg = _setup(tmp_path, inputs, raw_corpus=str(tmp_path / "raw.parquet"))
    io.write_jsonl(ctx.work_of("02_synthesize") / "augmented.jsonl",
                   [{"id": t.id, "member_ids": [t.id], "text": "AUG " + t.text,
                     "members": [{"id": t.id, "pairs": [["q?", "a."]]}]} for t in texts[::7]])
    src = arm_data.source_texts(ctx, cfg)["instruct_corpus"]
    inst = list(src.texts())
    converted = {t.id for t in texts[::7]}
    # the blank record is skipped and counted in stage 03 too, as in stage 02
    kept = [r["text"] for r in raw if io.record_id(r, r["text"]) not in converted and r["text"].strip()]
    assert len(kept) == len(raw) - len(converted) - 1 and inst == ["AUG " + t.text for t in texts[::7]] + kept
    assert src.info["texts_skipped_empty"] == 1 and src.info["records_read"] == len(raw)


def test_recipes():
    cfg = type("C", (), {"tuning_repeat": 4, "general_ratio": 0.5, "init": "scratch", "arm_variants": {}})()
    assert arm_data.arm_recipe(cfg, "vanilla") == {"pool": [("raw", 1)], "ratio": {}}
    assert arm_data.arm_recipe(cfg, "mix") == {"pool": [("raw", 1), ("tuning", 4)], "ratio": {}}
    assert arm_data.arm_recipe(cfg, "instruct") == {"pool": [("instruct_corpus", 1), ("tuning", 4)], "ratio": {}}
    assert arm_data.arm_recipe(cfg, "continual") == {"pool": [("instruct_corpus", 1)], "ratio": {"general": 0.5}}
    cfg.init = "base_model"  # domain continual pre-training: every arm mixes general instructions
    assert arm_data.arm_recipe(cfg, "vanilla")["ratio"] == {"general": 0.5}


def test_mixing_ratios_natural_and_explicit():
    rng = np.random.default_rng(0)
    raw = packing.Docs.from_lists([[5] * int(n) for n in rng.integers(5, 50, 40)])
    tun = packing.Docs.from_lists([[6] * int(n) for n in rng.integers(5, 50, 10)])
    gen = packing.Docs.from_lists([[7] * int(n) for n in rng.integers(5, 50, 30)])
    srcs = {"raw": raw, "tuning": tun, "general": gen}
    raw_cost, tun_cost = int((raw.lengths + 2).sum()), int((tun.lengths + 2).sum())
    epoch = raw_cost + 3 * tun_cost
    docs, counts = arm_data.mix_documents(srcs, {"pool": [("raw", 1), ("tuning", 3)], "ratio": {}}, 2 * epoch, seed=1)
    assert counts == {"raw": 2 * raw_cost, "tuning": 6 * tun_cost}  # exactly two epochs of the pool
    # tokens per source agree with the documents actually chosen
    assert int((docs.tokens == 5).sum()) == 2 * int(raw.lengths.sum())
    docs, counts = arm_data.mix_documents(srcs, {"pool": [("raw", 1)], "ratio": {"general": 0.5}}, 5000, seed=1)
    share = counts["general"] / sum(counts.values())
    assert abs(share - 0.5) < 60 / 5000  # within one document of the target
    again, _ = arm_data.mix_documents(srcs, {"pool": [("raw", 1)], "ratio": {"general": 0.5}}, 5000, seed=1)
    assert again.tokens.tolist() == docs.tokens.tolist()
    # sources interleave rather than forming two blocks
    first = [int(docs.doc(i)[0]) for i in range(len(docs))]
    assert 7 in first[: len(first) // 3] and 5 in first[: len(first) // 3]


def test_all_arms_share_the_token_budget(tmp_path, inputs):
    ctx, cfg = _setup(tmp_path, inputs, arms=list(ARMS))
    data = arm_data.prepare_data(ctx, cfg)
    rows = {arm: d.rows() for arm, d in data.items()}
    for arm, r in rows.items():
        assert r.shape == (cfg.steps * cfg.batch_seqs, cfg.seq_len), arm
        assert data[arm].efficiency == 1.0
        assert (r == 1).any() and (r == 2).any()  # <s> and </s> present
    tok = arm_data.load_tokenizer(ctx, "tiny")
    assert set(data["vanilla"].source_tokens) == {"raw"}
    assert set(data["mix"].source_tokens) == {"raw", "tuning"}
    assert set(data["instruct"].source_tokens) == {"instruct_corpus", "tuning"}
    assert set(data["pairs_only"].source_tokens) == {"pairs"}
    c = data["continual"].source_tokens
    assert set(c) == {"instruct_corpus", "general"} and abs(c["general"] / sum(c.values()) - 0.5) < 0.1
    aug_id = tok("AUG", add_special_tokens=False)["input_ids"][0]
    assert not (rows["vanilla"] == aug_id).any() and (rows["instruct"] == aug_id).any()
    # cached: a second prepare reads the packed arrays back
    again = arm_data.prepare_arm(ctx, cfg, "instruct")
    assert again.path == data["instruct"].path and again.cache_hits == 3
    summary = arm_data.data_summary(data)
    assert list(summary["arm"]) == list(ARMS)
    # what each arm read is declared in the stage's metrics contract (docs/CONTRACTS.md)
    for arm, d in data.items():
        for name, read in d.sources.items():
            assert not contracts.problems(pretrain.SourceRead, read), (arm, name, read)
        assert not d.augmented or not contracts.problems(pretrain.AugmentedShare, d.augmented), arm


def test_lr_schedule_warmup_then_cosine():
    opt = training.OptimConfig(learning_rate=1.0, total_steps=10, warmup_steps=2, min_lr_ratio=0.1)
    f = [opt.lr_factor(s) for s in range(10)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0)
    assert f[2] == pytest.approx(1.0)  # cosine starts at the top
    assert all(a >= b for a, b in zip(f[2:], f[3:]))
    assert opt.lr_factor(10) == pytest.approx(0.1)
    assert f[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))


def test_mfu_arithmetic_by_hand():
    shape = assets.ModelShape(**TINY)
    # per layer: q,o 64*64 each, k,v 64*64 each (2 kv heads of 32), mlp 3*64*256
    n = 2 * (4 * 64 * 64 + 3 * 64 * 256) + 2048 * 64
    assert n == 262144 == flops.matmul_params(shape, 2048)
    fpt = 6 * 262144 + 12 * 2 * 2 * 32 * 256
    assert fpt == 1966080 == flops.flops_per_token(shape, 2048, 256)
    got = flops.mfu(1e6, shape, 2048, 256, "NVIDIA A100-SXM4-80GB", n_devices=2)
    assert got == pytest.approx(1e6 * 1966080 / (2 * 312e12))
    assert flops.peak_flops("NVIDIA H100 PCIe") == 756e12 and flops.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert flops.mfu(1e6, shape, 2048, 256, None) is None  # CPU
    # matmul params = real model parameters minus the RMSNorm weights (tied embeddings)
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    m = MistralForCausalLM(MistralConfig(vocab_size=2048, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, head_dim=32,
                                         tie_word_embeddings=True))
    norms = sum(p.numel() for name, p in m.named_parameters() if "norm" in name)
    assert sum(p.numel() for p in m.parameters()) - norms == n


def _losses(path):
    import pandas as pd

    return pd.read_csv(path)


def test_train_arm_resume_matches_uninterrupted_run(tmp_path, inputs, stop_after):
    ctx_a, cfg = _setup(tmp_path / "a", inputs, arms=["vanilla"])
    data_a = arm_data.prepare_arm(ctx_a, cfg, "vanilla")
    m_a = pretrain.train_arm(ctx_a, cfg, data_a)
    ref = _losses(ctx_a.stage_dir / "loss_vanilla.csv")
    assert list(ref.columns) == ["step", "loss", "lr", "tokens"] and len(ref) == cfg.steps == 8
    assert ref["tokens"].iloc[-1] == cfg.train_tokens and m_a["tokens"] == cfg.train_tokens
    assert m_a["mfu"] is None and m_a["packing_efficiency"] == 1.0 and m_a["tokens_per_s"] > 0
    assert ref["loss"].iloc[-1] < ref["loss"].iloc[0]
    assert (ctx_a.work / "vanilla" / "model" / "config.json").exists()
    assert not list((ctx_a.work / "vanilla").glob("ckpt-*"))  # checkpoints removed when done

    ctx_b, cfg_b = _setup(tmp_path / "b", inputs, arms=["vanilla"])
    data_b = arm_data.prepare_arm(ctx_b, cfg_b, "vanilla")
    with stop_after(5):  # "crash" after step 5; last ckpt = 3
        part = pretrain.train_arm(ctx_b, cfg_b, data_b)
    assert part["completed"] is False
    ckpts = list((ctx_b.work / "vanilla").glob("ckpt-*/step-*"))
    assert [p.name for p in ckpts] == ["step-0000003"]
    m_b = pretrain.train_arm(ctx_b, cfg_b, data_b)
    assert m_b["resumed_from"] == 3
    got = _losses(ctx_b.stage_dir / "loss_vanilla.csv")
    assert got["step"].tolist() == ref["step"].tolist()
    assert np.allclose(got["lr"], ref["lr"], rtol=1e-6)
    assert np.allclose(got["loss"], ref["loss"], rtol=1e-4, atol=1e-5), (got["loss"] - ref["loss"]).abs().max()

    from safetensors.torch import load_file

    wa = load_file(ctx_a.work / "vanilla" / "model" / "model.safetensors")
    wb = load_file(ctx_b.work / "vanilla" / "model" / "model.safetensors")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4
    # a finished arm is not retrained (also when other arms are added) and its loss log is restored
    (ctx_b.stage_dir / "loss_vanilla.csv").unlink()
    _, cfg_c = _setup(tmp_path / "b", inputs, arms=["vanilla", "mix"])
    assert pretrain.train_arm(ctx_b, cfg_c, data_b)["wall_s"] == m_b["wall_s"]
    assert _losses(ctx_b.stage_dir / "loss_vanilla.csv")["loss"].tolist() == got["loss"].tolist()


def test_gradient_accumulation_matches_one_big_batch(tmp_path, inputs):
    ctx1, cfg1 = _setup(tmp_path / "m1", inputs, arms=["vanilla"], micro_batch_size=8, train_tokens=3 * 512)
    ctx2, cfg2 = _setup(tmp_path / "m2", inputs, arms=["vanilla"], micro_batch_size=2, train_tokens=3 * 512)
    for ctx, cfg in ((ctx1, cfg1), (ctx2, cfg2)):
        pretrain.train_arm(ctx, cfg, arm_data.prepare_arm(ctx, cfg, "vanilla"))
    a, b = _losses(ctx1.stage_dir / "loss_vanilla.csv"), _losses(ctx2.stage_dir / "loss_vanilla.csv")
    assert np.allclose(a["loss"], b["loss"], rtol=1e-4)


def test_continual_arm_starts_from_base_model(tmp_path, inputs):
    ctx, cfg = _setup(tmp_path, inputs, arms=["continual"], train_tokens=2 * 512)
    tok = arm_data.load_tokenizer(ctx, "tiny")
    base = ctx.work_root / "base"
    assets.build_tiny_model(base, assets.ModelShape(**TINY), tok, seed=7)
    ctx2, cfg2 = _setup(tmp_path / "x", inputs, arms=["continual"], train_tokens=2 * 512, base_model=str(base))
    model = pretrain.init_model(ctx2, cfg2, "continual", tok)
    from safetensors.torch import load_file

    w = load_file(base / "model.safetensors")
    assert all(np.allclose(model.state_dict()[k].numpy(), w[k].numpy()) for k in w)
    m = pretrain.train_arm(ctx2, cfg2, arm_data.prepare_arm(ctx2, cfg2, "continual"))
    assert m["tokens"] == 2 * 512 and set(m["source_tokens"]) == {"instruct_corpus", "general"}


def _doc_losses(model, batch):
    """Per-target-token losses [rows, T-1] of a causal LM on a batch dict."""
    import torch

    with torch.no_grad():
        # use_cache=False as in training: transformers reads packed documents off position_ids only
        # when there is no cache and no 2-D attention mask
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    lab = batch["labels"]
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), lab[:, 1:].flatten(),
                                             reduction="none", ignore_index=-100).view(lab.shape[0], -1)


def test_doc_mask_makes_a_document_independent_of_the_previous_one(tmp_path, inputs):
    import torch
    from transformers import AutoModelForCausalLM

    ctx, cfg = _setup(tmp_path, inputs, doc_mask=True)
    tok = arm_data.load_tokenizer(ctx, "tiny")
    assets.build_tiny_model(tmp_path / "m", assets.ModelShape(**TINY), tok, seed=3)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m", attn_implementation="sdpa").eval()
    rng = np.random.default_rng(0)
    a1, a2, b = (rng.integers(10, 400, n).tolist() for n in (9, 9, 12))
    rows = np.array([[1] + a1 + [2, 1] + b + [2], [1] + a2 + [2, 1] + b + [2]], dtype=np.int32)
    start = len(a1) + 2  # position of B's <s>
    for doc_mask, same in ((False, False), (True, True)):
        batch = pretrain.pretrain_batches(rows, 2, 2, bos=1, pad=0, doc_mask=doc_mask)(0, 0, 1)[0]
        assert ("position_ids" in batch) == doc_mask
        loss = _doc_losses(model, batch)[:, start:]  # targets of B's tokens and its </s>
        assert torch.allclose(loss[0], loss[1], atol=1e-5) == same, (doc_mask, loss[0] - loss[1])
    # flash-attention layout (one flattened row of varlen documents), checked here with sdpa:
    # the same per-token targets and losses as the unflattened micro-batch
    flat = pretrain.pretrain_batches(rows, 2, 2, bos=1, pad=0, doc_mask=True, flatten=True)(0, 0, 1)[0]
    assert flat["input_ids"].shape == (1, rows.size) and flat["labels"][0, rows.shape[1]] == -100
    lf = _doc_losses(model, flat)[0]
    lr = _doc_losses(model, batch)
    keep = flat["labels"][0, 1:] != -100
    assert torch.allclose(lf[keep], torch.cat([lr[0], torch.zeros(1), lr[1]])[keep], atol=1e-5)
    # and training with it on runs end to end
    m = pretrain.train_arm(ctx, cfg, arm_data.prepare_arm(ctx, cfg, "vanilla"))
    assert m["tokens"] == cfg.train_tokens


def test_arm_variants_read_another_augmented_corpus(tmp_path, inputs):
    files, _ = inputs
    other = tmp_path / "other_aug.jsonl"
    rows = [json.loads(x) for x in open(files["aug"])]
    other.write_text("".join(json.dumps({**r, "text": "RULE " + r["members"][0]["raw_text"],
                                         "members": [{**r["members"][0], "pairs": [["Rule q?", "Rule a."]]}]})
                             + "\n" for r in rows))
    variants = {"instruct_rule": {"recipe": "instruct", "augmented": str(other)},
                "pairs_1shot": {"recipe": "pairs_only", "augmented": "variant:one_shot"}}
    ctx, cfg = _setup(tmp_path, inputs, arms=["instruct", "instruct_rule"], arm_variants=variants)
    assert arm_data.arm_recipe(cfg, "instruct_rule") == arm_data.arm_recipe(cfg, "instruct")
    assert arm_data.augmented_path(ctx, "variant:one_shot") == \
        ctx.work_root / "02_synthesize" / "variants" / "one_shot" / "augmented.jsonl"
    data = arm_data.prepare_data(ctx, cfg)
    assert data["instruct_rule"].path != data["instruct"].path
    tok = arm_data.load_tokenizer(ctx, "tiny")
    text = {arm: tok.decode(np.asarray(data[arm].rows()).reshape(-1).tolist()) for arm in data}
    assert "RULE " in text["instruct_rule"] and "AUG " not in text["instruct_rule"]
    assert "AUG " in text["instruct"] and "RULE " not in text["instruct"]
    with pytest.raises(FileNotFoundError, match="one_shot"):  # that variant was not synthesized
        arm_data.prepare_arm(ctx, validate(pretrain.Params, {**_section(cfg), "arms": ["pairs_1shot"]}), "pairs_1shot")
    with pytest.raises(Exception, match="arm_variants"):
        _setup(tmp_path, inputs, arms=["instruct_nope"])
    with pytest.raises(Exception, match="new identifier"):
        _setup(tmp_path, inputs, arm_variants={"mix": {"recipe": "instruct", "augmented": ""}})


def test_seed_replicas_share_the_recipe_but_not_the_seed(tmp_path, inputs):
    from ipt_utils.registry import split_replica, stage_deps

    assert [split_replica(a) for a in ("mix_s2", "mix", "mix_s0", "mix_s02", "_s1", "instruct_1shot")] == \
        [("mix", 2), ("mix", 0), ("mix_s0", 0), ("mix_s02", 0), ("_s1", 0), ("instruct_1shot", 0)]
    ctx, cfg = _setup(tmp_path, inputs, arms=["vanilla", "vanilla_s1", "instruct_s2"])
    assert arm_data.arm_recipe(cfg, "instruct_s2") == arm_data.arm_recipe(cfg, "instruct")
    assert [arm_data.arm_seed(ctx, a) for a in cfg.arms] == [0, 1, 2]
    assert stage_deps("03_pretrain", {"pretrain": _section(cfg)}) == ("02_synthesize",)  # instruct_s2 reads 02
    data = arm_data.prepare_data(ctx, cfg)
    rows = {a: np.asarray(d.rows()) for a, d in data.items()}
    assert rows["vanilla"].shape == rows["vanilla_s1"].shape
    assert not np.array_equal(rows["vanilla"], rows["vanilla_s1"])  # another document order
    m0, m1 = (pretrain.train_arm(ctx, cfg, data[a]) for a in ("vanilla", "vanilla_s1"))
    assert m0["final_loss"] != m1["final_loss"]
    assert (ctx.work / "vanilla_s1" / "model" / "model.safetensors").exists()
    with pytest.raises(Exception, match="expected one of"):
        _setup(tmp_path, inputs, arms=["vanilla", "nope_s1"])
    with pytest.raises(Exception, match="seed replica"):
        _setup(tmp_path, inputs, arm_variants={"instruct_s1": {"recipe": "instruct", "augmented": ""}})


def _section(cfg):
    from dataclasses import asdict

    return asdict(cfg)


def test_continual_from_this_stages_vanilla_arm(tmp_path, inputs):
    """ci-tiny's continual run: base_model stage:03_pretrain/vanilla, trained first in the same stage."""
    from safetensors.torch import load_file

    with pytest.raises(Exception, match="trained before"):
        _setup(tmp_path, inputs, arms=["continual", "vanilla"], base_model="stage:03_pretrain/vanilla")
    ctx, cfg = _setup(tmp_path, inputs, arms=["vanilla", "continual"], base_model="stage:03_pretrain/vanilla",
                      train_tokens=2 * 512)
    data = arm_data.prepare_data(ctx, cfg)  # before vanilla is trained: tokenizer = vanilla's (tiny)
    assert data["continual"].tokenizer == "tiny"
    c = data["continual"].source_tokens
    assert set(c) == {"instruct_corpus", "general"} and abs(c["general"] / sum(c.values()) - 0.5) < 0.1
    metrics = pretrain.train_arms(ctx, cfg, data)
    contracts.check_metrics("03_pretrain", metrics)  # the metrics.json finish_stage writes
    m = metrics["arms"]
    vanilla = load_file(ctx.work / "vanilla" / "model" / "model.safetensors")
    tok = arm_data.load_tokenizer(ctx, "tiny")
    start = pretrain.init_model(ctx, cfg, "continual", tok).state_dict()
    assert all(np.allclose(start[k].numpy(), vanilla[k].numpy()) for k in vanilla)
    assert m["continual"]["tokens"] == m["vanilla"]["tokens"] == 2 * 512  # equal budgets
    # a retrained base invalidates the continual run's key
    key = pretrain._arm_key(ctx, cfg, data["continual"])
    (ctx.work / "vanilla" / "model" / "config.json").touch()
    import os

    st = (ctx.work / "vanilla" / "model" / "model.safetensors").stat()
    os.utime(ctx.work / "vanilla" / "model" / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    assert pretrain._arm_key(ctx, cfg, data["continual"]) != key


def test_a_document_replaces_all_its_member_texts(tmp_path, inputs):
    """A multi-text document (a chain of texts) replaces every member's raw text and is emitted
    once, whole; its pairs (members in order) form one pairs_only text."""
    files, _ = inputs
    raw = [json.loads(x) for x in open(files["raw"])]
    ctx, cfg = _setup(tmp_path, inputs)
    doc = {"id": "r0", "member_ids": ["r0", "r7", "r9"], "text": "DOC " + " | ".join(raw[i]["text"] for i in (0, 7, 9)),
           "members": [{"id": f"r{i}", "raw_text": raw[i]["text"], "pairs": [[f"q{i}?", f"a{i}."]]} for i in (0, 7, 9)]}
    io.write_jsonl(ctx.work_of("02_synthesize") / "augmented.jsonl", [doc])
    src = arm_data.source_texts(ctx, cfg)
    inst = list(src["instruct_corpus"].texts())
    assert inst == [doc["text"]] + [r["text"] for i, r in enumerate(raw) if i not in (0, 7, 9)]
    (pairs,) = list(src["pairs"].texts())
    assert pairs.index("q0?") < pairs.index("q7?") < pairs.index("q9?")


def test_pairs_only_drops_the_pairs_templify_drops(tmp_path, inputs):
    """A CoT pair with two final-answer markers and an option answer matching no option are
    dropped from the augmented document by templify; pairs_only must not train on them either,
    and a document left without usable pairs gives no pairs_only text."""
    files, _ = inputs
    raw = [json.loads(x) for x in open(files["raw"])]
    ctx, cfg = _setup(tmp_path, inputs)
    bad_cot = ["Why BADCOT?\nLet's think step by step.", "R. Therefore, the answer is x. Therefore, the answer is y"]
    bad_opt = ["Which BADOPT?\nOptions:\n- red\n- blue", "green"]
    good = ["Which GOODOPT?\nOptions:\n- red\n- blue", "blue"]
    docs = [{"id": "r0", "member_ids": ["r0"], "text": "DOC0",
             "members": [{"id": "r0", "raw_text": raw[0]["text"], "pairs": [bad_cot, good, bad_opt]}]},
            {"id": "r5", "member_ids": ["r5"], "text": raw[5]["text"],
             "members": [{"id": "r5", "raw_text": raw[5]["text"], "pairs": [bad_opt]}]}]
    io.write_jsonl(ctx.work_of("02_synthesize") / "augmented.jsonl", docs)
    (pairs,) = list(arm_data.source_texts(ctx, cfg)["pairs"].texts())
    assert "GOODOPT" in pairs and "BADCOT" not in pairs and "BADOPT" not in pairs


def test_a_hub_scale_corpus_is_read_only_as_far_as_the_budget(tmp_path, inputs, monkeypatch):
    """RefinedWeb-like raw corpus (`content`, a dir of 12 parquet files read through the hf:
    path; the last file is unreadable) far larger than the arms' budget: each arm reads only
    the prefix its budget needs (at most one chunk more), never the last file; the instruct arm
    keeps every converted text (taken from a late file, as shard_by files jobs do) and fills the
    rest with raw text, so the augmented texts are the intended 1/5 of the tokens."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    rng = random.Random(3)
    rows = {f: [{"id": f"f{f}r{r}", "content": " ".join(rng.choice(WORDS) for _ in range(20))} for r in range(40)]
            for f in range(12)}
    data = tmp_path / "refinedweb" / "data"
    data.mkdir(parents=True)
    for f, recs in rows.items():
        path = data / f"train-{f:05d}-of-00012.parquet"
        if f == 11:
            path.write_bytes(b"not parquet: opening this file means the corpus was read past the budget")
        else:
            pq.write_table(pa.Table.from_pylist(recs), path)
    ctx, cfg = _setup(tmp_path, inputs, arms=["vanilla", "instruct"], raw_corpus=f"hf:{tmp_path / 'refinedweb'}",
                      tuning_repeat=0, chunk_docs=16)
    tok = arm_data.load_tokenizer(ctx, "tiny")

    def cost(r):
        return len(tok(r["content"], add_special_tokens=False)["input_ids"]) + 2

    budget = cfg.steps * cfg.batch_tokens
    csum = np.cumsum([cost(r) for f in range(11) for r in rows[f]])
    subset = int(np.searchsorted(csum, budget)) + 1  # texts of the budget-sized prefix
    converted = rows[9][:subset // 5]  # 1/5 of the subset's texts, from a file beyond the prefix
    io.write_jsonl(ctx.work_of("02_synthesize") / "augmented.jsonl",
                   [{"id": r["id"], "member_ids": [r["id"]], "text": r["content"], "members": []} for r in converted])
    consumed = []
    real = record_sources.located_records  # every source reader goes through it
    monkeypatch.setattr(record_sources, "located_records",
                        lambda s, split="train", **kw: (consumed.append(s) or r for r in real(s, split, **kw)))
    data_ = arm_data.prepare_data(ctx, cfg)
    assert consumed
    v, i = data_["vanilla"].sources["raw"], data_["instruct"].sources["instruct_corpus"]
    assert v["records_read"] == v["cache_docs"] <= v["docs_used"] + cfg.chunk_docs < 12 * 40 // 2
    assert v["docs_used"] == subset  # exactly the budget's prefix
    assert not v["source_exhausted"] and data_["vanilla"].efficiency == 1.0
    assert i["augmented_docs"] == len(converted) and i["converted_skipped"] == 0
    assert i["records_read"] <= i["docs_used"] - len(converted) + cfg.chunk_docs
    share = data_["instruct"].augmented
    want = sum(cost(r) for r in converted) / budget
    assert abs(share["token_share"] - want) < 0.02 and abs(want - 0.2) < 0.02
    assert share["augmented_docs_read"] == len(converted) and abs(share["doc_share_of_corpus"] - 0.2) < 0.03
    summary = arm_data.data_summary(data_)
    assert summary.set_index("arm").loc["instruct", "augmented_share"] == round(share["token_share"], 3)
    # cached: a rerun reads nothing
    consumed.clear()
    again = arm_data.prepare_data(ctx, cfg)
    assert not consumed and again["instruct"].augmented == share


# ----------------------------------------------------------------------------- text is text

def _forged_inputs(d):
    """Every source of every arm spells the special-token strings of the three tokenizers."""
    from conftest import FORGED

    f = " ".join(FORGED)
    raw = [{"id": f"f{i}", "text": f"Doc {i} says {f} and again {f}."} for i in range(60)]
    coll = [{"context": f"Context {i} {f}", "QA_list": [{"Q": f"Q {f}?", "A": f"A {f}"}], "rc_name": "squad"}
            for i in range(10)]
    aug = [{"id": r["id"], "member_ids": [r["id"]], "text": "AUG " + r["text"],
            "members": [{"id": r["id"], "pairs": [[f"q {f}?", f"a {f}"]]}]} for r in raw[::4]]
    gen = [{"question": f"Q{i} {f}?", "response": f"R {f}"} for i in range(20)]
    return dict(raw_corpus=_jsonl(d / "raw.jsonl", raw), synth_collection=_jsonl(d / "coll.jsonl", coll),
                general_instructions=_jsonl(d / "gen.jsonl", gen)), aug


@pytest.mark.parametrize("kind", ["tiny", "sentencepiece", "llama3"])
def test_text_spelling_special_tokens_never_forges_a_control_id(tmp_path, inputs, tokenizer_kinds, kind):
    """Raw texts, tuning records, augmented documents, pairs and general instructions that spell
    <s>, </s>, <pad>, <|begin_of_text|>, ...: the packed rows of every arm hold exactly one BOS per
    document and one EOS per document that ends inside the budget (the old code had ~2 more each)."""
    sources, aug = _forged_inputs(tmp_path)
    tok_spec = "tiny" if kind == "tiny" else str(tokenizer_kinds[kind][0])
    arms = ["vanilla", "mix", "instruct", "pairs_only", "continual"]
    ctx, cfg = _setup(tmp_path, inputs, arms=arms, tokenizer=tok_spec, base_model="stage:03_pretrain/vanilla",
                      doc_mask=True, **sources)
    io.write_jsonl(ctx.work_of("02_synthesize") / "augmented.jsonl", aug)
    tok = arm_data.load_tokenizer(ctx, tok_spec)
    bos, eos, _ = arm_data.special_ids(tok)
    for arm in arms:
        data = arm_data.prepare_arm(ctx, cfg, arm)
        rows = np.asarray(data.rows())
        flat = rows.reshape(-1)
        assert data.efficiency == 1.0  # no padding: pad == bos on Mistral/Llama-3 kinds must not count
        b, e = np.flatnonzero(flat == bos), np.flatnonzero(flat == eos)
        # every EOS closes a document right before the next one's BOS (or ends the rows), nowhere else
        assert b[0] == 0 and e.tolist() == (b[1:] - 1).tolist() + ([len(flat) - 1] if flat[-1] == eos else [])
        # the plan's last documents may lie past the budget (one per budget: pool and ratio sources)
        assert data.n_docs - len(arm_data.arm_recipe(cfg, arm)["ratio"]) - 1 <= len(b) <= data.n_docs, (kind, arm)
        # doc_mask: positions restart only where packing put a document's <s> (and at row starts)
        restarts = int((packing.position_ids_for(rows, bos)[:, 1:] == 0).sum())
        assert restarts == int((rows[:, 1:] == bos).sum())


def test_hostile_documents_are_packed_or_skipped_and_counted(tmp_path, inputs):
    """Empty, whitespace-only, None, a 340k-character text, control characters, NUL bytes, CJK
    and emoji through stage 03: texts are packed byte-exact, the textless ones skipped and
    counted in the arm's metrics (sources_read); malformed tuning records and general rows are
    counted too; invalid UTF-8 or a row without a text field is refused with file and line."""
    from conftest import HOSTILE

    tok = assets.load_tokenizer(_setup(tmp_path / "t", inputs)[0], "tiny")
    normal = io.read_jsonl(inputs[0]["raw"])
    raw = [{"id": k, "text": t} for k, t in HOSTILE.items()] + [{"id": "none", "text": None}] + normal
    coll = [{"context": "", "QA_list": []}, {"context": "c", "QA_list": [{"Q": "  ", "A": "a"}]},
            {"context": 3, "QA_list": [{"Q": "q", "A": "a"}]},
            {"context": HOSTILE["nul"] + HOSTILE["cjk_emoji"], "QA_list": [{"Q": "q\x00?", "A": "😀"}]}] \
        + io.read_jsonl(inputs[0]["coll"])
    gen = [{"question": "", "response": "r"}, {"question": "q"}] + io.read_jsonl(inputs[0]["gen"])
    d = tmp_path / "in"
    d.mkdir()
    sources = dict(raw_corpus=_jsonl(d / "raw.jsonl", raw), synth_collection=_jsonl(d / "coll.jsonl", coll),
                   general_instructions=_jsonl(d / "gen.jsonl", gen))
    ctx, cfg = _setup(tmp_path, inputs, arms=["vanilla", "mix", "instruct", "continual"], train_tokens=2 * 512,
                      base_model="stage:03_pretrain/vanilla", **sources)
    aug = [{"id": "long", "member_ids": ["long"], "text": "AUG " + HOSTILE["long"], "members": []},
           {"id": "gone", "member_ids": ["gone"], "text": "  ", "members": []}]
    io.write_jsonl(ctx.work_of("02_synthesize") / "augmented.jsonl", aug)
    src = arm_data.source_texts(ctx, cfg)
    texts = list(src["raw"].texts())
    want = [t.strip() for t in HOSTILE.values() if t.strip()] + [r["text"] for r in normal]
    assert texts == want and src["raw"].info == {"records_read": len(raw), "texts_skipped_empty": 3}
    docs = packing.tokenize(tok, texts)
    assert [tok.decode(docs.doc(i)) for i in range(len(docs))] == want  # byte-exact round trip
    packed = packing.pack(docs, 64, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    assert (packed.input_ids == tok.bos_token_id).sum() == (packed.input_ids == tok.eos_token_id).sum() == len(docs)

    metrics = pretrain.train_arm(ctx, cfg, arm_data.prepare_arm(ctx, cfg, "vanilla"))
    assert metrics["sources_read"]["raw"]["texts_skipped_empty"] == 3
    mix = arm_data.prepare_arm(ctx, cfg, "mix").sources["tuning"]
    assert mix["records_malformed"] == 3 and mix["first_malformed"].endswith("coll.jsonl:1")
    assert mix["records_read"] == len(coll)
    inst = arm_data.prepare_arm(ctx, cfg, "instruct").sources["instruct_corpus"]
    assert inst["augmented_docs"] == 1 and inst["augmented_skipped_empty"] == 1 and inst["texts_skipped_empty"] >= 3
    general = arm_data.prepare_arm(ctx, cfg, "continual").sources["general"]
    assert general["records_skipped"] == 2

    bad = tmp_path / "raw.txt"
    bad.write_bytes(b"fine\n\nthird \xff line\n")
    ctx2, cfg2 = _setup(tmp_path / "b", inputs, arms=["vanilla"], raw_corpus=str(bad))
    with pytest.raises(ValueError, match=r"raw\.txt:3: invalid UTF-8"):
        arm_data.prepare_arm(ctx2, cfg2, "vanilla")
    ctx3, cfg3 = _setup(tmp_path / "c", inputs, arms=["vanilla"],
                        raw_corpus=_jsonl(tmp_path / "nofield.jsonl", [{"text": "ok"}, {"body": "x"}]))
    with pytest.raises(ValueError, match=r"nofield\.jsonl:2: no text field"):
        arm_data.prepare_arm(ctx3, cfg3, "vanilla")
