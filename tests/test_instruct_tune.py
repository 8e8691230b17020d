"""Stage 04: response-only loss mask, batching, MMLU-style scoring and the tuning curve."""
import json
import random

import numpy as np
import pytest

from ipt_utils import assets, contracts, instruct_tune, instructions, io, packing
from ipt_utils.instructions import SEP
from ipt_utils.packing import IGNORE
from ipt_utils.schema import validate
from ipt_utils.registry import RunParams
from ipt_utils.stage import StageContext

TINY = dict(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=2,
            max_position_embeddings=512, vocab_size=0)
WORDS = "what is the rate of gene cell market price answer river city water light growth".split()


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("it")
    rng = random.Random(0)

    def para(n):
        return " ".join(rng.choice(WORDS) for _ in range(n))

    ins = [{"id": f"i{i}", "task": "qa", "instruction": para(8) + "?", "response": para(5)} for i in range(40)]
    mmlu = [{"question": para(6) + "?", "subject": ["high_school_biology", "econometrics"][i % 2],
             "choices": [para(2) for _ in range(4)], "answer": rng.randrange(4)} for i in range(12)]
    files = {"ins": _jsonl(d / "ins.jsonl", ins), "mmlu": _jsonl(d / "eval" / "mmlu.jsonl", mmlu)}
    tok = assets.build_tiny_tokenizer(d / "tok", vocab_size=400, files=[files["ins"], files["mmlu"]])
    return files, tok, mmlu


def test_mask_is_response_only_token_by_token(env):
    _, tok, _ = env
    ids, labels = instructions.encode_example(tok, "What is the rate?", "The rate is high.", max_len=256)
    prompt = tok("What is the rate?" + SEP, add_special_tokens=False)["input_ids"]
    resp = tok("The rate is high.", add_special_tokens=False)["input_ids"]
    assert ids == [tok.bos_token_id] + prompt + resp + [tok.eos_token_id]
    assert len(labels) == len(ids)
    for i, (t, lab) in enumerate(zip(ids, labels)):
        if i <= len(prompt):  # <s> and every prompt token
            assert lab == IGNORE, (i, tok.decode([t]))
        else:  # every response token and the closing </s>
            assert lab == t, (i, tok.decode([t]))
    assert tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE]) == "The rate is high.</s>"


def test_truncation_keeps_the_response(env):
    _, tok, _ = env
    ids, labels = instructions.encode_example(tok, "what is " * 200, "the answer", max_len=40)
    assert len(ids) == len(labels) == 40 and ids[0] == tok.bos_token_id
    assert tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE]) == "the answer</s>"


def test_collate_pads_with_ignored_labels():
    batch = packing.right_pad([([1, 5, 6], [IGNORE, 5, 6]), ([1, 7], [IGNORE, 7])], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 5, 6], [1, 7, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 5, 6], [IGNORE, 7, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


def test_example_order_is_seeded_epochs():
    first = np.concatenate([instructions.example_order(10, s, 4, seed=0) for s in range(5)])
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:20].tolist()) == list(range(10))
    assert instructions.example_order(10, 3, 4, seed=0).tolist() == first[12:16].tolist()
    assert instructions.example_order(10, 0, 4, seed=1).tolist() != first[:4].tolist()


def test_mmlu_prompts_zero_and_few_shot(env):
    _, _, rows = env
    zero = instruct_tune.mmlu_requests(rows, 0)
    ctx, conts, gold = zero[0]
    subject = rows[0]["subject"].replace("_", " ")
    assert ctx.startswith(f"The following are multiple choice questions (with answers) about {subject}.\n\n")
    assert ctx.endswith("D. " + rows[0]["choices"][3] + "\nAnswer:") and conts == [" A", " B", " C", " D"]
    assert gold == rows[0]["answer"]
    two = instruct_tune.mmlu_requests(rows, 2)
    for i, (ctx, _, _) in enumerate(two):
        assert ctx.count("Answer:") == 3 and ctx.count(rows[i]["question"]) == 1  # never its own shot
        same = [r for r in rows if r["subject"] == rows[i]["subject"] and r is not rows[i]]
        assert same[0]["question"] in ctx
    ctx, conts, gold = instruct_tune.mmlu_requests(rows, 1, "choice")[0]
    assert conts == [" " + c for c in rows[0]["choices"]] and ctx.endswith(f"Question: {rows[0]['question']}\nAnswer:")
    assert "A. " not in ctx and ctx.count("Answer:") == 2


