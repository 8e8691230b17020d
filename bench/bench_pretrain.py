"""Benchmark pre-training throughput (tokens/s, MFU) and CPU tokenization + packing.

    .venv/bin/python bench/bench_pretrain.py                   # both parts, tiny model on CPU
    .venv/bin/python bench/bench_pretrain.py --part packing    # CPU data path only
    python bench/bench_pretrain.py --part train --shape 500m   # GPU: the paper-500m ModelShape

Training runs the real loop (ipt_utils.training.train_loop: AdamW, clipping, accumulation,
bf16 autocast on GPU) on random token rows; tokens/s is measured after `--warmup` steps,
MFU follows the PaLM formula in ipt_utils.flops (null on CPU). The packing part
stream-tokenizes a corpus to an on-disk cache (ipt_utils.packing.tokenize_to_disk, with 1
and N processes, chunk_docs texts at a time) and packs it chunk by chunk into a memory-mapped
.npy of seq_len rows (pack_to_npy, checked equal to the in-memory pack); it reports tokens/s of each step and
packing efficiency, next to the efficiency of one-document-per-row padding for contrast.
Writes results/bench/pretrain_<part>_<device>_<UTC time>.json with hardware info.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ipt_utils import assets, flops, packing, pretrain, training  # noqa: E402
from ipt_utils.hardware import describe  # noqa: E402

TINY = dict(hidden_size=64, intermediate_size=256, num_layers=2, num_heads=2, num_kv_heads=2,
            max_position_embeddings=512, vocab_size=0)


def hardware() -> dict:
    return describe()


def profile_shape(name: str) -> tuple[assets.ModelShape, int, str]:
    """(shape, seq_len, tokenizer spec) of a profile's pretrain section, or the tiny shape."""
    if name == "tiny":
        return assets.ModelShape(**TINY), 256, "tiny"
    import yaml

    profile = {"500m": "paper-500m", "1.3b": "paper-1.3b"}.get(name, name)
    sec = yaml.safe_load((ROOT / "params" / f"{profile}.yaml").read_text())["pretrain"]
    return assets.ModelShape(**sec["model"]), sec["seq_len"], sec["tokenizer"]


# --------------------------------------------------------------------------- packing

def corpus_texts(n_docs: int) -> tuple[list[str], str]:
    fixture = assets.FIXTURES / "raw_corpus.jsonl"
    if fixture.exists():
        from ipt_utils import io

        base = [r["text"] for r in io.iter_jsonl(fixture)]
        source = str(fixture.relative_to(ROOT))
    else:  # synthetic English-like text
        import random

        rng = random.Random(0)
        words = ("the of and to in is that for it as was with be by on not he this are or his from at which "
                 "protein cell market price growth study result model data river city water energy rate bank").split()
        base = [" ".join(rng.choice(words) for _ in range(rng.randint(30, 400))) + "." for _ in range(500)]
        source = "synthetic"
    return [base[i % len(base)] + f" ({i})" for i in range(n_docs)], source


