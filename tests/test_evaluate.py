"""Stage 05: lm-eval offline twins on a tiny model, output shapes, metric functions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ipt_utils import assets, evaluate, schema
from ipt_utils.stage import RunParams, StageContext
from ipt_utils.tasks import ipt_metrics as M


def params(**kw) -> evaluate.Params:
    base = dict(tasks=["arc_easy", "chemprot"], offline_tasks=True, eval_data_dir="",
                model_sets=["pretrain", "instruct_tune"], external_models=[], backend="hf", num_fewshot=0,
                limit=6, batch_size=8, max_length=256, add_bos_token=True, gpu_memory_utilization=0.8,
                bootstrap_iters=0)
    base.update(kw)
    return schema.validate(evaluate.Params, base)


def write_jsonl(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def small_eval_data(d: Path) -> Path:
    write_jsonl(d / "arc_easy.jsonl", [
        {"id": f"q{i}", "question": f"Which river flows through town {i}?",
         "choices": {"text": ["the Amber", "the Slate", "the Fern", "the Quill"], "label": list("ABCD")},
         "answerKey": "ABCD"[i % 4]} for i in range(8)])
    write_jsonl(d / "chemprot.jsonl", [
        {"id": f"c{i}", "input": f"Drug {i} raises the level of enzyme {i}. Relation:",
         "options": ["upregulator", "downregulator", "agonist"], "gold_index": i % 3} for i in range(8)])
    return d


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run dir whose 03/04 stage work dirs hold two tiny models."""
    root = tmp_path_factory.mktemp("eval")
    corpus = root / "corpus.jsonl"
    write_jsonl(corpus, [{"text": f"Drug {i} raises enzyme {i}; the river flows through town {i}. "
                                  "Question: Which? Answer: upregulator downregulator agonist"} for i in range(40)])
    tok = assets.build_tiny_tokenizer(root / "tok", vocab_size=400, files=(str(corpus),))
    shape = assets.ModelShape(hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2,
                              num_kv_heads=1, max_position_embeddings=512, vocab_size=0)
    work = root / "run" / "work"
    assets.build_tiny_model(work / "03_pretrain" / "vanilla" / "model", shape, tok, seed=0)
    assets.build_tiny_model(work / "04_instruct_tune" / "vanilla" / "model", shape, tok, seed=1)
    ctx = StageContext(profile="test", stage="05_evaluate", run_dir=root / "run", work_root=work,
                       run=RunParams(seed=0, work_dir="", device="cpu", offline=True, dtype="auto"),
                       interactive=False)
    return ctx, small_eval_data(root / "data")


