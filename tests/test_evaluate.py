"""Stage 05: lm-eval offline twins on a tiny model, output shapes, metric functions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ipt_utils import assets, contracts, evaluate, schema
from ipt_utils.registry import RunParams
from ipt_utils.stage import StageContext
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
                (mid, "chemprot", "weighted_f1"), (mid, "chemprot", "acc"), (mid, "chemprot", "acc_sum_ll"),
                (mid, "chemprot", "acc_char_norm")} <= got
    assert metrics["over_context"] == {"pt-vanilla": {}, "it-vanilla": {}}  # short prompts
    assert metrics["harness_version"] and metrics["task_metrics"]["chemprot"] == "micro_f1"
    assert set(summary.n) == {6} and summary.value.between(0, 1).all()
    # micro-F1 equals accuracy for single-label classification
    ch = summary[(summary.model_id == "pt-vanilla") & (summary.task == "chemprot")].set_index("metric").value
    assert ch["micro_f1"] == pytest.approx(ch["acc"])
    res = json.loads((ctx.stage_dir / "results" / "pt-vanilla.json").read_text())
    assert res["ipt"]["model_id"] == "pt-vanilla" and res["ipt"]["tuned"] is False
    assert res["ipt"]["tasks"] == {"arc_easy": "ipt_arc_easy", "chemprot": "ipt_chemprot"}
    assert "acc_norm,none" in res["results"]["ipt_arc_easy"] and res["n-shot"]["ipt_arc_easy"] == 0
    assert res["ipt"]["over_context"]["chemprot"]["requests"] == 6 * 3 and res["ipt"]["scoring"] == evaluate.SCORING
    assert (ctx.stage_dir / "summary.csv").exists() and metrics["headline"]["pt-vanilla"]["chemprot"] >= 0
    # a second run with the same settings reuses the results files
    _, again = evaluate.run_all(ctx, cfg, models)
    assert sorted(again["reused"]) == ["it-vanilla", "pt-vanilla"] and again["seconds_per_model"] == {}
    # both built by evaluate.build_metrics: exactly the keys EvaluateMetrics declares
    for m in (metrics, again):
        assert contracts.problems(evaluate.EvaluateMetrics, m) == []
    assert set(metrics["seconds_per_model"]) == {"pt-vanilla", "it-vanilla"}


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


def score(lls, n_tokens):
    """Option scores as ipt_utils.eval_models returns them."""
    from ipt_utils.eval_models import OptionScore

    return [OptionScore(ll, False, n) for ll, n in zip(lls, n_tokens)]


def test_option_with_lowest_mean_loss_per_answer_token():
    """Options of different token lengths: summed log-likelihood prefers the short option, the
    authors' rule (mean NLL per answer token: 3/1 = 3.0 vs 4/4 = 1.0) the long one."""
    doc = {"input": "x", "options": ["No", "Maybe"], "gold_index": 1}
    r = M.process_domain_mc(doc, score([-3.0, -4.0], [1, 4]))
    assert r["acc"] == 1.0 and r["micro_f1"] == (1, 1) == r["weighted_f1"]
    assert r["acc_sum_ll"] == 0.0  # -3 > -4
    assert r["acc_char_norm"] == 1.0  # -3/3 < -4/6 (' No', ' Maybe')
    # same token counts: the rules agree
    same = M.process_domain_mc(doc, score([-3.0, -4.0], [2, 2]))
    assert same["acc"] == same["acc_sum_ll"] == 0.0
    # ties go to the first option (torch.argmin's choice)
    assert M.choose_option([-2.0, -4.0], [1, 2]) == 0
    with pytest.raises(ValueError, match="answer-token count"):
        M.process_domain_mc(doc, [(-3.0, False), (-4.0, False)])  # a plain harness result


