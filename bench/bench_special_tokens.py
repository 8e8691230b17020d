"""Count BOS/EOS ids in a tiny run's pre-training data over a corpus that spells special tokens.

    .venv/bin/python bench/bench_special_tokens.py                        # this checkout
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/bench_special_tokens.py   # another one

Every raw text, tuning-collection record and augmented document of the corpus mentions
literal special-token strings ("<s>", "</s>", "<pad>", "<unk>", "<|begin_of_text|>",
"<|end_of_text|>"), as web pages about tokenizers do. Stage 03's own data preparation
(`ipt_utils.arms.prepare_arm`) builds the packed rows of the vanilla, mix and instruct arms with
three tokenizers: the tiny one, a Mistral-kind (sentencepiece-style) and a Llama-3-kind
(byte-level) one from ipt_utils.model_mirror. Packing places one BOS and one EOS around every
document, so the rows must hold exactly `docs` BOS ids and `docs - cut` EOS ids (cut = 1 when
the budget ends inside the last document, i.e. the last slot is not its EOS); anything above
is a control token forged by the text. PYTHONPATH comes before this checkout on sys.path,
so the same script measures another checkout's code (`code` in the output says which).
Writes results/bench/special_tokens_<UTC time>.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # appended: a checkout on PYTHONPATH wins

import numpy as np  # noqa: E402

import ipt_utils  # noqa: E402
from ipt_utils import arms as arm_data, assets, model_mirror, pretrain  # noqa: E402
from ipt_utils.hardware import describe  # noqa: E402
from ipt_utils.schema import validate  # noqa: E402
from ipt_utils.registry import RunParams  # noqa: E402
from ipt_utils.stage import StageContext  # noqa: E402

FORGED = ("<s>", "</s>", "<pad>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>")
WORDS = "the cell protein market bank rate gene study token tokenizer page model data".split()
MODEL = dict(hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2, num_kv_heads=2,
             max_position_embeddings=256, vocab_size=0)


def _text(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 40))]
    for _ in range(rng.randint(1, 3)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(FORGED))
    return " ".join(words)


def write_corpus(d: Path, n: int, seed: int) -> dict:
    rng = random.Random(seed)
    raw = [{"id": f"r{i}", "text": _text(rng)} for i in range(n)]
    coll = [{"context": _text(rng), "QA_list": [{"Q": _text(rng) + "?", "A": _text(rng)}],
             "QA_type": "free-form", "rc_name": "squad"} for _ in range(n // 4)]
    aug = [{"id": r["id"], "member_ids": [r["id"]], "domain": "general", "chain_id": r["id"],
            "text": r["text"] + "\n\nQuestion: " + _text(rng) + "\nAnswer: " + _text(rng), "layout": "classic",
            "mode": "plain", "dropped_pairs": 0,
            "members": [{"id": r["id"], "raw_text": r["text"], "mode": "plain", "inherited": False,
                         "dropped_pairs": 0, "pairs": [[_text(rng), _text(rng)]]}]} for r in raw[::3]]
    files = {}
    for name, rows in (("raw", raw), ("coll", coll), ("aug", aug)):
        files[name] = d / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return files


def count(tok_spec: str, files: dict, work: Path, arms: list[str], train_tokens: int) -> dict:
    run = RunParams(seed=0, work_dir="", device="cpu", offline=True, dtype="auto")
    ctx = StageContext(profile="bench", stage="03_pretrain", run_dir=work / "run", work_root=work / "work",
                       run=run, interactive=False)
    shutil.copy(files["aug"], ctx.work_of("02_synthesize") / "augmented.jsonl")
    section = dict(arms=arms, raw_corpus=str(files["raw"]), synth_collection=str(files["coll"]),
                   general_instructions=str(files["raw"]), tuning_repeat=2, general_ratio=0.0, init="scratch",
                   base_model="tiny", model=MODEL, tokenizer=tok_spec, seq_len=128, train_tokens=train_tokens,
                   batch_tokens=1024, micro_batch_size=4, learning_rate=1e-3, min_lr_ratio=0.1, warmup_ratio=0.0,
                   weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.95, grad_clip=1.0, save_steps=100, log_steps=1,
                   gradient_checkpointing=False, num_proc=1, accelerate_config="", arm_variants={},
                   chunk_docs=256, doc_mask=True, attn_implementation="sdpa", compile=False)
    cfg = validate(pretrain.Params, section, prefix="pretrain")
    tok = arm_data.load_tokenizer(ctx, cfg.tokenizer)
    bos, eos, _ = arm_data.special_ids(tok)
    out = {}
    for arm in arms:
        data = arm_data.prepare_arm(ctx, cfg, arm)
        rows = np.asarray(data.rows()).reshape(-1)
        cut = int(rows[-1] != eos)  # the budget ended inside the last document (no pad: the plan fills every slot)
        n_bos, n_eos = int((rows == bos).sum()), int((rows == eos).sum())
        out[arm] = {"docs": data.n_docs, "bos": n_bos, "eos": n_eos, "expected_bos": data.n_docs,
                    "expected_eos": data.n_docs - cut, "forged_bos": n_bos - data.n_docs,
                    "forged_eos": n_eos - (data.n_docs - cut), "tokens": int(rows.size)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=400)
    ap.add_argument("--train-tokens", type=int, default=16 * 1024)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = write_corpus(tmp, args.texts, seed=0)
        specs = {"tiny": "tiny"}
        for kind in ("sentencepiece", "llama3"):  # Mistral-7B and Llama-3-8B tokenizer kinds
            d = tmp / f"tok-{kind}"
            d.mkdir()
            model_mirror.TOKENIZER_KINDS[kind](d)
            specs[kind] = str(d)
        result = {name: count(spec, files, tmp / name, ["vanilla", "mix", "instruct"], args.train_tokens)
                  for name, spec in specs.items()}
    report = {"code": str(Path(ipt_utils.__file__).resolve().parent.parent), "texts": args.texts,
              "train_tokens": args.train_tokens, "forged_strings": list(FORGED), "counts": result,
              "hardware": describe(), "utc": dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")}
    for name, arms in result.items():
        for arm, c in arms.items():
            print(f"{name:13s} {arm:9s} docs {c['docs']:4d}  BOS {c['bos']:4d} (expected {c['expected_bos']:4d})"
                  f"  EOS {c['eos']:4d} (expected {c['expected_eos']:4d})")
    out = Path(args.out) / f"special_tokens_{report['utc']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"code: {report['code']}\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