def test_continuation_scores_match_unbatched_reference(env, tmp_path):
    import torch

    _, tok, rows = env
    model = assets.build_tiny_model(tmp_path / "m", assets.ModelShape(**TINY), tok, seed=1).eval()
    reqs = instruct_tune.mmlu_requests(rows[:5], 1)
    reqs.append(("the river is", [" very wide water", " growth"], 0))  # multi-token path
    got = instruct_tune.continuation_logprobs(model, tok, reqs, batch_size=3, max_len=512)
    for (ctx, conts, _), scores in zip(reqs, got):
        for cont, score in zip(conts, scores):
            c_ids = tok(cont, add_special_tokens=False)["input_ids"]
            ids = [tok.bos_token_id] + tok(ctx, add_special_tokens=False)["input_ids"] + c_ids
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
            ref = sum(float(logp[len(ids) - len(c_ids) - 1 + j, t]) for j, t in enumerate(c_ids))
            assert score == pytest.approx(ref, abs=1e-4)
    for fmt in ("letter", "choice"):
        acc = instruct_tune.evaluate_mmlu(model, tok, rows, [0, 1], batch_size=8, max_len=512, fmt=fmt)
        assert set(acc) == {"mmlu_0shot", "mmlu_1shot"} and all(0 <= a <= 1 and n == 12 for a, n in acc.values())
    items: dict = {}
    cloze_rows = [{**r, "context": r["question"].split("?")[0]} if i % 2 else r for i, r in enumerate(rows)]
    acc = instruct_tune.evaluate_mmlu(model, tok, cloze_rows, [0], 8, 512, "choice", items)
    assert set(acc) == set(items) == {"mmlu_0shot", "cloze"} and acc["cloze"][1] == 6 == len(items["cloze"])
    assert all(acc[t][0] == pytest.approx(sum(v) / len(v)) and set(v) <= {0, 1} for t, v in items.items())
    reqs = instruct_tune.cloze_requests(cloze_rows)
    got = instruct_tune.continuation_logprobs(model, tok, reqs, 8, 512)
    by_byte = [[s / len(c.encode()) for s, c in zip(sc, conts)] for sc, (_, conts, _) in zip(got, reqs)]
    assert items["cloze"] == [int(max(range(4), key=b.__getitem__) == g) for b, (_, _, g) in zip(by_byte, reqs)]
    assert instruct_tune.item_ids(cloze_rows, "cloze") == [str(i) for i in range(1, 12, 2)]


def _tune_setup(env, tmp_path, arms=("vanilla", "instruct"), **over):
    files, tok, _ = env
    run = RunParams(seed=0, work_dir="", device="cpu", offline=True, dtype="auto")
    ctx = StageContext(profile="t", stage="04_instruct_tune", run_dir=tmp_path / "run",
                       work_root=tmp_path / "work", run=run, interactive=False)
    for arm in arms:
        assets.build_tiny_model(ctx.work_root / "03_pretrain" / arm / "model", assets.ModelShape(**TINY), tok,
                                seed=2)
    section = dict(
        arms=list(arms), data=files["ins"], eval_data=files["mmlu"], eval_shots=[0, 1], eval_format="choice",
        eval_limit=10, eval_every=3, eval_batch_size=16, max_steps=7, max_len=64, batch_size=8, micro_batch_size=4,
        learning_rate=3e-3, min_lr_ratio=0.1, warmup_ratio=0.1, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,
        grad_clip=1.0, save_steps=4, accelerate_config="")
    section.update(over)
    return ctx, validate(instruct_tune.Params, section)


