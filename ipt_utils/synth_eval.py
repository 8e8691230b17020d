"""Evaluation of the synthesizer (paper Table 5): how well does it answer the gold instructions?

The paper's measure (`response_f1`): for each gold pair of a held-out context, the
synthesizer is prompted with the context, the gold pairs before it and the gold instruction
(markup exactly as in synthesis, zero-shot and few-shot), and its response is scored against
the gold response by SQuAD-style token F1 (`response_f1`, `response_em`), averaged over the
gold pairs. A second, own-questions measure (`own_*`) lets it write its own pairs from the
context alone: each gold pair is matched to its most similar generated instruction (token F1
>= 0.5) and the matched response scored; pair yield and the parse-failure rate come from the
same parse as in stage 02.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Annotated, TypedDict

from . import generation, io
from .format import ANS, END, EOS, QUE, build_prompt, parse_pairs_with_stats, render_pairs
from .multiround import Tokenizer, fit_prompt

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """SQuAD answer normalisation: lower case, punctuation deleted, articles dropped, spaces squeezed."""
    text = _ARTICLES.sub(" ", _PUNCT.sub("", text.lower()))
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


# --------------------------------------------------------------------------- gold instructions

def instruction_suffix(pairs, k: int) -> str:
    """What follows the context in the prompt for gold pair k: the gold pairs before it, then
    its instruction and the answer marker (the synthesizer writes the response)."""
    before = render_pairs(pairs[:k])
    return (before + "\n\n" if before else "") + f"{QUE} {pairs[k][0]} {ANS}"


def response_text(generated: str) -> str:
    """The response the synthesizer wrote: its text up to the first end marker (</END>, </s>
    or a next <QUE>)."""
    cut = min((i for i in (generated.find(m) for m in (END, EOS, QUE)) if i >= 0), default=len(generated))
    return generated[:cut].strip()


def score_responses(responses: list[str], gold) -> dict:
    """Sums over one context's gold pairs of the response F1 / exact match."""
    return {"gold": len(gold),
            "f1_sum": sum(token_f1(r, g.response) for r, g in zip(responses, gold)),
            "em_sum": sum(exact_match(r, g.response) for r, g in zip(responses, gold))}


# --------------------------------------------------------------------------- own questions