def bench_packing(n_docs: int, seq_len: int, num_proc: int, chunk_docs: int = 5000) -> dict:
    import numpy as np

    texts, source = corpus_texts(n_docs)
    with tempfile.TemporaryDirectory() as tmp:
        files = [str(assets.FIXTURES / f) for f in assets.TOKENIZER_CORPUS if (assets.FIXTURES / f).exists()]
        if not files:
            Path(tmp, "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:500]))
            files = [str(Path(tmp, "c.jsonl"))]
        tok = assets.build_tiny_tokenizer(Path(tmp) / "tok", files=files)
    out = {"corpus": source, "docs": n_docs, "chars": sum(map(len, texts)), "seq_len": seq_len,
           "tokenizer": f"tiny byte-level BPE ({len(tok)} tokens)"}
    runs = {}
    tmpdir = tempfile.TemporaryDirectory()
    for procs in sorted({1, num_proc}):  # streamed to an on-disk cache, chunk_docs texts at a time
        t = time.perf_counter()
        docs = packing.tokenize_to_disk(tok, iter(texts), Path(tmpdir.name) / f"tok{procs}", batch_size=500,
                                        num_proc=procs, chunk_docs=chunk_docs)
        runs[procs] = time.perf_counter() - t
    n_tok = int(docs.offsets[-1])
    out["tokens"] = n_tok
    out["chunk_docs"] = chunk_docs
    out["tokenize_tokens_per_s"] = {str(p): round(n_tok / s) for p, s in runs.items()}
    t = time.perf_counter()
    idx = packing.fill_budget(docs.lengths, n_tok, np.random.default_rng(0))
    src = np.zeros(len(idx), dtype=np.int16)
    t_mix = time.perf_counter() - t
    n_rows = -(-int((docs.lengths[idx] + 2).sum()) // seq_len)  # all of the chosen stream
    t = time.perf_counter()  # streamed packing into a memory-mapped .npy (what stage 03 does)
    packed = packing.pack_to_npy(Path(tmpdir.name) / "rows.npy", [docs], src, idx, seq_len, tok.bos_token_id,
                                 tok.eos_token_id, tok.pad_token_id, n_rows=n_rows, chunk_docs=chunk_docs)
    labels = packing.labels_for(np.asarray(packed.input_ids), tok.bos_token_id, tok.pad_token_id)
    t_pack = time.perf_counter() - t
    t = time.perf_counter()
    mem = packing.pack(docs.take(idx), seq_len, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    t_mem = time.perf_counter() - t
    assert np.array_equal(mem.input_ids, packed.input_ids)
    out["mix_tokens_per_s"] = round(n_tok / t_mix)
    out["pack_tokens_per_s"] = round(packed.n_real / t_pack)
    out["pack_in_memory_tokens_per_s"] = round(mem.n_real / t_mem)
    out["packing_efficiency"] = packed.efficiency
    out["rows"] = int(packed.input_ids.shape[0])
    out["trained_label_fraction"] = float((labels != packing.IGNORE).mean())
    # contrast: one document per row, padded (truncating documents longer than seq_len)
    per_row = np.minimum(docs.lengths + 2, seq_len)
    out["one_doc_per_row_padding_efficiency"] = float(per_row.sum() / (len(per_row) * seq_len))
    del packed, labels, docs
    tmpdir.cleanup()
    return out


# --------------------------------------------------------------------------- training

def bench_train(shape_name: str, steps: int, warmup: int, micro_batch: int, accum: int, device: str,
                compile: bool = False, attn: str = "sdpa") -> dict:
    import numpy as np
    import torch
    from accelerate import Accelerator
    from transformers import MistralConfig, MistralForCausalLM

    shape, seq_len, tok_spec = profile_shape(shape_name)
    vocab = shape.vocab_size or (32000 if tok_spec != "tiny" else assets.TINY_VOCAB_SIZE + 9)
    cfg = MistralConfig(vocab_size=vocab, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
                        num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
                        num_key_value_heads=shape.num_kv_heads, head_dim=shape.head_dim,
                        max_position_embeddings=max(shape.max_position_embeddings, seq_len), sliding_window=None,
                        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    model = MistralForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    acc = Accelerator(mixed_precision="bf16" if device == "cuda" else "no", cpu=device == "cpu",
                      dynamo_backend="inductor" if compile else "no")
    rng = np.random.default_rng(0)
    total = steps + warmup
    batch_seqs = micro_batch * accum
    rows = rng.integers(3, vocab, size=(total * batch_seqs, seq_len), dtype=np.int64)
    rows[:, 0] = 1
    batches = pretrain.pretrain_batches(rows, batch_seqs, micro_batch, bos=1, pad=0)
    stamps = []
    opt = training.OptimConfig(learning_rate=1e-4, total_steps=total, warmup_steps=1)

    def on_log(row):
        if device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        res, model, acc = training.train_loop(model, batches, opt, ckpt_dir=Path(tmp), save_steps=10 ** 9,
                                              log_steps=1, tokens_per_step=batch_seqs * seq_len,
                                              accelerator=acc, on_log=on_log)
    measured = stamps[-1] - stamps[warmup - 1]
    tps = steps * batch_seqs * seq_len / measured
    name = torch.cuda.get_device_name(0) if device == "cuda" else None
    return {"shape": shape_name, "model": {**shape.__dict__, "vocab_size": vocab}, "params": n_params,
            "matmul_params": flops.matmul_params(shape, vocab), "seq_len": seq_len,
            "micro_batch": micro_batch, "grad_accum": accum, "steps_measured": steps, "warmup_steps": warmup,
            "precision": "bf16 autocast, fp32 master weights" if device == "cuda" else "fp32",
            "attn_implementation": attn, "compile": compile,
            "tokens_per_s": round(tps, 1),
            "flops_per_token": flops.flops_per_token(shape, vocab, seq_len),
            "mfu": flops.mfu(tps, shape, vocab, seq_len, name),
            "peak_bf16_flops": flops.peak_flops(name), "final_loss": res.log[-1]["loss"],
            "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if device == "cuda" else None}


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("all", "packing", "train"), default="all")
    ap.add_argument("--shape", default=None, help="tiny | 500m | 1.3b | a profile name (default: 500m on GPU, else tiny)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--micro-batch", type=int, default=None)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--docs", type=int, default=20000, help="documents in the packing benchmark")
    ap.add_argument("--seq-len", type=int, default=2048, help="packing benchmark row length")
    ap.add_argument("--num-proc", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--chunk-docs", type=int, default=5000, help="documents per streamed tokenize/pack chunk")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa | flash_attention_2 | eager")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench"))
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = args.shape or ("500m" if device == "cuda" else "tiny")
    result = {"benchmark": "pretrain", "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "argv": sys.argv[1:], "hardware": hardware()}
    if args.part in ("all", "packing"):
        result["packing"] = bench_packing(args.docs, args.seq_len, args.num_proc, args.chunk_docs)
        print(json.dumps(result["packing"], indent=1))
    if args.part in ("all", "train"):
        steps = args.steps or (20 if device == "cuda" else 30)
        micro = args.micro_batch or (8 if device == "cuda" else 8)
        result["train"] = bench_train(shape, steps, args.warmup, micro, args.accum, device,
                                      compile=args.compile, attn=args.attn)
        print(json.dumps(result["train"], indent=1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"pretrain_{args.part}_{device}_{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