def test_tune_arms_writes_curve_loss_and_model(env, tmp_path, stop_after):
    import pandas as pd

    ctx, cfg = _tune_setup(env, tmp_path)
    with stop_after(5):  # interrupted; resumes from step 4
        part = instruct_tune.tune_arm(ctx, cfg, "vanilla")
    assert part["metrics"]["completed"] is False
    metrics = instruct_tune.tune_arms(ctx, cfg)
    contracts.check_metrics("04_instruct_tune", metrics)  # the metrics.json finish_stage writes
    curve = pd.read_csv(ctx.stage_dir / "curve.csv")
    assert list(curve.columns) == ["arm", "step", "task", "accuracy"]
    for arm in ("vanilla", "instruct"):
        c = curve[curve["arm"] == arm]
        assert sorted(set(c["step"])) == [0, 3, 6, 7] and set(c["task"]) == {"mmlu_0shot", "mmlu_1shot"}
        assert len(c) == 8  # no duplicated evaluation after the resume
        loss = pd.read_csv(ctx.stage_dir / f"loss_{arm}.csv")
        assert loss["step"].tolist() == list(range(1, 8)) and loss["loss"].iloc[-1] < loss["loss"].iloc[0]
        assert (ctx.work / arm / "model" / "model.safetensors").exists()
        m = metrics["arms"][arm]
        assert m["steps"] == 7 and set(m["accuracy"]) == {"mmlu_0shot", "mmlu_1shot"} and m["accuracy_step0"]
    assert instruct_tune.plot_curve(ctx) is not None and (ctx.stage_dir / "curve.png").exists()
    items = pd.read_csv(ctx.stage_dir / "eval_items.csv")
    assert list(items.columns) == ["arm", "step", "task", "item", "correct"]
    per_eval = items.groupby(["arm", "step", "task"])["correct"].agg(["mean", "size"]).reset_index()
    joined = per_eval.merge(curve, on=["arm", "step", "task"])
    assert len(joined) == len(curve) and (joined["size"] == 10).all()
    assert joined["mean"].to_numpy() == pytest.approx(joined["accuracy"].to_numpy(), abs=1e-6)


def test_accelerate_launch_on_cpu(env, tmp_path):
    """The multi-GPU path (accelerate launch -m ipt_utils.instruct_tune) with a one-process CPU
    config: same curve and model files; the launched run's metrics come back."""
    import pandas as pd

    cfg_file = tmp_path / "cpu.yaml"
    cfg_file.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nnum_processes: 1\n"
                        "num_machines: 1\nmachine_rank: 0\nmixed_precision: 'no'\nuse_cpu: true\n")
    ctx, cfg = _tune_setup(env, tmp_path, arms=("vanilla",), accelerate_config=str(cfg_file), max_steps=3)
    metrics = instruct_tune.tune_arms(ctx, cfg)
    assert metrics["arms"]["vanilla"]["steps"] == 3 and (ctx.work / "launch.json").exists()
    assert (ctx.work / "vanilla" / "model" / "model.safetensors").exists()
    assert sorted(set(pd.read_csv(ctx.stage_dir / "curve.csv")["step"])) == [0, 3]
    # the launch mode does not change what an arm learns: in-process reuses the finished arm
    again = instruct_tune.tune_arm(ctx, validate(instruct_tune.Params, {**vars(cfg), "accelerate_config": ""}),
                                   "vanilla")
    assert again["metrics"] == metrics["arms"]["vanilla"]


