"""Shipped fixture data: deterministic regeneration, schemas, counts and conventions."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from conftest import fixture_gen as fg

FIX = fg.FIXTURE_DIR
MARKUP = fg.MARKUP_TOKENS


def load(rel: str) -> list[dict]:
    path = FIX / rel
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            assert line.endswith("\n"), f"{rel}:{n} missing newline"
            rows.append(json.loads(line))
    return rows


def all_strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from all_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from all_strings(v)


def shipped_files() -> list[str]:
    return sorted(str(p.relative_to(FIX)) for p in FIX.rglob("*.jsonl"))


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------
def test_regeneration_is_byte_identical(tmp_path: Path):
    counts = fg.generate(tmp_path)
    fresh = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.jsonl"))
    assert fresh == shipped_files() == sorted(counts)
    for rel in fresh:
        assert (tmp_path / rel).read_bytes() == (FIX / rel).read_bytes(), f"{rel} differs: rerun fixture_gen"


def test_check_mode_detects_changes(tmp_path: Path):
    fg.generate(tmp_path)
    assert fg.main(["--check", "--out", str(tmp_path)]) == 0
    p = tmp_path / "eval" / "boolq.jsonl"
    p.write_text(p.read_text(encoding="utf-8") + "{}\n", encoding="utf-8")
    assert fg.main(["--check", "--out", str(tmp_path)]) == 1


def test_expected_file_set_and_size():
    expected = {"raw_corpus.jsonl", "synth_collection.jsonl", "instructions.jsonl",
                "general_instructions.jsonl"} | {f"eval/{t}.jsonl" for t in fg.EVAL_TASKS}
    assert set(shipped_files()) == expected
    total = sum(p.stat().st_size for p in FIX.rglob("*") if p.is_file())
    assert total < 2_000_000


# ---------------------------------------------------------------------------------------------
# Global text hygiene
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rel", shipped_files())
def test_no_markup_and_non_empty(rel):
    for row in load(rel):
        for s in all_strings(row):
            assert s.strip(), f"{rel}: empty string in {row}"
            for tok in MARKUP:
                assert tok not in s, f"{rel}: markup {tok!r} in {s[:80]!r}"


# ---------------------------------------------------------------------------------------------
# Corpus / collection / instructions
# ---------------------------------------------------------------------------------------------
def test_raw_corpus():
    rows = load("raw_corpus.jsonl")
    assert 250 <= len(rows) <= 350
    for r in rows:
        assert list(r) == ["id", "domain", "text"]
        assert r["domain"] in ("general", "biomedicine", "finance")
        assert 60 <= len(r["text"].split()) <= 160
    by = collections.Counter(r["domain"] for r in rows)
    assert by["general"] >= 100 and by["biomedicine"] >= 70 and by["finance"] >= 70
    assert len({r["id"] for r in rows}) == len(rows)
    texts = [r["text"] for r in rows]
    assert len(set(texts)) >= 0.95 * len(texts)
    joined = " ".join(texts)
    for word in ("because", "therefore", "However"):
        assert word in joined


def test_synth_collection():
    rows = load("synth_collection.jsonl")
    assert 140 <= len(rows) <= 200
    corpus = {r["text"] for r in load("raw_corpus.jsonl")}
    for r in rows:
        assert list(r) == ["context", "QA_list", "QA_type", "rc_name"]
        assert r["QA_type"] in fg.QA_TYPES
        assert isinstance(r["rc_name"], str) and r["rc_name"]
        assert 60 <= len(r["context"].split()) <= 160
        assert r["context"] not in corpus
        assert 2 <= len(r["QA_list"]) <= 6
        qs = [qa["Q"].split("\n", 1)[0].lower() for qa in r["QA_list"]]
        assert len(set(qs)) == len(qs), "duplicate instructions in one context"
        for qa in r["QA_list"]:
            assert list(qa) == ["Q", "A"]
            q, a = qa["Q"], qa["A"]
            mc = r["QA_type"].startswith("multiple-choice")
            cot = r["QA_type"].endswith("+CoT")
            assert ("\nOptions:\n- " in q) == mc
            assert q.endswith(fg.COT_SUFFIX) == cot
            assert (fg.COT_ANSWER in a) == cot
            final = a.split(fg.COT_ANSWER)[-1] if cot else a
            assert final.strip()
            if mc:
                body = q[:-len(fg.COT_SUFFIX)] if cot else q
                opts = body.split("\nOptions:\n", 1)[1].split("\n")
                assert len(opts) >= 2 and all(o.startswith("- ") for o in opts)
                assert final in [o[2:] for o in opts], (q, a)
    assert {r["QA_type"] for r in rows} == set(fg.QA_TYPES)
    names = collections.Counter(r["rc_name"] for r in rows)
    assert len(names) >= 6
    assert len({r["context"] for r in rows}) >= 0.95 * len(rows)


def test_synth_answers_grounded_in_context():
    """Free-form, non-derived answers are spans of the context (most of them)."""
    rows = load("synth_collection.jsonl")
    span = total = 0
    for r in rows:
        if r["QA_type"] != "free-form":
            continue
        for qa in r["QA_list"]:
            total += 1
            span += qa["A"].lower() in r["context"].lower()
    assert total and span / total > 0.7


def test_instructions():
    rows = load("instructions.jsonl")
    assert 150 <= len(rows) <= 260
    for r in rows:
        assert list(r) == ["id", "task", "instruction", "response"]
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["task"] for r in rows}) >= 8
    assert len({r["instruction"] for r in rows}) >= 0.95 * len(rows)


def test_general_instructions():
    rows = load("general_instructions.jsonl")
    assert 100 <= len(rows) <= 160
    for r in rows:
        assert list(r) == ["id", "question", "response"]
    assert len({r["question"] for r in rows}) >= 0.95 * len(rows)


# ---------------------------------------------------------------------------------------------
# Evaluation twins
# ---------------------------------------------------------------------------------------------
def _balanced(labels, k):
    c = collections.Counter(labels)
    assert len(c) == k, c
    assert max(c.values()) - min(c.values()) <= max(2, len(labels) // (2 * k)), c


def _arc_like(rows, stem):
    for r in rows:
        assert list(r) == ["id", stem, "choices", "answerKey"]
        assert list(r["choices"]) == ["text", "label"]
        assert len(r["choices"]["text"]) == len(r["choices"]["label"]) == 4
        assert len(set(r["choices"]["text"])) == 4
        assert r["answerKey"] in r["choices"]["label"]
    _balanced([r["answerKey"] for r in rows], 4)


def test_eval_counts():
    for t in fg.GENERAL_TASKS:
        n = len(load(f"eval/{t}.jsonl"))
        assert (55 <= n <= 80) if t == "mmlu" else (30 <= n <= 60), (t, n)
    for t in fg.DOMAIN_MC_TASKS + fg.DOMAIN_GEN_TASKS:
        assert 20 <= len(load(f"eval/{t}.jsonl")) <= 50, t


def test_eval_general_schemas():
    _arc_like(load("eval/arc_easy.jsonl"), "question")
    _arc_like(load("eval/arc_challenge.jsonl"), "question")
    _arc_like(load("eval/openbookqa.jsonl"), "question_stem")

    rows = load("eval/boolq.jsonl")
    for r in rows:
        assert list(r) == ["question", "passage", "label"] and r["label"] in (0, 1)
    _balanced([r["label"] for r in rows], 2)

    rows = load("eval/piqa.jsonl")
    for r in rows:
        assert list(r) == ["goal", "sol1", "sol2", "label"] and r["label"] in (0, 1)
    _balanced([r["label"] for r in rows], 2)

    rows = load("eval/siqa.jsonl")
    for r in rows:
        assert list(r) == ["context", "question", "answerA", "answerB", "answerC", "label"]
        assert r["label"] in ("1", "2", "3")
    _balanced([r["label"] for r in rows], 3)

    rows = load("eval/winogrande.jsonl")
    for r in rows:
        assert list(r) == ["sentence", "option1", "option2", "answer"]
        assert r["sentence"].count("_") == 1 and r["answer"] in ("1", "2")
        assert r["option1"] != r["option2"]
    _balanced([r["answer"] for r in rows], 2)

    rows = load("eval/hellaswag.jsonl")
    for r in rows:
        assert list(r) == ["ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "label"]
        assert isinstance(r["ind"], int) and len(r["endings"]) == 4 and len(set(r["endings"])) == 4
        assert r["label"] in ("0", "1", "2", "3")
        assert r["ctx"].startswith(r["ctx_a"])
    _balanced([r["label"] for r in rows], 4)

    rows = load("eval/mmlu.jsonl")
    for r in rows:
        assert list(r) == ["question", "subject", "choices", "answer"]
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4 and r["answer"] in range(4)
    assert len({r["subject"] for r in rows}) >= 4
    _balanced([r["answer"] for r in rows], 4)


def test_eval_domain_schemas():
    for t in fg.DOMAIN_MC_TASKS:
        rows = load(f"eval/{t}.jsonl")
        for r in rows:
            # hub field names; Headline rows also carry their question's class_id (0..8)
            assert list(r) == ["id", "input", "options", "gold_index"] + (["class_id"] if t == "headline" else []), t
            assert t != "headline" or r["class_id"] in range(9)
            assert len(r["options"]) >= 2 and len(set(r["options"])) == len(r["options"])
            assert isinstance(r["gold_index"], int) and 0 <= r["gold_index"] < len(r["options"])
        _balanced([r["gold_index"] for r in rows], len(rows[0]["options"]))
        assert len({r["id"] for r in rows}) == len(rows)
    for t in fg.DOMAIN_GEN_TASKS:
        for r in load(f"eval/{t}.jsonl"):
            assert list(r) == ["id", "input", "label"]  # the hub keeps the gold answer in `label`
    for r in load("eval/convfinqa.jsonl"):
        float(r["label"])


def test_eval_items_grounded_in_corpus():
    """Knowledge questions are about entities that the raw corpus talks about."""
    corpus = " ".join(r["text"] for r in load("raw_corpus.jsonl"))
    rows = load("eval/arc_easy.jsonl") + load("eval/openbookqa.jsonl")
    hits = 0
    for r in rows:
        q = r.get("question") or r["question_stem"]
        gold = r["choices"]["text"][r["choices"]["label"].index(r["answerKey"])]
        hits += gold in corpus and any(w in corpus for w in q.split() if w[:1].isupper() and len(w) > 4)
    assert hits / len(rows) > 0.5


def test_ner_answer_format():
    """"entity (type), entity (type)": every item is one entity for ipt_metrics.parse_entities."""
    from ipt_utils.tasks.ipt_metrics import parse_entities

    for r in load("eval/ner.jsonl"):
        items = r["label"].split(", ")
        assert items and all(i.rsplit(" (", 1)[1][:-1] in ("person", "organization", "location") for i in items)
        # the authors' reading: the last word of each name; repeats ("Ralaron Corp", "Istar Corp") count once
        words = [(i.rsplit(" (", 1)[0].split()[-1], i.rsplit(" (", 1)[1][:-1]) for i in items]
        assert parse_entities(r["label"]) == list(dict.fromkeys(words))
