"""Evaluation of the synthesizer (paper Table 5 shape): does it write answerable pairs?

For held-out contexts of seen and unseen datasets, each model generates pairs
(zero-shot and few-shot prompts, built with the format core exactly as in synthesis).
Generated instructions are matched to gold instructions by token F1; for matched
pairs the response is scored against the gold answer (token F1 and exact match).
Pair yield and the parse-failure rate come from the same parse as in stage 02.
"""
from __future__ import annotations

import re
import string
from collections import Counter

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """SQuAD-style answer normalisation: lower, drop punctuation and articles, squeeze spaces."""
    text = _ARTICLES.sub(" ", _PUNCT.sub(" ", text.lower()))
    return " ".join(text.split())


def token_f1(pred: str, gold: str) -> float:
    p, g = normalize(pred).split(), normalize(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_match(pred: str, gold: str) -> float:
    return float(normalize(pred) == normalize(gold))


def score_context(generated, gold, match_threshold: float = 0.5) -> dict:
    """Match each gold pair to its most similar generated instruction (each used once).

    Returns counts and sums so contexts can be aggregated without bias to short ones.
    Unmatched gold pairs score 0 in the recall-style `response_f1_all`.
    """
    used: set[int] = set()
    matched, f1_sum, em_sum = 0, 0.0, 0.0
    for g in gold:
        best, best_i = 0.0, None
        for i, p in enumerate(generated):
            if i in used:
                continue
            s = token_f1(p.instruction, g.instruction)
            if s > best:
                best, best_i = s, i
        if best_i is not None and best >= match_threshold:
            used.add(best_i)
            matched += 1
            f1_sum += token_f1(generated[best_i].response, g.response)
            em_sum += exact_match(generated[best_i].response, g.response)
    return {"gold": len(gold), "generated": len(generated), "matched": matched,
            "f1_sum": f1_sum, "em_sum": em_sum}


def aggregate(rows: list[dict], n_items: int, n_failed: int) -> dict:
    """Scores of one (model, prompt, split) cell from per-context rows and parse counts."""
    gold = sum(r["gold"] for r in rows)
    matched = sum(r["matched"] for r in rows)
    f1 = sum(r["f1_sum"] for r in rows)
    return {
        "contexts": len(rows),
        "pairs_per_context": sum(r["generated"] for r in rows) / max(len(rows), 1),
        "instruction_match_rate": matched / max(gold, 1),
        "response_f1_matched": f1 / matched if matched else 0.0,
        "response_em_matched": sum(r["em_sum"] for r in rows) / matched if matched else 0.0,
        "response_f1_all": f1 / max(gold, 1),
        "parse_failure_rate": n_failed / n_items if n_items else 0.0,
    }



# --------------------------------------------------------------------------- driver

def _engine_params(cfg):
    """The generation settings stage 02's engines read, taken from the synth_tune section."""
    from types import SimpleNamespace

    return SimpleNamespace(backend=cfg.eval_backend, batch_size=cfg.batch_size * 2,
                           max_new_tokens=cfg.eval_max_new_tokens, max_model_len=cfg.max_seq_len,
                           tensor_parallel_size=1, gpu_memory_utilization=0.85,
                           enable_prefix_caching=True)


def demo_pool(examples, eval_sets) -> dict:
    """Few-shot demonstrations per dataset: its examples that are not evaluated."""
    from collections import defaultdict

    held = {id(e) for exs in eval_sets.values() for e in exs}
    pool = defaultdict(list)
    for e in examples:
        if id(e) not in held:
            pool[e.dataset].append(e)
    return pool


def evaluate_models(ctx, cfg, models: dict[str, str], eval_sets: dict, demos: dict):
    """Generate and score; -> DataFrame with one row per (model, prompt, split).

    models: name -> local dir or hub name; eval_sets: split ("seen"/"unseen") -> examples.
    One engine at a time: memory the kernel still holds (e.g. a trained model) is freed first,
    every prompt of a model goes to its engine in one call (vLLM schedules them itself; the
    transformers backend splits them into batches), and each engine is shut down before the
    next one starts.
    """
    from types import SimpleNamespace

    import pandas as pd

    from .format import parse_pairs_with_stats
    from .synthesize import Tokenizer, _free_memory, fit_prompt, make_engine

    _free_memory()
    gen_cfg = _engine_params(cfg)
    budget = gen_cfg.max_model_len - gen_cfg.max_new_tokens
    settings = [("zero-shot", 0)] + ([("few-shot", cfg.eval_shots)] if cfg.eval_shots else [])
    rows = []
    for model_name, path in models.items():
        from transformers import AutoTokenizer

        hf_tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        tok = Tokenizer(hf_tok)
        cells, prompts = [], []  # (prompt kind, split, examples, first prompt index)
        for prompt_kind, shots in settings:
            for split, exs in eval_sets.items():
                cells.append((prompt_kind, split, exs, len(prompts)))
                for e in exs:
                    hist = [SimpleNamespace(prompt_text=d.context, pairs=d.pairs) for d in demos[e.dataset][:shots]]
                    prompts.append(fit_prompt(e.context, hist, tok, budget)[0])
        engine = make_engine(path, hf_tok, gen_cfg, seed=ctx.seed, device=ctx.device, dtype=ctx.torch_dtype)
        if engine.backend == "vllm":
            engine.batch_size = max(len(prompts), 1)
        try:
            outs = engine(prompts) if prompts else []
        finally:
            engine.close()
        for prompt_kind, split, exs, start in cells:
            scored, items, failed = [], 0, 0
            for e, out in zip(exs, outs[start:start + len(exs)]):
                pairs, st = parse_pairs_with_stats(out.text)
                items += st.items
                failed += st.malformed
                scored.append(score_context(pairs, e.pairs))
            rows.append({"model": model_name, "prompt": prompt_kind, "split": split,
                         **aggregate(scored, items, failed)})
    return pd.DataFrame(rows)


def write_table(ctx, df) -> dict:
    """synth_eval.csv / .md and a bar figure of response F1 by model, prompt and split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import io

    io.write_text(ctx.stage_dir / "synth_eval.csv", df.to_csv(index=False))
    io.write_text(ctx.stage_dir / "synth_eval.md", df.round(3).to_markdown(index=False) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3))
    labels = [f"{m}\n{p}" for m, p in df[["model", "prompt"]].drop_duplicates().itertuples(index=False)]
    for k, split in enumerate(sorted(df["split"].unique())):
        part = df[df["split"] == split]
        ax.bar([i + 0.4 * k for i in range(len(part))], part["response_f1_all"], width=0.4, label=split)
    ax.set_xticks([i + 0.2 for i in range(len(labels))], labels, fontsize=7)
    ax.set(ylabel="response F1 (all gold pairs)", title="Synthesizer evaluation (Table 5 shape)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(ctx.stage_dir / "synth_eval.png", dpi=100)
    plt.close(fig)
    return {"synth_eval": df.to_dict(orient="records")}
