"""Benchmark templify (pairs -> pre-training documents): texts/s on one core, paper-sized chains.

    .venv/bin/python bench/bench_templify.py                    # M=2 and M=3, 5 s each
    .venv/bin/python bench/bench_templify.py --min-seconds 20 --chains 1000

Synthetic chains shaped like the paper's data: ~2.3k-character texts, 5 pairs per text
(plain, options, CoT, options+CoT mixed, ~30-word instructions and responses, a few
malformed), M texts per chain (M=2: general pre-training, M=3: domain), ~5% of texts
without pairs (they cut the chain). `ipt_utils.templify.templify_chain` runs over them in
this one process until `--min-seconds` have passed. Besides speed, the shares of the
documents produced (layouts, option-less, pattern shapes, dropped pairs) are recorded.
Writes results/bench/templify_cpu_<UTC time>.json with hardware info.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ipt_utils import templify as tp  # noqa: E402
from ipt_utils.hardware import describe  # noqa: E402

WORDS = ("cell price gene market rate study patient growth bank model result tissue asset loan protein "
         "interest dose trial yield risk enzyme credit therapy bond signal").split()


def paper_chains(m: int, n_chains: int, seed: int = 0) -> list[list[tp.Member]]:
    rng = random.Random(f"{seed}:{m}")

    def sent(k):
        return " ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + "."

    def pair(j):
        q, a = sent(14)[:-1] + "?", sent(16)
        kind = rng.choices(["plain", "options", "cot", "options+cot", "bad"], [55, 15, 15, 12, 3])[0]
        if kind in ("options", "options+cot"):
            opts = [sent(3) for _ in range(4)]
            q, a = q + "\nOptions:\n" + "\n".join(f"- {o}" for o in opts), opts[2]
        if kind in ("cot", "options+cot"):
            return q + "\nLet's think step by step.", sent(16) + "\nTherefore, the answer is " + a
        if kind == "bad":
            return q + "\nLet's think step by step.", sent(16)
        return q, a

    chains = []
    for c in range(n_chains):
        members = []
        for j in range(m):
            pairs = [] if rng.random() < 0.05 else [pair(k) for k in range(5)]
            members.append(tp.Member(f"{c}.{j}", " ".join(sent(18) for _ in range(20)), pairs))
            if not pairs:
                break
        chains.append(members)
    return chains


def shares(docs: list[dict]) -> dict:
    with_pairs = [d for d in docs if d["layout"] != tp.RAW]
    n = max(1, len(with_pairs))
    opt = [d for d in docs if d["option_less"] is not None]
    qa = [d["patterns"][tp.PLAIN] for d in docs if tp.PLAIN in d["patterns"]]
    cot = [d["patterns"][t] for d in docs for t in (tp.COT, tp.OPTIONS_COT) if t in d["patterns"]]
    classic = [d for d in with_pairs if d["layout"] == "classic"]
    return {
        "documents": len(docs),
        "multi_text_share": round(sum(len(d["member_ids"]) > 1 for d in docs) / max(1, len(docs)), 4),
        "mean_chars": round(sum(len(d["text"]) for d in docs) / max(1, len(docs)), 1),
        "layout": {k: round(v / n, 4) for k, v in sorted(Counter(d["layout"] for d in with_pairs).items())},
        "bridge_share_of_classic": round(sum(d["bridge"] for d in classic) / max(1, len(classic)), 4),
        "option_less_share": round(sum(d["option_less"] for d in opt) / max(1, len(opt)), 4),
        "qa_inverted": round(qa.count(tp.INVERTED) / max(1, len(qa)), 4),
        "cot_inverted": round(cot.count(tp.INVERTED) / max(1, len(cot)), 4),
        "cot_answer_first": round(cot.count(tp.ANSWER_FIRST) / max(1, len(cot)), 4),
        "cot_rationale_in": round(cot.count(tp.RATIONALE_IN) / max(1, len(cot)), 4),
        "dropped_pairs": sum(d["dropped"] for d in docs),
    }


def run(m: int, n_chains: int, min_seconds: float) -> dict:
    chains = paper_chains(m, n_chains)
    texts = sum(len(c) for c in chains)
    chars = sum(len(x.text) for c in chains for x in c) / texts
    pairs = sum(len(x.pairs) for c in chains for x in c) / texts
    docs = [d for c in chains for d in tp.templify_chain(c, 0)]  # warm-up + shares
    reps, t0 = 0, time.perf_counter()
    while True:
        for c in chains:
            tp.templify_chain(c, reps)
        reps += 1
        el = time.perf_counter() - t0
        if el >= min_seconds:
            break
    return {"M": m, "chains": n_chains, "texts": texts * reps, "seconds": round(el, 3),
            "texts_per_s": round(texts * reps / el, 1), "mean_text_chars": round(chars, 1),
            "pairs_per_text": round(pairs, 2), "shares": shares(docs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chains", type=int, default=500)
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench"))
    args = ap.parse_args(argv)
    results = [run(m, args.chains, args.min_seconds) for m in (2, 3)]
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    hw = {**describe(with_torch=False), "processes": 1}
    try:
        hw["loadavg_at_end"] = os.getloadavg()
    except OSError:
        pass
    report = {"bench": "templify", "utc": stamp, "argv": sys.argv[1:], "results": results, "hardware": hw}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"templify_cpu_{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    for r in results:
        print(f"M={r['M']}: {r['texts_per_s']:>9.1f} texts/s ({r['texts']} texts of ~{r['mean_text_chars']:.0f} chars, "
              f"{r['pairs_per_text']} pairs, in {r['seconds']} s)  documents {r['shares']['documents']} "
              f"multi-text {r['shares']['multi_text_share']}")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