@pytest.mark.parametrize("pred,gold,expected", [
    ("25.7", "25.7", 1.0),
    ("25.704", "25.7", 1.0),  # within the absolute tolerance 1e-2
    ("25.72", "25.7", 0.0),
    ("25.7%", "25.7", 0.0),  # '%' divides by 100: 0.257
    ("25.7%", "25.7%", 1.0),
    ("50%%", "0.005", 1.0),  # each '%' divides
    ("The answer is 1,234.5 million", "1234.5", 1.0),  # thousands separator
    ("$1,000", "1000", 1.0),
    ("1,23", "23", 1.0),  # not a thousands group: two numbers, 1 and 23
    ("(12)", "-12", 0.0),  # parentheses are no sign
    ("(12)", "12", 1.0),
    ("-12", "-12", 1.0),
    ("+3", "3", 1.0),
    ("- 5", "-5", 0.0),  # a sign must touch its digits
    ("1e3", "1000", 1.0),
    (".5", "0.5", 1.0),
    ("07", "7", 0.0),  # an integer with a leading zero does not evaluate in the authors' code
    ("07", "07", 0.0),  # ... not even against itself
    ("25000000.02", "25000000", 0.0),  # the tolerance is absolute at every size
    ("25000000.005", "25000000", 1.0),
    ("from 2022 to 2023 revenue rose 15.1", "15.1", 1.0),  # any number of the line
    ("15.1\n25.7", "25.7", 0.0),  # only the first line
    ("\n25.7", "25.7", 0.0),  # an empty first line
    ("", "5", 0.0),
    ("no idea", "3", 0.0),
    ("6", "5 or 6", 0.0),  # the gold's first number only
    ("0.004", "0", 1.0),
    ("0.02", "0", 0.0),
])
def test_convfinqa_rule(pred, gold, expected):
    assert M.convfinqa_match(pred, gold) == expected


def test_convfinqa_numbers_and_doc():
    assert M.first_line_numbers("-3.5% and 1,000,000 then 2.5e-1\nlater 9") == pytest.approx([-0.035, 1e6, 0.25])
    assert M.first_line_numbers("1.2.3") == pytest.approx([1.2, 0.3])
    doc = {"id": 0, "input": "...\nAnswer:", "label": "25.7"}  # hub shape: gold in `label`
    assert M.process_convfinqa(doc, ["25.705"])["numeric_match"] == 1.0
    assert M.process_convfinqa(doc, ["25.71"])["numeric_match"] == 0.0  # 0.0100000000000016 > 1e-2 in floats
    assert M.process_convfinqa(doc, ["3.0"])["numeric_match"] == 0.0
    assert M.process_convfinqa({"label": ["4.5", "9"]}, ["4.5"])["numeric_match"] == 1.0  # list: first


GOLD_NER = "Quentin Jaliselli (person), Varum Corp (organization), Heloford (location)"


def test_ner_entities_are_the_word_before_a_type():
    assert M.parse_entities(GOLD_NER) == [("Jaliselli", "person"), ("Corp", "organization"),
                                          ("Heloford", "location")]
    # repeats count once; no "(type)" -> nothing; two spaces keep one in the name; a type is one word
    assert M.parse_entities("Ralaron Corp (organization), Istar Corp (organization)") == [("Corp", "organization")]
    assert M.parse_entities("Quentin Jaliselli, person; Heloford, location") == []
    assert M.parse_entities("Heloford  (location)") == [("Heloford ", "location")]
    assert M.parse_entities("New York (big city)") == []
    assert M.parse_entities("") == [] and M.parse_entities(None) == []


@pytest.mark.parametrize("pred,expected", [
    (GOLD_NER, 1.0),
    ("Jaliselli (person), Varum Corp (organization), Heloford (location)", 1.0),  # last words match
    # name right, type wrong: half credit each way. gold Jaliselli: text 1 (pred 1); gold Corp:
    # type 1 (pred 1 has a name and type organization); gold Heloford: nothing.
    # correct 2, predicted 2*1, possible 2*3: P=1, R=1/3 -> F1 0.5
    ("Quentin Jaliselli (organization)", 0.5),
    # two spaces: name "Heloford " is no text match; type credit only: correct 1, P=1/2, R=1/6 -> 0.25
    ("Heloford  (location)", 0.25),
    ("", 0.0),
    ("Quentin Jaliselli, person", 0.0),
])
def test_ner_f1_per_example(pred, expected):
    r = M.process_ner({"id": 0, "input": "Entities:", "label": GOLD_NER}, [pred])
    assert r["entity_f1"] == pytest.approx(expected)


