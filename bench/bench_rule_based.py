"""Benchmark rule-based synthesis throughput (texts/s on one core) over the fixture corpus.

    .venv/bin/python bench/bench_rule_based.py                 # ipt_utils/fixtures/raw_corpus.jsonl
    .venv/bin/python bench/bench_rule_based.py --corpus my.jsonl --min-seconds 10

Three measurements, each repeated over the corpus until `--min-seconds` have passed, in
this one process (pure Python: one core):
  mine       ipt_utils.rule_based.mine per text (the rules alone)
  templify   mine + templify of the text as a one-text chain (what a row of augmented.jsonl costs)
  stage02    the stage-02 driver with `backend: rule_based` (prompt building, multi-round chaining
             with `--rounds`, parsing, templify) on the whole corpus, in memory
Writes results/bench/rule_based_cpu_<UTC time>.json with hardware info.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ipt_utils import augmented, generation, multiround, rule_based, synthesize, templify  # noqa: E402
from ipt_utils.hardware import describe  # noqa: E402


def hardware() -> dict:
    return {**describe(with_torch=False), "processes": 1}


def timed(fn, n_items: int, min_seconds: float) -> dict:
    fn()  # warm-up (imports, regex compilation)
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        el = time.perf_counter() - t0
        if el >= min_seconds:
            break
    return {"texts": n_items * reps, "seconds": round(el, 3), "texts_per_s": round(n_items * reps / el, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="ipt_utils/fixtures/raw_corpus.jsonl")
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench"))
    args = ap.parse_args(argv)

    cfg = synthesize.Params(model="stage:01_synth_tune", corpus=args.corpus, split="train", text_column="text",
                            domain="general", max_texts=0, num_shards=1, shard_index=0, shard_by="records", rounds=args.rounds,
                            max_new_tokens=400, max_model_len=4096, backend="rule_based", batch_size=256,
                            tensor_parallel_size=1, gpu_memory_utilization=0.9, enable_prefix_caching=False,
                            variants=[])
    texts, _ = synthesize.load_texts(cfg)
    words = sum(len(t.text.split()) for t in texts)

    def mine():
        for t in texts:
            rule_based.mine(t.text, args.seed)

    def mine_templify():
        for t in texts:
            templify.templify_chain([templify.Member(t.id, t.text, rule_based.mine(t.text, args.seed))],
                                    args.seed)

    tok = rule_based.RuleTokenizer()

    def stage02():
        engine = generation.Engine(lambda: rule_based.RuleEngine(tok, args.seed), "rule_based", cfg.batch_size)
        synths = multiround.synthesize_texts(texts, cfg.rounds, tok, cfg.budget, engine)
        augmented.build_rows(synths, args.seed)

    results = {name: timed(fn, len(texts), args.min_seconds)
               for name, fn in (("mine", mine), ("templify", mine_templify), ("stage02", stage02))}
    pairs = sum(len(rule_based.mine(t.text, args.seed)) for t in texts)
    per_rule: dict[str, int] = {}
    for t in texts:
        for rule, _ in rule_based.mine_tagged(t.text, args.seed):
            per_rule[rule] = per_rule.get(rule, 0) + 1
    for r in results.values():
        r["words_per_s"] = round(r["texts_per_s"] * words / len(texts))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    report = {"bench": "rule_based", "utc": stamp, "corpus": args.corpus, "texts": len(texts),
              "mean_words_per_text": round(words / len(texts), 1), "pairs_per_text": round(pairs / len(texts), 2),
              "pairs_per_rule": per_rule, "rounds": args.rounds, "rules_version": rule_based.version(),
              "results": results, "argv": sys.argv[1:], "hardware": hardware()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"rule_based_cpu_{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    for name, r in results.items():
        print(f"{name:9s} {r['texts_per_s']:>9.1f} texts/s  ({r['words_per_s']} words/s, {r['texts']} texts "
              f"in {r['seconds']} s)")
    print(f"pairs/text {report['pairs_per_text']}  -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
