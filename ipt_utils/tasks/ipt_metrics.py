"""Metrics and doc hooks for the ipt lm-eval task YAMLs in this folder.

lm-eval loads this file by path (`!function ipt_metrics.NAME` in a YAML next to it), so it
must stay standalone: standard library only, no package-relative imports. It is also
importable as `ipt_utils.tasks.ipt_metrics` for tests.

The domain tasks are scored by the rules of the authors' AdaptLLM benchmark code
(docs/EVALUATION.md): multiple choice by the lowest mean loss per answer token
(`process_domain_mc`, per-doc accuracies and (gold, pred) pairs for the corpus-level F1
aggregations below), Headline by weighted F1 per class_id averaged over its 9 classes,
ConvFinQA by any number of the prediction's first line matching the gold's first number,
NER by per-example nereval-style F1 over "word (type)" entities.
"""
from __future__ import annotations

import math
import re
from collections import Counter

# ---------------------------------------------------------------- corpus-level F1

def _pairs(items):
    golds, preds = [], []
    for g, p in items:
        golds.append(g)
        preds.append(p)
    return golds, preds


def _class_f1(golds, preds, label):
    tp = sum(1 for g, p in zip(golds, preds) if g == label and p == label)
    fp = sum(1 for g, p in zip(golds, preds) if g != label and p == label)
    fn = sum(1 for g, p in zip(golds, preds) if g == label and p != label)
    if tp == 0:
        return 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall)


def micro_f1(items) -> float:
    """Micro-averaged F1 over all classes (single-label: equals accuracy)."""
    golds, preds = _pairs(items)
    if not golds:
        return 0.0
    tp = sum(1 for g, p in zip(golds, preds) if g == p)
    # single-label multiclass: every miss is one FP (pred class) and one FN (gold class)
    fp = fn = len(golds) - tp
    return 2 * tp / (2 * tp + fp + fn)


def macro_f1(items) -> float:
    golds, preds = _pairs(items)
    labels = sorted(set(golds) | set(preds))
    if not labels:
        return 0.0
    return sum(_class_f1(golds, preds, lab) for lab in labels) / len(labels)


def weighted_f1(items) -> float:
    """Per-class F1 weighted by gold support (sklearn's average='weighted')."""
    golds, preds = _pairs(items)
    if not golds:
        return 0.0
    support = Counter(golds)
    return sum(n * _class_f1(golds, preds, lab) for lab, n in support.items()) / len(golds)


# ---------------------------------------------------------------- multiple choice
# The authors' rule (AdaptLLM benchmark code): the prediction is the option whose ' ' + option
# has the lowest mean negative log-likelihood per answer token. The harness gives summed
# log-likelihoods; ipt_utils.eval_models adds the answer-token count of each (`n_tokens`).

def _lls(results):
    return [float(r[0]) if isinstance(r, (tuple, list)) else float(r) for r in results]


def _answer_tokens(results) -> list[int]:
    counts = [getattr(r, "n_tokens", None) for r in results]
    if any(c is None for c in counts):
        raise ValueError("domain multiple choice needs the answer-token count of every option "
                         "(ipt_utils.eval_models adds it): run these tasks through ipt_utils.evaluate")
    return [max(1, int(c)) for c in counts]


def _argmax(xs):
    return max(range(len(xs)), key=lambda i: xs[i])  # ties: the first option, as torch.argmin


def choose_option(lls, n_tokens) -> int:
    """Index of the option with the lowest mean NLL per answer token."""
    return _argmax([ll / n for ll, n in zip(lls, n_tokens)])


def process_domain_mc(doc, results):
    """Per-doc scores for {"input","options","gold_index"} docs.

    acc / micro_f1 / weighted_f1 use the authors' choice (mean NLL per answer token);
    acc_sum_ll (summed log-likelihood) and acc_char_norm (divided by the characters of
    ' ' + option) are kept beside it for comparison.
    """
    lls = _lls(results)
    gold = int(doc["gold_index"])
    pred = choose_option(lls, _answer_tokens(results))
    chars = [max(1.0, float(len(" " + str(o)))) for o in doc["options"]]
    return {
        "acc": float(pred == gold),
        "acc_sum_ll": float(_argmax(lls) == gold),
        "acc_char_norm": float(_argmax([ll / n for ll, n in zip(lls, chars)]) == gold),
        "micro_f1": (gold, pred),
        "weighted_f1": (gold, pred),
    }


HEADLINE_CLASSES = 9  # the hub's Headline class_id values 0..8 (one yes/no question each)


def process_headline(doc, results):
    """Headline rows carry `class_id` (which of the 9 questions); scored per class."""
    if doc.get("class_id") is None:
        raise KeyError(f"Headline doc without 'class_id' (fields: {sorted(doc)})")
    scores = process_domain_mc(doc, results)
    scores["subtask_weighted_f1"] = (int(doc["class_id"]),) + scores["micro_f1"]
    return scores


