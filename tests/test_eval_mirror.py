"""Evaluation-dataset mirrors (ipt_utils.eval_mirror) and stage 05's IPT_HUB_MIRROR redirection:
the mirrors load by config name like the hub repos, the harness's own tasks and the hub twins
resolve to them, and an lm-eval run over them produces numbers."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ipt_utils import assets, eval_mirror, evaluate, schema
from ipt_utils.registry import RunParams
from ipt_utils.stage import StageContext

HARNESS_YAML = {  # canonical task -> its YAML in the installed harness
    "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml",
    "boolq": "super_glue/boolq/default.yaml", "social_iqa": "siqa/siqa.yaml",
    "winogrande": "winogrande/default.yaml", "piqa": "piqa/piqa.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml", "hellaswag": "hellaswag/hellaswag.yaml",
}


def harness_cfg(rel: str) -> dict:
    """An installed harness task YAML, includes merged."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(Path(lm_eval.tasks.__file__).parent / rel, resolve_func=False)


def params(tasks, **kw) -> evaluate.Params:
    base = dict(tasks=tasks, offline_tasks=False, eval_data_dir="", model_sets=["pretrain"], external_models=[],
                backend="hf", num_fewshot=0, limit=2, batch_size=8, max_length=256, add_bos_token=True,
                gpu_memory_utilization=0.8, bootstrap_iters=0)
    base.update(kw)
    return schema.validate(evaluate.Params, base)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub_mirror")
    t0 = time.time()
    built = eval_mirror.build_eval_mirrors(root, list(evaluate.TASKS))
    print(f"[eval_mirror] built {len(built)} repos in {time.time() - t0:.1f}s")
    return root, built


@pytest.fixture
def local_cache(tmp_path, monkeypatch):
    """datasets' cache in the test's tmp dir (read at call time), never under $HOME."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def load(d: Path, config=None):
    import datasets

    return datasets.load_dataset(str(d), config)


# ---------------------------------------------------------------- layouts

def test_adaptllm_mirrors_load_by_config_name(mirror, local_cache):
    root, built = mirror
    fin = built["AdaptLLM/finance-tasks"]
    # the hub's misspelled folder, reached through the README's config -> file mapping
    assert (fin / "ConviFinQA" / "test.json").is_file() and not (fin / "ConvFinQA").exists()
    records = json.loads((fin / "ConviFinQA" / "test.json").read_text())
    assert isinstance(records, list) and records  # one JSON array, like the hub's files
    conv = load(fin, "ConvFinQA")["test"]
    assert {"input", "label"} <= set(conv.column_names) and "answer" not in conv.column_names
    assert conv[0]["label"] == records[0]["label"]
    assert {"input", "label"} <= set(load(fin, "NER")["test"].column_names)
    head = load(fin, "Headline")["test"]
    assert {"input", "options", "gold_index", "class_id"} <= set(head.column_names)
    for config in ("FPB", "FiQA_SA"):
        assert {"input", "options", "gold_index"} <= set(load(fin, config)["test"].column_names)
    med = built["AdaptLLM/medicine-tasks"]
    for config, folder in eval_mirror.ADAPTLLM["AdaptLLM/medicine-tasks"].items():
        assert (med / folder / "test.json").is_file()
        ds = load(med, config)
        assert list(ds) == ["test"] and {"id", "input", "options", "gold_index"} <= set(ds["test"].column_names)
        assert all(0 <= r["gold_index"] < len(r["options"]) for r in ds["test"])


@pytest.mark.parametrize("task", sorted(HARNESS_YAML))
def test_harness_mirror_matches_the_harness_yaml(mirror, local_cache, task):
    """The mirror sits at the task's own dataset_path, has its config and every split the task
    names, with the fields the task's prompt reads."""
    root, built = mirror
    cfg = harness_cfg(HARNESS_YAML[task])
    assert cfg["dataset_path"] == eval_mirror.HARNESS_TASKS[task]
    d = eval_mirror.dataset_dir(root, cfg["dataset_path"])
    ds = load(d, cfg.get("dataset_name"))
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        if cfg.get(key):
            assert cfg[key] in ds, (task, key, list(ds))
    fixture = eval_mirror.HARNESS_REPOS[cfg["dataset_path"]].fixture
    fields = set(json.loads((eval_mirror.FIXTURES / f"{fixture}.jsonl").open().readline()))
    assert fields <= set(ds[cfg.get("validation_split") or cfg["test_split"]].column_names)


