"""Metrics and doc hooks for the ipt lm-eval task YAMLs in this folder.

lm-eval loads this file by path (`!function ipt_metrics.NAME` in a YAML next to it), so it
must stay standalone: standard library only, no package-relative imports. It is also
importable as `ipt_utils.tasks.ipt_metrics` for tests.

Domain multiple-choice tasks (AdaptLLM format {"input","options","gold_index"}) are scored
by option log-likelihood [docs/PAPER.md §6]; `process_domain_mc` returns per-doc acc/acc_norm and
(gold, pred) pairs that the corpus-level F1 aggregations below consume.
"""
from __future__ import annotations

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

def _lls(results):
    return [float(r[0]) if isinstance(r, (tuple, list)) else float(r) for r in results]


def _argmax(xs):
    return max(range(len(xs)), key=lambda i: xs[i])


def process_domain_mc(doc, results):
    """Per-doc scores for {"input","options","gold_index"} docs scored by option likelihood."""
    lls = _lls(results)
    gold = int(doc["gold_index"])
    pred = _argmax(lls)
    lens = [max(1.0, float(len(" " + str(o)))) for o in doc["options"]]
    pred_norm = _argmax([ll / n for ll, n in zip(lls, lens)])
    return {
        "acc": float(pred == gold),
        "acc_norm": float(pred_norm == gold),
        "micro_f1": (gold, pred),
        "weighted_f1": (gold, pred),
    }


def headline_subtask(text: str) -> str:
    """Headline's 9 sub-tasks are its 9 yes/no questions: the text after the last 'Question:'."""
    return text.rsplit("Question:", 1)[-1].strip().lower() if "Question:" in text else ""


def process_headline(doc, results):
    """Sub-task = the hub record's `class_id` (0..8) when it has one, else its question text."""
    scores = process_domain_mc(doc, results)
    sub = doc.get("class_id")
    sub = headline_subtask(doc["input"]) if sub is None else int(sub)
    scores["subtask_weighted_f1"] = (sub, scores["micro_f1"][0], scores["micro_f1"][1])
    return scores


def subtask_weighted_f1(items) -> float:
    """Mean over sub-tasks of each sub-task's weighted F1 (the paper's Headline metric)."""
    by_task: dict = {}
    for task, gold, pred in items:
        by_task.setdefault(task, []).append((gold, pred))
    if not by_task:
        return 0.0
    return sum(weighted_f1(v) for v in by_task.values()) / len(by_task)


# ---------------------------------------------------------------- generation

_NUM = re.compile(r"[-+]?\(?\$?\s*\d[\d,]*\.?\d*\s*%?\)?|[-+]?\.\d+")


def parse_number(text):
    """First number in `text` (commas, $, % stripped; '(12)' read as -12); None if none."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    m = _NUM.search(str(text))
    if not m:
        return None
    s = m.group(0)
    neg = s.strip().startswith("(") and s.strip().endswith(")")
    s = re.sub(r"[\s$,%()+]", "", s)
    try:
        v = float(s)
    except ValueError:
        return None
    return -abs(v) if neg else v


def numeric_match(pred, gold, tol: float = 1e-2) -> float:
    """1.0 if the first number of `pred` is within `tol` (absolute) of `gold`'s number."""
    p, g = parse_number(pred), parse_number(gold)
    if p is None or g is None:
        return 0.0
    return float(abs(p - g) <= tol + 1e-12)


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().strip(".").lower())


def parse_entities(text) -> set:
    """Entities as a set of normalised items, e.g. "Varum Corp (organization); Heloford (location)".

    Items are separated by ';' or newlines; each item is compared as a normalised string
    (lower case, collapsed whitespace, ', ' spacing), so any "name + type" spelling works as
    long as gold and prediction use the same one (the prompt's demonstrations fix it).
    """
    if not text:
        return set()
    if isinstance(text, (list, tuple)):
        raw = [str(t) for t in text]
    else:
        raw = re.split(r"[;\n]", str(text))
    out = set()
    for item in raw:
        item = _norm(item)
        if item:
            out.add(re.sub(r"\s*,\s*", ", ", item))
    return out


def entity_f1(items) -> float:
    """Micro F1 over (predicted, gold) entity sets pooled across docs."""
    tp = n_pred = n_gold = 0
    for gold, pred in items:
        gold, pred = set(gold), set(pred)
        tp += len(gold & pred)
        n_pred += len(pred)
        n_gold += len(gold)
    if tp == 0:
        return 0.0
    precision, recall = tp / n_pred, tp / n_gold
    return 2 * precision * recall / (precision + recall)


def _first(results):
    r = results[0] if isinstance(results, (list, tuple)) and results else results
    return str(r or "")


def gen_target(doc) -> str:
    """Gold answer of a generation doc: `label` in the AdaptLLM hub files (a string, or a list
    whose first item is the answer), `answer` in the offline fixtures."""
    for key in ("label", "answer"):
        value = doc.get(key)
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is not None:
            return str(value)
    raise KeyError(f"generation doc has neither 'label' nor 'answer' (fields: {sorted(doc)})")


def process_convfinqa(doc, results):
    return {"numeric_match": numeric_match(_first(results), gen_target(doc))}


def process_ner(doc, results):
    pred = _first(results).split("\n\n")[0]
    return {"entity_f1": (tuple(sorted(parse_entities(gen_target(doc)))), tuple(sorted(parse_entities(pred))))}


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