def subtask_weighted_f1(items, n_classes: int = HEADLINE_CLASSES) -> float:
    """The authors' Headline metric: weighted F1 within each class_id, averaged over all
    `n_classes` ids (a class with no documents scores 0)."""
    by_class: dict = {}
    for cls, gold, pred in items:
        by_class.setdefault(int(cls), []).append((gold, pred))
    return sum(weighted_f1(by_class.get(c, [])) for c in range(n_classes)) / n_classes


# ---------------------------------------------------------------- generation: ConvFinQA
# A number as the authors' regex finds one: sign, optional leading '.', digits with optional
# thousands groups, decimals, exponent, then any '%' signs (each one divides by 100).
_NUMBER = re.compile(r"[-+]?\.?\d+(?:,\d\d\d)*\.?\d*(?:[eE][-+]?\d+)?%*")
_LEADING_ZERO_INT = re.compile(r"[-+]?0+[1-9]\d*")


def _number_value(token: str) -> float:
    """Value of one matched number; inf where the authors' evaluation of it fails (e.g. '1.2.'
    or an integer with a leading zero such as '07', which is no Python literal)."""
    body = token.rstrip("%").replace(",", "")
    if _LEADING_ZERO_INT.fullmatch(body):
        return math.inf
    try:
        value = float(body)
    except ValueError:
        return math.inf
    return value / 100 ** (len(token) - len(token.rstrip("%")))


def first_line_numbers(text) -> list[float]:
    """Every number in the first line of `text` ('%' = /100; commas are thousands separators;
    '(12)' is 12: parentheses are no sign)."""
    line = str(text or "").split("\n")[0].strip()
    return [_number_value(m) for m in _NUMBER.findall(line)]


def convfinqa_match(pred, gold, tol: float = 1e-2) -> float:
    """1.0 when any number in the first line of `pred` is within `tol` (absolute) of the first
    number of `gold` (a purely absolute tolerance; a number the authors' code cannot evaluate,
    inf here, matches nothing, not even itself)."""
    golds, preds = first_line_numbers(gold), first_line_numbers(pred)
    if not golds or not preds or not math.isfinite(golds[0]):
        return 0.0
    return float(any(math.isfinite(p) and abs(p - golds[0]) <= tol for p in preds))


# ---------------------------------------------------------------- generation: NER
# An entity is the last word before a parenthesised type: "Heloford (location)" ->
# ("Heloford", "location"); "Varum Corp (organization)" -> ("Corp", "organization").
_ENTITY = re.compile(r"(\S+\s+)(\(\S+\))")


def parse_entities(text) -> list[tuple[str, str]]:
    """(name, type) pairs in order of appearance, repeats dropped."""
    out: list[tuple[str, str]] = []
    for word, typ in _ENTITY.findall(str(text or "")):
        ent = (word[:-1] if len(word) > 1 else "", typ[1:-1] if len(typ) > 2 else "")
        if ent not in out:
            out.append(ent)
    return out


def entity_f1_one(gold, pred) -> float:
    """nereval-style F1 of one example: each gold entity earns half credit for an exact name
    and half for its type on an entity with a name (both from the FIRST prediction that
    matches either way; a prediction may serve several gold entities)."""
    correct = 0
    for g_name, g_type in gold:
        for p_name, p_type in pred:
            text_ok = g_name == p_name
            type_ok = g_type == p_type and bool(g_name) and bool(p_name)
            if text_ok or type_ok:
                correct += text_ok + type_ok
                break
    precision = correct / (2 * len(pred)) if pred else 0.0
    recall = correct / (2 * len(gold)) if gold else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _first(results):
    r = results[0] if isinstance(results, (list, tuple)) and results else results
    return str(r or "")


def gen_target(doc) -> str:
    """Gold answer of a generation doc: its `label` (a string, or a list whose first item is
    the answer), as in the AdaptLLM hub files and our offline twins."""
    value = doc.get("label")
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if value is None:
        raise KeyError(f"generation doc has no 'label' (fields: {sorted(doc)})")
    return str(value)


def process_convfinqa(doc, results):
    return {"numeric_match": convfinqa_match(_first(results), " " + gen_target(doc))}


def process_ner(doc, results):
    gold = parse_entities(" " + gen_target(doc))
    return {"entity_f1": entity_f1_one(gold, parse_entities(_first(results)))}


def mean(items) -> float:
    items = list(items)
    return sum(items) / len(items) if items else 0.0


# ---------------------------------------------------------------- general-task doc hooks
# Same prompt construction as the harness's own arc/hellaswag/winogrande tasks, so the
# offline twins score exactly what the real tasks score.

def _hellaswag_pre(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_process_docs(dataset):
    def _one(doc):
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        return {"query": _hellaswag_pre(doc["activity_label"] + ": " + ctx),
                "choices": [_hellaswag_pre(e) for e in doc["endings"]],
                "gold": int(doc["label"])}
    return dataset.map(_one)


def winogrande_doc_to_text(doc):
    return {"1": 0, "2": 1}[str(doc["answer"])]


def winogrande_doc_to_target(doc):
    idx = doc["sentence"].index("_") + 1
    return doc["sentence"][idx:].strip()


def winogrande_doc_to_choice(doc):
    idx = doc["sentence"].index("_")
    return [doc["sentence"][:idx] + opt for opt in (doc["option1"], doc["option2"])]