def test_mmlu_mirror_has_every_subject_of_the_harness_group(mirror, local_cache):
    import lm_eval.tasks

    root, _ = mirror
    subjects = {harness_cfg(f"mmlu/default/{p.name}")["dataset_name"]
                for p in (Path(lm_eval.tasks.__file__).parent / "mmlu" / "default").glob("mmlu_*.yaml")}
    assert len(subjects) == 57 and subjects <= set(schema.MMLU_SUBJECTS)
    d = eval_mirror.dataset_dir(root, "cais/mmlu")
    assert subjects <= set(schema.dataset_configs(str(d)))
    ds = load(d, "anatomy")
    assert {"test", "dev"} <= set(ds) and ds["test"][0]["subject"] == "anatomy"


def test_builds_are_idempotent_and_follow_their_arguments(tmp_path):
    d = eval_mirror.build_repo(tmp_path, "baber/piqa", rows=3)
    f = d / "piqa_train.parquet"
    stamp = f.stat().st_mtime_ns
    assert eval_mirror.build_repo(tmp_path, "baber/piqa", rows=3) == d and f.stat().st_mtime_ns == stamp
    import pyarrow.parquet as pq

    assert pq.read_table(f).num_rows == 3
    eval_mirror.build_repo(tmp_path, "baber/piqa", rows=5)
    assert pq.read_table(f).num_rows == 5
    assert [p.name for p in d.parent.iterdir()] == ["piqa"]  # no temp dirs left behind
    with pytest.raises(KeyError, match="nope"):
        eval_mirror.build_eval_mirrors(tmp_path, ["nope"])


# ---------------------------------------------------------------- redirection

def test_without_the_variable_nothing_changes(tmp_path, monkeypatch):
    """Unset (or not a directory): one TaskManager exactly as before, no override YAMLs."""
    import lm_eval.tasks

    made = []

    class FakeTM:  # indexing every built-in task takes ~5-15 s; the arguments are what matter
        def __init__(self, **kw):
            made.append(kw)
            self.task_index = {}

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", FakeTM)
    cfg = params(["arc_easy", "convfinqa"])
    inc = evaluate.render_task_dir(tmp_path / "tasks")
    for value in (None, str(tmp_path / "no_such_dir")):
        if value is None:
            monkeypatch.delenv(assets.HUB_MIRROR_ENV, raising=False)
        else:
            monkeypatch.setenv(assets.HUB_MIRROR_ENV, value)
        assert evaluate.mirror_dataset_dir("allenai/ai2_arc") is None
        evaluate.task_manager(cfg, inc, evaluate.harness_task_names(cfg).values())
    assert made == [{"include_path": str(inc), "include_defaults": True}] * 2
    assert not (tmp_path / "tasks_mirror").exists()


def test_every_task_resolves_to_its_mirror(mirror, local_cache, tmp_path, monkeypatch):
    """All 19 canonical tasks: the built task reads the mirror (same config name) and builds its
    prompt, choices and target from the mirror's first eval doc."""
    root, _ = mirror
    monkeypatch.setenv(assets.HUB_MIRROR_ENV, str(root))
    cfg = params(list(evaluate.TASKS))
    names = evaluate.harness_task_names(cfg)
    t0 = time.time()
    tm = evaluate.task_manager(cfg, evaluate.render_task_dir(tmp_path / "tasks"), names.values())

    tasks = tm.load(list(names.values()))["tasks"]
    print(f"[eval_mirror] {len(tasks)} tasks built over the mirror in {time.time() - t0:.1f}s")
    assert len(tasks) == 18 + 57  # 8 general tasks + 10 hub twins + mmlu's subjects
    for name, task in tasks.items():
        path = task.config.dataset_path
        assert path.startswith(str(root / "datasets")), (name, path)
        if name.startswith("ipt_hub_"):
            canonical = name[len("ipt_hub_"):]
            repo, config = eval_mirror.DOMAIN[canonical]
            assert (path, task.config.dataset_name) == (str(root / "datasets" / repo), config)
        doc = next(iter(task.eval_docs))
        assert task.doc_to_text(doc) is not None
        target = task.doc_to_target(doc)
        if task.OUTPUT_TYPE == "multiple_choice":
            choices = task.doc_to_choice(doc)
            gold = task.doc_to_text(doc) if name == "winogrande" else int(target)
            assert len(choices) >= 2 and 0 <= gold < len(choices), name
        else:  # the hub twins' generation gold is the record's `label`
            assert target == doc["label"] and target.strip(), name