def score_context(generated, gold, match_threshold: float = 0.5) -> dict:
    """Match each gold pair to its most similar generated instruction (each used once).

    Returns counts and sums so contexts can be aggregated without bias to short ones.
    Unmatched gold pairs score 0 in the recall-style `own_response_f1_all`.
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


class SynthEvalRow(TypedDict):
    """One (model, prompt, split) cell of Table 5 (a row of synth_eval.csv)."""

    model: Annotated[str, "tuned | base"]
    prompt: Annotated[str, "zero-shot | few-shot (eval_shots demonstrations of the same dataset)"]
    split: Annotated[str, "seen | unseen (held-out datasets)"]
    contexts: Annotated[int, "held-out contexts evaluated"]
    gold_pairs: Annotated[int, "gold pairs of those contexts"]
    response_f1: Annotated[float, "the paper's measure: SQuAD token F1 of its response to each gold instruction"]
    response_em: Annotated[float, "exact match of the same responses"]
    own_pairs_per_context: Annotated[float, "pairs it writes from the context alone"]
    own_instruction_match_rate: Annotated[float, "gold pairs matched by one of its own instructions (token F1 >= 0.5)"]
    own_response_f1_matched: Annotated[float, "response F1 over the matched gold pairs"]
    own_response_f1_all: Annotated[float, "response F1 over every gold pair (unmatched = 0)"]
    own_parse_failure_rate: Annotated[float, "items of its own generations that did not parse"]


def aggregate(answered: list[dict], own: list[dict], n_items: int, n_failed: int) -> dict:
    """Scores of one (model, prompt, split) cell: `answered` holds score_responses rows (the
    paper's measure), `own` score_context rows and the parse counts (the own-questions measure)."""
    gold = sum(r["gold"] for r in answered)
    own_gold = sum(r["gold"] for r in own)
    matched = sum(r["matched"] for r in own)
    own_f1 = sum(r["f1_sum"] for r in own)
    return {
        "contexts": len(answered),
        "gold_pairs": gold,
        "response_f1": sum(r["f1_sum"] for r in answered) / gold if gold else 0.0,
        "response_em": sum(r["em_sum"] for r in answered) / gold if gold else 0.0,
        "own_pairs_per_context": sum(r["generated"] for r in own) / max(len(own), 1),
        "own_instruction_match_rate": matched / max(own_gold, 1),
        "own_response_f1_matched": own_f1 / matched if matched else 0.0,
        "own_response_f1_all": own_f1 / max(own_gold, 1),
        "own_parse_failure_rate": n_failed / n_items if n_items else 0.0,
    }



# --------------------------------------------------------------------------- driver

def _engine_params(cfg):
    """The generation settings the engines read (ipt_utils.generation), taken from the synth_tune section."""
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


def answer_prompts(e, hist, tok, budget: int) -> list[list[int]]:
    """One prompt per gold pair of example `e`: history, context, the gold pairs before it and
    its instruction (`instruction_suffix`), each prompt within `budget` tokens. The context keeps
    at least half the budget: the earliest gold pairs before k are dropped first, then the
    context is cut; a gold instruction longer than half the budget is cut by tokens."""
    out = []
    for k in range(len(e.pairs)):
        for first in range(k + 1):
            suffix = instruction_suffix(e.pairs[first:], k - first)
            if len(tok.encode(suffix)) <= budget // 2:
                break
        else:  # the instruction alone is over half the budget: keep its first tokens
            question = tok.decode(tok.encode(e.pairs[k][0])[:budget // 4]).strip()
            suffix = instruction_suffix([(question, e.pairs[k][1])], 0)
        _, kept, _, text, _ = fit_prompt(e.context, hist, tok, budget - len(tok.encode(suffix)))
        out.append(tok.encode(build_prompt(text, [(h.prompt_text, h.pairs) for h in kept]) + suffix))
    return out


def evaluate_models(ctx, cfg, models: dict[str, str], eval_sets: dict, demos: dict):
    """Generate and score; -> DataFrame with one row per (model, prompt, split).

    models: name -> local dir or hub name; eval_sets: split ("seen"/"unseen") -> examples.
    Per example, one own-questions prompt (context only) and one prompt per gold pair (gold
    instruction given). One engine at a time: memory the kernel still holds (e.g. a trained
    model) is freed first, every prompt of a model goes to its engine in one call (vLLM
    schedules them itself; the transformers backend splits them into batches), and each engine
    is shut down before the next one starts.
    """
    from types import SimpleNamespace

    import pandas as pd
    from transformers import AutoTokenizer

    generation.free_memory()
    gen_cfg = _engine_params(cfg)
    budget = gen_cfg.max_model_len - gen_cfg.max_new_tokens
    settings = [("zero-shot", 0)] + ([("few-shot", cfg.eval_shots)] if cfg.eval_shots else [])
    rows = []
    for model_name, path in models.items():
        hf_tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        tok = Tokenizer(hf_tok)
        cells, prompts = [], []  # (prompt kind, split, [(example, own prompt index, answer prompt indices)])
        for prompt_kind, shots in settings:
            for split, exs in eval_sets.items():
                where = []
                for e in exs:
                    hist = [SimpleNamespace(prompt_text=d.context, pairs=d.pairs) for d in demos[e.dataset][:shots]]
                    own = len(prompts)
                    prompts.append(fit_prompt(e.context, hist, tok, budget)[0])
                    answers = answer_prompts(e, hist, tok, budget)
                    where.append((e, own, range(len(prompts), len(prompts) + len(answers))))
                    prompts += answers
                cells.append((prompt_kind, split, where))
        engine = generation.make_engine(path, hf_tok, gen_cfg, seed=ctx.seed, device=ctx.device,
                                        dtype=ctx.torch_dtype)
        if engine.backend == "vllm":
            engine.batch_size = max(len(prompts), 1)
        try:
            outs = engine(prompts) if prompts else []
        finally:
            engine.close()
        for prompt_kind, split, where in cells:
            answered, own, items, failed = [], [], 0, 0
            for e, own_i, answer_is in where:
                pairs, st = parse_pairs_with_stats(outs[own_i].text)
                items += st.items
                failed += st.malformed
                own.append(score_context(pairs, e.pairs))
                answered.append(score_responses([response_text(outs[i].text) for i in answer_is], e.pairs))
            rows.append({"model": model_name, "prompt": prompt_kind, "split": split,
                         **aggregate(answered, own, items, failed)})
    return pd.DataFrame(rows)


def write_table(ctx, df) -> dict:
    """synth_eval.csv / .md and a bar figure of response F1 by model, prompt and split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    io.write_text(ctx.stage_dir / "synth_eval.csv", df.to_csv(index=False))
    io.write_text(ctx.stage_dir / "synth_eval.md", df.round(3).to_markdown(index=False) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3))
    labels = [f"{m}\n{p}" for m, p in df[["model", "prompt"]].drop_duplicates().itertuples(index=False)]
    for k, split in enumerate(sorted(df["split"].unique())):
        part = df[df["split"] == split]
        ax.bar([i + 0.4 * k for i in range(len(part))], part["response_f1"], width=0.4, label=split)
    ax.set_xticks([i + 0.2 for i in range(len(labels))], labels, fontsize=7)
    ax.set(ylabel="response F1 (gold instructions)", title="Synthesizer evaluation (Table 5)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(ctx.stage_dir / "synth_eval.png", dpi=100)
    plt.close(fig)
    return {"synth_eval": df.to_dict(orient="records")}
