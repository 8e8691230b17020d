"""Stage 02's statistics: one line per synthesized text, the counts synthesis.png draws, the
document totals, and the rates derived from totals (`synthesis_rates`: one place for a job's
summary and for the merge of several shards). Statistics of many shards are merged by
streaming their CSV files (`merge_stats_csv`), never all rows in memory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from . import io
from .multiround import Synth


def stats_frame(synths: Sequence[Synth], rows: Sequence[dict]):
    """One line per text: its synthesis counts and its document (synthesis_stats.csv)."""
    import pandas as pd

    # per text: its document (id, size, characters) and its own mode / dropped pairs. Keyed on
    # (chain_id, id): an id-less corpus's id is the text's hash, so identical texts share an id
    by_id = {(r["chain_id"], m["id"]): (r, m) for r in rows for m in r["members"]}
    recs = []
    for s in synths:
        row, mem = by_id.get((s.chain_id, s.id), ({}, {}))
        recs.append({"id": s.id, "domain": s.domain, "round": s.round, "slot": s.slot,
                     "chain_id": s.chain_id, "inherited": s.inherited, "history_len": len(s.history),
                     "history_dropped": s.history_dropped, "truncated": s.truncated,
                     "neutralised": s.neutralised, "prompt_tokens": s.prompt_tokens,
                     "gen_tokens": s.gen_tokens, "items": s.items, "pairs": len(s.pairs),
                     "malformed": s.malformed, "duplicates": s.duplicates,
                     "tokens_per_pair": s.pair_tokens / len(s.pairs) if s.pairs else float("nan"),
                     "mode": mem.get("mode", ""), "layout": row.get("layout", ""),
                     "dropped_pairs": mem.get("dropped_pairs", 0), "doc_id": row.get("id", ""),
                     "doc_texts": len(row.get("member_ids", ())), "doc_chars": len(row.get("text", ""))})
    return pd.DataFrame(recs)


TPP_BINS = 20  # histogram bins of tokens per pair in synthesis.png


def stats_tally(df) -> dict:
    """What synthesis.png shows, as counts: pairs per text, tokens-per-pair histogram, mode/layout mix."""
    import numpy as np

    tpp = df["tokens_per_pair"].dropna().to_numpy(dtype=float)
    return {"pairs": df["pairs"].value_counts().to_dict(), "tpp": np.histogram(tpp, bins=TPP_BINS),
            **{col: df[col].value_counts().to_dict() for col in ("mode", "layout")}}


def draw_stats(path: Path, tally: dict) -> Path:
    """synthesis.png from stats_tally counts (the merge builds them without loading every row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(10, 7))
    pairs = sorted(tally["pairs"].items())
    ax[0, 0].hist([k for k, _ in pairs], bins=range(0, int(pairs[-1][0] if pairs else 0) + 2),
                  weights=[c for _, c in pairs], align="left", rwidth=0.8)
    ax[0, 0].set(title="pairs per text", xlabel="pairs", ylabel="texts")
    counts, edges = tally["tpp"]
    ax[0, 1].hist(edges[:-1], bins=edges, weights=counts)
    ax[0, 1].set(title="tokens per pair (instruction + response)", xlabel="tokens")
    for a, col in ((ax[1, 0], "mode"), (ax[1, 1], "layout")):
        mix = sorted(tally[col].items(), key=lambda kv: -kv[1])
        a.barh([str(k) for k, _ in mix], [c for _, c in mix])
        a.set(title=f"{col} mix", xlabel="texts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def document_rates(documents: int, multi_text_documents: int, document_chars_total: int, texts: int) -> dict:
    """The per-document rates, from totals (one place for a job and for the shard merge)."""
    return {"mean_document_chars": document_chars_total / documents if documents else 0.0,
            "multi_text_share": multi_text_documents / documents if documents else 0.0,
            "texts_per_document": texts / documents if documents else 0.0}


def document_metrics(df) -> dict:
    """Pre-training documents of a stats frame (one line per text, with its document's id,
    size and characters): counts, layout mix per document, dropped pairs. A document is
    (chain_id, doc_id): document ids of an id-less corpus are text hashes, which repeat."""
    if not len(df) or "doc_id" not in df:
        return {"documents": 0, "multi_text_documents": 0, "document_chars_total": 0, "dropped_pairs_total": 0,
                "document_layout_mix": {}, **document_rates(0, 0, 0, 0)}
    docs = df.drop_duplicates(["chain_id", "doc_id"])
    n, multi, chars = len(docs), int((docs["doc_texts"] > 1).sum()), int(docs["doc_chars"].sum())
    return {"documents": n, "multi_text_documents": multi, "document_chars_total": chars,
            "dropped_pairs_total": int(df["dropped_pairs"].sum()),
            "document_layout_mix": docs["layout"].value_counts().to_dict(),
            **document_rates(n, multi, chars, len(df))}


def synthesis_rates(t: Mapping, gen_s: float) -> dict:
    """Every rate of the stage's metrics from the totals `t` (a job's, or the sum over shards)
    and the generation seconds `gen_s` they were made in."""
    n, pairs, items = t["texts_synthesized"], t["pairs_total"], t["items_total"]
    return {
        "pairs_per_text": pairs / n if n else 0.0,
        "tokens_per_pair": t["pair_tokens_total"] / pairs if pairs else 0.0,
        "parse_failure_rate": t["malformed_total"] / items if items else 0.0,
        "duplicate_rate": t["duplicates_total"] / items if items else 0.0,
        "inherited_share": t["inherited_total"] / n if n else 0.0,
        "input_tokens_per_s": t["fresh_input_tokens"] / gen_s if gen_s else 0.0,
        "output_tokens_per_s": t["fresh_output_tokens"] / gen_s if gen_s else 0.0,
        **document_rates(t["documents"], t["multi_text_documents"], t["document_chars_total"], n),
    }


def merge_stats_csv(parts: Sequence[tuple[int, Path]], out: Path) -> dict:
    """Concatenate per-shard synthesis_stats.csv files (a `shard` column appended) into `out`,
    streamed row by row (400 shards hold ~40M rows: never all in memory); -> stats_tally counts.

    Fields are copied as written (csv module, the quoting pandas' to_csv uses), so the file is
    what reading every shard with pandas and writing the concatenation gave, without parsing
    ids or floats. A second pass over `out` bins tokens per pair once its range is known.
    """
    import csv
    from collections import Counter

    import numpy as np

    tally = {"pairs": Counter(), "mode": Counter(), "layout": Counter()}
    header, lo, hi = None, float("inf"), float("-inf")
    with io.atomic_open(out) as f:
        w = csv.writer(f, lineterminator="\n")
        for shard, path in parts:
            with open(path, newline="", encoding="utf-8") as g:
                r = csv.reader(g)
                cols = next(r, None)
                if cols is None:
                    raise ValueError(f"{path}: empty statistics file (no header line)")
                if header is None:
                    header = cols
                    w.writerow(cols + ["shard"])
                    at = {c: cols.index(c) for c in ("pairs", "tokens_per_pair", "mode", "layout")}
                elif cols != header:
                    raise ValueError(f"{path}: columns {cols} differ from the first shard's {header}")
                for lineno, row in enumerate(r, 2):
                    if len(row) != len(header):
                        raise ValueError(f"{path}:{lineno}: {len(row)} fields, expected {len(header)}")
                    w.writerow(row + [str(shard)])
                    tally["pairs"][int(row[at["pairs"]])] += 1
                    for col in ("mode", "layout"):
                        if row[at[col]]:  # empty = NaN, not counted (as value_counts)
                            tally[col][row[at[col]]] += 1
                    tpp = row[at["tokens_per_pair"]]
                    if tpp and tpp.lower() != "nan":
                        lo, hi = min(lo, float(tpp)), max(hi, float(tpp))
    hist_range = (lo, hi) if lo <= hi else None
    counts = np.histogram([], bins=TPP_BINS, range=hist_range)[0]
    edges = np.histogram_bin_edges([], bins=TPP_BINS, range=hist_range)
    if hist_range is not None:
        with open(out, newline="", encoding="utf-8") as g:
            r = csv.reader(g)
            k = next(r).index("tokens_per_pair")
            buf = []
            for row in r:
                if row[k] and row[k].lower() != "nan":
                    buf.append(float(row[k]))
                if len(buf) >= 1 << 12:
                    counts += np.histogram(buf, bins=TPP_BINS, range=hist_range)[0]
                    buf = []
            counts += np.histogram(buf, bins=TPP_BINS, range=hist_range)[0]
    tally["tpp"] = (counts, edges)
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in tally.items()}