@pytest.fixture(scope="module")
def tiny_ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_run")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Question {i}: what was the revenue? Answer: {i}.5 "
                                                  "Varum Corp, organization; yes no maybe"}) + "\n"
                              for i in range(40)))
    tok = assets.build_tiny_tokenizer(root / "tok", vocab_size=400, files=(str(corpus),))
    shape = assets.ModelShape(hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2,
                              num_kv_heads=1, max_position_embeddings=512, vocab_size=0)
    work = root / "run" / "work"
    assets.build_tiny_model(work / "03_pretrain" / "vanilla" / "model", shape, tok, seed=0)
    return StageContext(profile="test", stage="05_evaluate", run_dir=root / "run", work_root=work,
                        run=RunParams(seed=0, work_dir="", device="cpu", offline=True, dtype="auto"),
                        interactive=False)


def test_lm_eval_run_over_the_mirrors(mirror, local_cache, tiny_ctx, monkeypatch):
    """Stage 05's own run function (backend hf, 2 docs per task, a tiny random model) over
    the hub twins and the harness's arc_easy and whole mmlu group, read from the mirrors."""
    root, _ = mirror
    monkeypatch.setenv(assets.HUB_MIRROR_ENV, str(root))
    cfg = params(["arc_easy", "mmlu", "pubmedqa", "convfinqa", "ner", "headline"])
    t0 = time.time()
    summary, metrics = evaluate.run_all(tiny_ctx, cfg, evaluate.find_models(tiny_ctx, cfg))
    print(f"[eval_mirror] lm-eval run over the mirrors: {time.time() - t0:.1f}s")
    got = {(r.task, r.metric): r for r in summary.itertuples()}
    for key in (("arc_easy", "acc_norm"), ("mmlu", "acc"), ("pubmedqa", "acc"),
                ("convfinqa", "numeric_match"), ("ner", "entity_f1"), ("headline", "subtask_weighted_f1"),
                ("headline", "acc_sum_ll")):
        assert key in got and 0.0 <= got[key].value <= 1.0, key
    assert got[("arc_easy", "acc")].n == 2 and got[("mmlu", "acc")].n == 2 * 57
    res = json.loads((tiny_ctx.stage_dir / "results" / "pt-vanilla.json").read_text())
    paths = {name: c["dataset_path"] for name, c in res["configs"].items()}
    assert paths["arc_easy"] == str(root / "datasets" / "allenai" / "ai2_arc")
    assert paths["mmlu_anatomy"] == str(root / "datasets" / "cais" / "mmlu")
    assert paths["ipt_hub_convfinqa"] == str(root / "datasets" / "AdaptLLM" / "finance-tasks")
    assert res["configs"]["ipt_hub_convfinqa"]["dataset_name"] == "ConvFinQA"


def test_overrides_only_for_mirrored_hub_datasets(tmp_path, caplog):
    """A hub dataset without a mirror is named in a warning (it will be read from the hub); a
    packaged builder ('json') or a local path is left alone; groups and tags are expanded."""
    from types import SimpleNamespace as NS

    (tmp_path / "datasets" / "org" / "there").mkdir(parents=True)
    yaml_file = tmp_path / "t.yaml"
    yaml_file.write_text("task: t\n")

    def task(path):
        return NS(kind=NS(name="TASK"), cfg={"dataset_path": path}, yaml_path=yaml_file, tags=set())

    index = {"here": task("org/there"), "gone": task("org/absent"), "local": task("json"),
             "grp": NS(kind=NS(name="GROUP"), cfg={"task": ["tg"]}, yaml_path=None, tags=set()),
             "tg": NS(kind=NS(name="TAG"), cfg=None, yaml_path=None, tags={"here", "gone", "local"})}
    with caplog.at_level("WARNING"):
        done = evaluate.mirror_overrides(index, ["grp"], tmp_path / "out", tmp_path)
    assert done == {"here": str(tmp_path / "datasets" / "org" / "there")}
    assert "gone (org/absent)" in caplog.text and "local" not in caplog.text
    text = (tmp_path / "out" / "here.yaml").read_text()
    assert f'include: "{yaml_file}"' in text and "tag: []" in text
    assert f'dataset_path: "{tmp_path / "datasets" / "org" / "there"}"' in text