def test_offline_twins_on_tiny_models(tiny_run, monkeypatch):
    ctx, data = tiny_run
    monkeypatch.setenv("HF_HOME", str(ctx.work_root / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    cfg = params(eval_data_dir=str(data))
    models = evaluate.find_models(ctx, cfg)
    assert [(m.model_id, m.arm, m.tuned) for m in models] == [("pt-vanilla", "vanilla", False),
                                                              ("it-vanilla", "vanilla", True)]
    summary, metrics = evaluate.run_all(ctx, cfg, models)
    assert list(summary.columns) == evaluate.SUMMARY_COLUMNS
    got = {(r.model_id, r.task, r.metric) for r in summary.itertuples()}
    for mid in ("pt-vanilla", "it-vanilla"):
        assert {(mid, "arc_easy", "acc"), (mid, "arc_easy", "acc_norm"), (mid, "chemprot", "micro_f1"),
                (mid, "chemprot", "weighted_f1"), (mid, "chemprot", "acc")} <= got
    assert set(summary.n) == {6} and summary.value.between(0, 1).all()
    # micro-F1 equals accuracy for single-label classification
    ch = summary[(summary.model_id == "pt-vanilla") & (summary.task == "chemprot")].set_index("metric").value
    assert ch["micro_f1"] == pytest.approx(ch["acc"])
    res = json.loads((ctx.stage_dir / "results" / "pt-vanilla.json").read_text())
    assert res["ipt"]["model_id"] == "pt-vanilla" and res["ipt"]["tuned"] is False
    assert res["ipt"]["tasks"] == {"arc_easy": "ipt_arc_easy", "chemprot": "ipt_chemprot"}
    assert "acc_norm,none" in res["results"]["ipt_arc_easy"] and res["n-shot"]["ipt_arc_easy"] == 0
    assert (ctx.stage_dir / "summary.csv").exists() and metrics["headline"]["pt-vanilla"]["chemprot"] >= 0
    # a second run with the same settings reuses the results files
    _, again = evaluate.run_all(ctx, cfg, models)
    assert sorted(again["reused"]) == ["it-vanilla", "pt-vanilla"]


def test_missing_eval_data_is_named(tmp_path):
    cfg = params(eval_data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        evaluate.check_task_data(cfg)
    assert str(tmp_path / "arc_easy.jsonl") in str(e.value) and "chemprot.jsonl" in str(e.value)


def test_no_models_message(tmp_path):
    ctx = StageContext(profile="t", stage="05_evaluate", run_dir=tmp_path / "run", work_root=tmp_path / "w",
                       run=RunParams(seed=0, work_dir="", device="cpu", offline=True, dtype="auto"),
                       interactive=False)
    with pytest.raises(FileNotFoundError, match="03_pretrain"):
        evaluate.run_all(ctx, params(), [])


def test_rendered_tasks_have_absolute_data(tmp_path):
    out = evaluate.render_task_dir(tmp_path / "tasks", tmp_path / "data")
    text = (out / "ipt_boolq.yaml").read_text()
    assert f"{(tmp_path / 'data').resolve().as_posix()}/boolq.jsonl" in text
    assert evaluate.DATA_PLACEHOLDER not in "".join(p.read_text() for p in out.glob("*.yaml"))
    assert (out / "ipt_metrics.py").exists()
    names = {yaml.safe_load(l.split(":", 1)[1]) for p in out.glob("ipt_*.yaml")
             for l in p.read_text().splitlines() if l.startswith("task:")}
    assert {t.twin for t in evaluate.TASKS.values()} <= names
    assert {t.harness for t in evaluate.TASKS.values() if t.domain != "general"} <= names


@pytest.mark.skipif(not all((evaluate.EVAL_FIXTURES / f"{t.fixture}.jsonl").exists()
                            for t in evaluate.TASKS.values()), reason="shipped eval fixtures not generated")
def test_every_twin_reads_the_shipped_fixtures(tmp_path, monkeypatch):
    """Each twin builds its prompt/choices/target from the fixture fields (no model needed)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = evaluate.render_task_dir(tmp_path / "tasks")
    tm = TaskManager(include_path=str(out), include_defaults=False)
    tasks = get_task_dict([t.twin for t in evaluate.TASKS.values()], tm)
    for name, task in tasks.items():
        docs = list(task.eval_docs)
        assert docs, name
        doc = docs[0]
        assert task.doc_to_text(doc) is not None
        if task.OUTPUT_TYPE == "multiple_choice":
            choices = task.doc_to_choice(doc)
            text, target = task.doc_to_text(doc), task.doc_to_target(doc)
            gold = text if name == "ipt_winogrande" else int(target)  # partial scoring: text picks the context
            assert len(choices) >= 2 and 0 <= gold < len(choices), name
        else:
            assert str(task.doc_to_target(doc)).strip(), name


# ---------------------------------------------------------------- metrics

def test_micro_and_weighted_f1_by_hand():
    items = [(0, 0), (0, 1), (1, 1), (2, 1), (2, 2), (2, 2)]
    assert M.micro_f1(items) == pytest.approx(4 / 6)
    # per class: 0: P=1 R=.5 F=2/3 (n=2); 1: P=1/3 R=1 F=.5 (n=1); 2: P=1 R=2/3 F=.8 (n=3)
    assert M.weighted_f1(items) == pytest.approx((2 * 2 / 3 + 1 * 0.5 + 3 * 0.8) / 6)
    assert M.macro_f1(items) == pytest.approx((2 / 3 + 0.5 + 0.8) / 3)
    sk = pytest.importorskip("sklearn.metrics")
    g, p = zip(*items)
    assert M.weighted_f1(items) == pytest.approx(sk.f1_score(g, p, average="weighted"))
    assert M.micro_f1(items) == pytest.approx(sk.f1_score(g, p, average="micro"))
    assert M.weighted_f1([]) == 0.0 and M.micro_f1([]) == 0.0


def test_process_domain_mc():
    doc = {"input": "x", "options": ["a", "bbbbbbbbbbbbbbbb"], "gold_index": 1}
    r = M.process_domain_mc(doc, [(-3.0, False), (-4.0, False)])
    assert r["acc"] == 0.0 and r["acc_norm"] == 1.0 and r["micro_f1"] == (1, 0)


def test_numeric_match_tolerance():
    assert M.numeric_match("The answer is 12.344", "12.34") == 1.0
    assert M.numeric_match("12.36", "12.34") == 0.0
    assert M.numeric_match("$1,234.5 million", "1234.5") == 1.0
    assert M.numeric_match("-5.2%", "-5.2") == 1.0
    assert M.numeric_match("(3.1)", "-3.1") == 1.0
    assert M.numeric_match("no idea", "3") == 0.0
    assert M.process_convfinqa({"answer": "0.25"}, ["0.251\n"])["numeric_match"] == 1.0


def test_entity_f1():
    gold = M.parse_entities("Apple Inc, organization; Tim Cook, person")
    assert gold == {"apple inc, organization", "tim cook, person"}
    pred = M.parse_entities("apple inc ,organization\nCupertino, location")
    items = [(gold, pred), (M.parse_entities("X Corp, organization"), M.parse_entities("X Corp, organization"))]
    # tp=2, pred=3, gold=3
    assert M.entity_f1(items) == pytest.approx(2 / 3)
    assert M.entity_f1([(set(), set())]) == 0.0
    fx = M.parse_entities("Quentin Jaliselli (person); Varum Corp (organization)")  # fixture spelling
    assert M.entity_f1([(fx, M.parse_entities("varum corp (organization)"))]) == pytest.approx(2 / 3)
    r = M.process_ner({"answer": "Tim Cook, person"}, ["Tim Cook, person\n\nmore text"])
    assert M.entity_f1([r["entity_f1"]]) == 1.0


def test_profile_sections_validate():
    for p in sorted((schema.REPO_ROOT / "params").glob("*.yaml")):
        section = yaml.safe_load(p.read_text())["evaluate"]
        cfg = schema.validate(evaluate.Params, section, source=str(p), prefix="evaluate")
        assert set(cfg.tasks) <= set(evaluate.TASKS)


def test_headline_mean_over_subtasks():
    doc = {"input": "Headline: Gold up\nQuestion: Does the news headline talk about price going up?",
           "options": ["No", "Yes"], "gold_index": 1}
    scores = M.process_headline(doc, [(-2.0, False), (-1.0, False)])
    assert scores["subtask_weighted_f1"] == ("does the news headline talk about price going up?", 1, 1)
    # sub-task a: perfect (F1 1.0); sub-task b: all wrong (0.0) -> mean 0.5, whatever the sizes
    items = [("a", 1, 1), ("a", 0, 0), ("a", 1, 1), ("a", 0, 0), ("b", 1, 0)]
    assert M.subtask_weighted_f1(items) == pytest.approx(0.5)
    assert M.weighted_f1([(g, p) for _, g, p in items]) != pytest.approx(0.5)  # pooled differs
    assert M.subtask_weighted_f1([]) == 0.0
    assert evaluate.TASKS["headline"].metric == "subtask_weighted_f1"


def test_hub_generation_gold_is_the_label_field():
    """AdaptLLM's ConvFinQA/NER records carry their gold answer in `label` (no `answer`); the
    offline fixtures keep `answer`. Both twins' target and metric read the right one."""
    conv = {"id": 0, "input": "...\nAnswer:", "label": "25.7"}
    assert M.gen_target(conv) == "25.7"
    assert M.process_convfinqa(conv, ["25.71\n"])["numeric_match"] == 1.0
    assert M.process_convfinqa(conv, ["3.0"])["numeric_match"] == 0.0
    ner = {"id": 0, "input": "Entities:", "label": "Tim Cook, person; Apple Inc, organization"}
    assert M.entity_f1([M.process_ner(ner, ["Tim Cook, person; Apple Inc, organization"])["entity_f1"]]) == 1.0
    assert M.gen_target({"label": ["4.5", "4.50"]}) == "4.5"  # a list of golds: the first
    assert M.gen_target({"input": "x", "answer": "0.25"}) == "0.25"  # offline fixtures
    with pytest.raises(KeyError, match="neither 'label' nor 'answer'"):
        M.gen_target({"input": "x"})
    for base in ("_domain_convfinqa.yaml", "_domain_ner.yaml"):
        cfg = yaml.safe_load((evaluate.TASKS_DIR / base).read_text().replace("!function", ""))
        assert cfg["doc_to_target"].strip() == "ipt_metrics.gen_target", base


def test_hub_twins_load_adaptllm_sets_by_config_name():
    """dataset_name = the hub README's config (its config -> file mapping applies, e.g. ConvFinQA
    -> ConviFinQA/test.json); never a data_dir guessed from the folder names."""
    from ipt_utils import eval_mirror

    for name, (repo, config) in eval_mirror.DOMAIN.items():
        cfg = yaml.safe_load((evaluate.TASKS_DIR / f"ipt_hub_{name}.yaml").read_text().replace("!function", ""))
        assert (cfg["dataset_path"], cfg.get("dataset_name")) == (repo, config), name
        assert config in eval_mirror.ADAPTLLM[repo] and "dataset_kwargs" not in cfg, name
    assert eval_mirror.ADAPTLLM["AdaptLLM/finance-tasks"]["ConvFinQA"] == "ConviFinQA"
    assert set(eval_mirror.DOMAIN) == {n for n, t in evaluate.TASKS.items() if t.domain != "general"}


def test_headline_subtask_is_the_class_id_when_present():
    doc = {"input": "Headline: Gold up\nQuestion: Does the news headline talk about price going up?",
           "options": ["No", "Yes"], "gold_index": 1, "class_id": 4}
    assert M.process_headline(doc, [(-2.0, False), (-1.0, False)])["subtask_weighted_f1"] == (4, 1, 1)
    doc["class_id"] = None  # offline fixtures have no class_id: the question text groups them
    assert M.process_headline(doc, [(-2.0, False), (-1.0, False)])["subtask_weighted_f1"][0] == \
        "does the news headline talk about price going up?"