def _parquet_dir(root, n_files, rows_per_file, make_row, poison_last=True):
    """A local dataset dir of parquet files (read through the hf: path, like a hub dataset);
    the last file is not parquet at all: opening it fails, so a reader that gets there errs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = root / "data"
    data.mkdir(parents=True)
    for f in range(n_files):
        path = data / f"train-{f:05d}-of-{n_files:05d}.parquet"
        if poison_last and f == n_files - 1:
            path.write_bytes(b"not a parquet file: a reader that opens this read too much")
            continue
        pq.write_table(pa.Table.from_pylist([make_row(f, r) for r in range(rows_per_file)]), path)
    return f"hf:{root}"


def test_training_instructions_stream_only_the_steps_budget_and_are_reused(env, tmp_path, monkeypatch):
    """FLAN-style hub data (inputs/targets) in 10 parquet files, the last one unreadable: the run
    takes max_steps * batch_size = 5 * 8 = 40 rows, reads exactly 40 records (< 1 file of 50),
    writes them once to the work dir and a second run reuses that file without reading the data."""
    from ipt_utils import sources

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    src = _parquet_dir(tmp_path / "flan", 10, 50,
                       lambda f, r: {"inputs": f"question {f}-{r}?", "targets": f"answer {f}-{r}",
                                     "_task_name": "t"})
    ctx, cfg = _tune_setup(env, tmp_path, arms=("vanilla",), data=src, max_steps=5, batch_size=8)
    consumed = []
    real = sources.records

    def counting(source, split="train", **kw):
        for r in real(source, split, **kw):
            consumed.append(r)
            yield r

    monkeypatch.setattr(sources, "records", counting)
    rows, stats = instructions.training_instructions(ctx, cfg)
    assert len(rows) == 40 and len(consumed) == 40 and stats["records_read"] == 40 and stats["rows"] == 40
    assert rows[0] == {"instruction": "question 0-0?", "response": "answer 0-0", "task": "t"}
    path = instructions.instructions_file(ctx, cfg)
    assert path.parent == ctx.work / "data" and path.exists() and not list(path.parent.glob(".*.tmp"))

    def unreadable(*a, **k):
        raise AssertionError("the prepared instruction file was not reused")

    monkeypatch.setattr(sources, "records", unreadable)
    again, stats2 = instructions.training_instructions(ctx, cfg)
    assert again == rows and stats2 == stats
    # a larger step budget is another file (and would read further)
    assert instructions.instructions_file(ctx, validate(instruct_tune.Params, {**vars(cfg), "max_steps": 6})) != path


def test_instruction_fields_of_flan_and_openorca():
    of = instructions.instruction_of
    assert of({"inputs": "Q?", "targets": "A"}) == {"instruction": "Q?", "response": "A", "task": ""}
    assert of({"id": "x", "system_prompt": "Be brief.", "question": "Q?", "response": "A"}) == \
        {"instruction": "Be brief." + SEP + "Q?", "response": "A", "task": ""}
    assert of({"system_prompt": "", "question": "Q?", "response": "A"})["instruction"] == "Q?"
    assert of({"instruction": "I", "response": " "}) is None and of({"text": "x"}) is None


@pytest.mark.parametrize("kind", ["tiny", "sentencepiece", "llama3"])
def test_instructions_spelling_special_tokens_get_one_bos_and_one_eos(tokenizer_kinds, kind):
    """An instruction or response that spells <s>, </s>, <pad>, <|begin_of_text|>, ... is text:
    exactly the BOS and EOS that encode_examples places, and the texts decode back."""
    from conftest import FORGED, HOSTILE

    tok = tokenizer_kinds[kind][1]
    f = " ".join(FORGED)
    rows = [{"instruction": f"Explain {f} please", "response": f"They are {f}."},
            {"instruction": HOSTILE["nul"] + HOSTILE["control"], "response": HOSTILE["cjk_emoji"]},
            {"instruction": HOSTILE["long"], "response": "short"}]
    encoded, stats = instructions.encode_examples(tok, rows, max_len=4096)
    assert stats == {"examples_truncated": 1}
    for (ids, labels), r in zip(encoded, rows):
        assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
        assert ids.count(tok.eos_token_id) == 1 and ids[-1] == tok.eos_token_id and len(ids) <= 4096
        assert tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE][:-1]) == r["response"]
    ids, labels = encoded[0]
    assert tok.decode([t for t, lab in zip(ids, labels) if lab == IGNORE][1:]) == rows[0]["instruction"] + SEP


def test_hostile_instruction_records_are_skipped_and_counted(env, tmp_path):
    """Empty, whitespace-only and non-string instructions/responses are skipped and counted in
    the arm's metrics; a 340k-character one is truncated and counted; NUL, control characters,
    CJK and emoji train; invalid UTF-8 is refused naming file and line."""
    from conftest import HOSTILE

    files, _, _ = env
    rows = [{"instruction": HOSTILE["empty"], "response": "r"}, {"instruction": "q", "response": HOSTILE["whitespace"]},
            {"instruction": None, "response": "r"}, {"instruction": "q", "response": 7},
            {"instruction": HOSTILE["long"], "response": "a long one"},
            {"instruction": HOSTILE["nul"], "response": HOSTILE["control"]},
            {"instruction": HOSTILE["cjk_emoji"], "response": HOSTILE["forged"]}] + io.read_jsonl(files["ins"])
    data = _jsonl(tmp_path / "hostile.jsonl", rows)
    ctx, cfg = _tune_setup(env, tmp_path, arms=("vanilla",), data=data, max_steps=2, batch_size=8, eval_limit=2,
                           eval_every=2)
    m = instruct_tune.tune_arms(ctx, cfg)["arms"]["vanilla"]
    assert m["instruction_records_skipped"] == 4 and m["instruction_rows"] == 16 and m["completed"]
    assert m["instruction_records_read"] == 20 and m["examples_truncated"] >= 1
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"instruction": "q", "response": "a"}\n{"instruction": "\xff", "response": "a"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: invalid UTF-8"):
        instructions.load_instructions(str(bad))