def test_ner_first_match_rule_and_average():
    # gold Apple: the FIRST prediction matching either way decides (Google: type only) ->
    # correct 1, predicted 4, possible 2: P=1/4, R=1/2 -> F1 1/3
    assert M.entity_f1_one([("Apple", "org")], [("Google", "org"), ("Apple", "org")]) == pytest.approx(1 / 3)
    assert M.entity_f1_one([], []) == 0.0 and M.entity_f1_one([("A", "x")], []) == 0.0
    # the task's F1 is the mean of the examples' F1s (not pooled)
    cfg = yaml.safe_load((evaluate.TASKS_DIR / "_domain_ner.yaml").read_text().replace("!function", ""))
    assert cfg["metric_list"] == [{"metric": "entity_f1", "aggregation": "mean", "higher_is_better": True}]
    assert cfg["generation_kwargs"]["until"] == ["\n"] and cfg["generation_kwargs"]["max_gen_toks"] == 100
    conv = yaml.safe_load((evaluate.TASKS_DIR / "_domain_convfinqa.yaml").read_text().replace("!function", ""))
    assert conv["generation_kwargs"]["max_gen_toks"] == 100


def test_headline_weighted_f1_per_class_over_nine():
    doc = {"input": "Headline: Gold up\nQuestion: Does the news headline talk about price going up?",
           "options": ["No", "Yes"], "gold_index": 1, "class_id": 4}
    assert M.process_headline(doc, score([-2.0, -1.0], [1, 1]))["subtask_weighted_f1"] == (4, 1, 1)
    with pytest.raises(KeyError, match="class_id"):
        M.process_headline({k: v for k, v in doc.items() if k != "class_id"}, score([-2.0, -1.0], [1, 1]))
    # class 0: golds 1,1,0,0 / preds 1,0,0,0 -> F1(1)=2/3, F1(0)=0.8, weighted (2*2/3+2*0.8)/4 = 11/15;
    # class 1: label 1 never predicted -> 0; classes 2..8 have no documents -> 0; mean over 9
    items = [(0, 1, 1), (0, 1, 0), (0, 0, 0), (0, 0, 0), (1, 1, 0), (1, 1, 0)]
    assert M.subtask_weighted_f1(items) == pytest.approx(11 / 15 / 9)
    assert M.subtask_weighted_f1([(c, 1, 1) for c in range(9)]) == 1.0
    assert M.subtask_weighted_f1([]) == 0.0
    assert evaluate.TASKS["headline"].metric == "subtask_weighted_f1"


def test_generation_gold_is_the_label_field():
    assert M.gen_target({"label": "25.7"}) == "25.7"
    assert M.gen_target({"label": ["4.5", "4.50"]}) == "4.5"  # a list of golds: the first
    with pytest.raises(KeyError, match="no 'label'"):
        M.gen_target({"input": "x", "answer": "0.25"})
    for base in ("_domain_convfinqa.yaml", "_domain_ner.yaml"):
        cfg = yaml.safe_load((evaluate.TASKS_DIR / base).read_text().replace("!function", ""))
        assert cfg["doc_to_target"].strip() == "ipt_metrics.gen_target", base


def test_profile_sections_validate():
    for p in sorted((schema.REPO_ROOT / "params").glob("*.yaml")):
        section = yaml.safe_load(p.read_text())["evaluate"]
        cfg = schema.validate(evaluate.Params, section, source=str(p), prefix="evaluate")
        assert set(cfg.tasks) <= set(evaluate.TASKS)


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
