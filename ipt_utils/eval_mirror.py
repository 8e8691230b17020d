"""Hub-layout mirrors of the evaluation datasets stage 05 loads by name (rehearsals).

`build_eval_mirrors(root, tasks)` writes, under `root/datasets/<repo>`, a small copy of every
hub dataset behind the canonical tasks (`evaluate.TASKS`) with the real repository's file
layout, so that `datasets.load_dataset(<dir>, <config>)` -- the call lm-eval makes once
`IPT_HUB_MIRROR` redirects a task (`evaluate.mirror_dataset_dir`) -- goes through the same
config -> file resolution as on the hub. Rows come from the shipped eval fixtures
(ipt_utils/fixtures/eval, already in the hub's field names), completed with the fields the
hub rows carry; a few per split, deterministic for a seed.

Layouts (checked against hub listings unless marked unverified in LAYOUT_NOTES):
- AdaptLLM/medicine-tasks, AdaptLLM/finance-tasks: README `configs:` mapping each config to
  `<folder>/test.json`, one JSON array of records per file (the folder for ConvFinQA is
  spelled `ConviFinQA` on the hub; load by config name).
- the harness's own tasks: parquet files per config and split with README `configs:`, or
  (baber/piqa) bare `piqa_<split>.parquet` files whose names give the splits. cais/mmlu
  (all 57 subject configs) is built by ipt_utils.dataset_mirror, which stage 04 uses too.
Atomic, idempotent builds and the parquet/README writers are hub_mirror's.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from . import dataset_mirror, hub_mirror, io
from .hub_mirror import dataset_dir

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"
VERSION = 2  # bump when the mirrors' content or layout changes (part of the build key)
NOTE = ("Offline mirror written by ipt_utils.eval_mirror: the real repository's layout with a few "
        "rows drawn from the project's evaluation fixtures, for rehearsals without the hub.")

# AdaptLLM task sets: config -> folder (README configs on the hub; folder names as listed there).
ADAPTLLM = {
    "AdaptLLM/medicine-tasks": {"ChemProt": "ChemProt", "MQP": "MedQs", "PubMedQA": "pubmed_qa",
                                "RCT": "RCT", "USMLE": "usmle"},
    "AdaptLLM/finance-tasks": {"ConvFinQA": "ConviFinQA", "FiQA_SA": "FiQA_SA", "FPB": "FPB",
                               "Headline": "Headline", "NER": "NER"},
}
# canonical domain task -> (repo, config); its rows come from fixtures/eval/<task>.jsonl
DOMAIN = {
    "pubmedqa": ("AdaptLLM/medicine-tasks", "PubMedQA"), "chemprot": ("AdaptLLM/medicine-tasks", "ChemProt"),
    "mqp": ("AdaptLLM/medicine-tasks", "MQP"), "rct": ("AdaptLLM/medicine-tasks", "RCT"),
    "usmle": ("AdaptLLM/medicine-tasks", "USMLE"),
    "convfinqa": ("AdaptLLM/finance-tasks", "ConvFinQA"), "fpb": ("AdaptLLM/finance-tasks", "FPB"),
    "fiqa_sa": ("AdaptLLM/finance-tasks", "FiQA_SA"), "headline": ("AdaptLLM/finance-tasks", "Headline"),
    "ner": ("AdaptLLM/finance-tasks", "NER"),
}
_CONFIG_FIXTURE = {c: t for t, (_, c) in DOMAIN.items()}


@dataclass(frozen=True)
class HarnessRepo:
    """One hub repo behind harness tasks: configs -> split -> file path in the repo."""
    repo: str
    fixture: str  # ipt_utils/fixtures/eval/<fixture>.jsonl supplies the rows
    files: dict[str, dict[str, str]]  # config -> split -> path ('default' for one-config repos)
    readme: bool = True  # the real repo declares its configs in README.md
    note: str = ""
    fixtures_by_config: dict[str, str] = field(default_factory=dict)


def _per_config(configs, splits, pattern="{config}/{split}-00000-of-00001.parquet"):
    return {c: {s: pattern.format(config=c, split=s) for s in splits} for c in configs}


TRAIN_VAL_TEST = ("train", "validation", "test")
HARNESS_REPOS = {r.repo: r for r in (
    HarnessRepo("allenai/ai2_arc", "arc_easy", _per_config(("ARC-Challenge", "ARC-Easy"), TRAIN_VAL_TEST),
                fixtures_by_config={"ARC-Challenge": "arc_challenge", "ARC-Easy": "arc_easy"},
                note="file names not re-read on the hub here (the usual <config>/<split>-00000-of-00001)"),
    HarnessRepo("aps/super_glue", "boolq", _per_config(("boolq",), TRAIN_VAL_TEST),
                note="unverified: main-branch file names (the listing we saw is the parquet export, "
                     "boolq/super_glue-<split>.parquet); only the boolq config is mirrored"),
    HarnessRepo("lighteval/siqa", "siqa", {"default": {
        "train": "data/train-00000-of-00001-da17dfc1120ed1ee.parquet",
        "validation": "data/validation-00000-of-00001-90bb85eab85fcfa8.parquet"}},
        note="README content unverified (configs written as the hub's uploader writes them)"),
    HarnessRepo("allenai/winogrande", "winogrande", _per_config(("winogrande_xl",), TRAIN_VAL_TEST),
                note="unverified: main-branch parquet names; only winogrande_xl is mirrored"),
    HarnessRepo("baber/piqa", "piqa", {"default": {s: f"piqa_{s}.parquet" for s in TRAIN_VAL_TEST}},
                readme=False),
    HarnessRepo("allenai/openbookqa", "openbookqa", _per_config(("main",), TRAIN_VAL_TEST),
                note="file names not re-read on the hub here; only the 'main' config is mirrored "
                     "('additional' is not used)"),
    HarnessRepo("Rowan/hellaswag", "hellaswag",
                _per_config(("default",), TRAIN_VAL_TEST, "data/{split}-00000-of-00001.parquet")),
)}
# cais/mmlu (57 subject configs, `all`, `auxiliary_train`) is also what stage 04 reads: one
# builder for it, ipt_utils.dataset_mirror's.
SHARED_REPOS = ("cais/mmlu",)
# canonical general task -> repo (the configs each task reads are in the harness YAMLs)
HARNESS_TASKS = {"arc_easy": "allenai/ai2_arc", "arc_challenge": "allenai/ai2_arc", "boolq": "aps/super_glue",
                 "social_iqa": "lighteval/siqa", "winogrande": "allenai/winogrande", "piqa": "baber/piqa",
                 "openbookqa": "allenai/openbookqa", "hellaswag": "Rowan/hellaswag", "mmlu": "cais/mmlu"}
LAYOUT_NOTES = {
    "AdaptLLM/*": "configs and folders checked against the hub README; test.json as a JSON array "
                  "(third-party code reads it with json.load); record fields id/input/options/gold_index "
                  "(medicine, checked), label for ConvFinQA/NER and class_id for Headline (from the "
                  "authors' evaluation code); finance 'id' and the NER label spelling unverified",
    **{r.repo: r.note for r in HARNESS_REPOS.values() if r.note},
}


def repos_for(tasks) -> list[str]:
    """The hub repos behind canonical task names (unknown names raise, naming them)."""
    unknown = [t for t in tasks if t not in DOMAIN and t not in HARNESS_TASKS]
    if unknown:
        raise KeyError(f"no evaluation mirror for task(s) {unknown}; known: "
                       f"{sorted(DOMAIN) + sorted(HARNESS_TASKS)}")
    return sorted({DOMAIN[t][0] if t in DOMAIN else HARNESS_TASKS[t] for t in tasks})


# ---------------------------------------------------------------- rows

def _fixture(name: str) -> list[dict]:
    path = FIXTURES / f"{name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: the evaluation mirrors draw their rows from the "
                                "shipped fixtures (`make fixtures`)")
    return io.read_jsonl(path)


def _draw(pool: list[dict], n: int, rng: random.Random) -> list[dict]:
    """n rows from the pool (without repeats while the pool lasts), copied."""
    order = list(range(len(pool)))
    rng.shuffle(order)
    return [dict(pool[order[i % len(order)]]) for i in range(n)]


def _adaptllm_rows(config: str, n: int, rng: random.Random) -> list[dict]:
    """Hub-shaped records: the fixtures already carry the hub's field names (`label` for the
    generation tasks, `class_id` for Headline); a fresh running id as on the hub."""
    return [{**r, "id": i} for i, r in enumerate(_draw(_fixture(_CONFIG_FIXTURE[config]), n, rng))]


def _harness_rows(spec: HarnessRepo, config: str, split: str, n: int, rng: random.Random) -> list[dict]:
    pool = _fixture(spec.fixtures_by_config.get(config, spec.fixture))
    rows = _draw(pool, n, rng)
    hidden = split == "test"  # these hubs publish test rows without gold labels
    for i, r in enumerate(rows):
        if spec.repo == "aps/super_glue":
            r.update(idx=i, label=-1 if hidden else int(r["label"]))
        elif spec.repo == "baber/piqa" and hidden:
            r["label"] = -1
        elif spec.repo == "allenai/winogrande" and hidden:
            r["answer"] = ""
        elif spec.repo == "Rowan/hellaswag":
            r.update(ind=i, source_id=f"mirror~{split}~{i}", split={"validation": "val"}.get(split, split),
                     split_type="indomain", label="" if hidden else str(r["label"]))
    return rows


# ---------------------------------------------------------------- writing

def _glob(path: str) -> str:
    """`data/train-00000-of-00001-<hash>.parquet` -> `data/train-*`, as the hub's READMEs name
    a split's files; other paths (AdaptLLM's test.json) stay as they are."""
    return path.split("-00000-of-", 1)[0] + "-*" if "-00000-of-" in path else path


def _populate(tmp: Path, repo: str, rows: int, seed: int) -> None:
    def rng(*key):
        return random.Random(":".join(map(str, (seed, repo) + key)))

    if repo in ADAPTLLM:
        configs = {c: {"test": f"{folder}/test.json"} for c, folder in ADAPTLLM[repo].items()}
        for config, files in configs.items():
            path = tmp / files["test"]
            path.parent.mkdir(parents=True, exist_ok=True)
            # one JSON array per file, as the hub's test.json files are
            path.write_text(json.dumps(_adaptllm_rows(config, rows, rng(config)), ensure_ascii=False, indent=1),
                            encoding="utf-8")
    else:
        spec = HARNESS_REPOS[repo]
        configs = spec.files if spec.readme else {}
        for config, files in spec.files.items():
            for split, rel in files.items():
                data = _harness_rows(spec, config, split, rows, rng(config, split))
                hub_mirror.write_parquet(tmp / rel, data, None)
    if configs:
        front = {"configs": hub_mirror.configs_block(
            {c: {s: _glob(p) for s, p in files.items()} for c, files in configs.items()})}
        (tmp / "README.md").write_text(hub_mirror.readme(front, f"{repo} (mirror)", NOTE),
                                       encoding="utf-8")


def build_repo(root: str | Path, repo: str, *, rows: int = 8, seed: int = 0) -> Path:
    """One repo's mirror -> its directory. Atomic and idempotent (hub_mirror's build: a temp
    dir renamed into place; a mirror built with the same arguments is kept)."""
    if repo in SHARED_REPOS:
        return dataset_mirror.build_dataset(root, repo, seed=seed)  # its default size, so one build serves both
    if repo not in ADAPTLLM and repo not in HARNESS_REPOS:
        raise KeyError(f"no evaluation mirror for hub repo {repo!r}")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    key = {"repo": repo, "rows": rows, "seed": seed, "eval_mirror": VERSION}
    return hub_mirror.build_atomically(dataset_dir(root, repo), key, lambda d: _populate(d, repo, rows, seed))


def build_eval_mirrors(root: str | Path, tasks, *, rows: int = 8, seed: int = 0) -> dict[str, Path]:
    """Mirrors of the hub datasets behind `tasks` (canonical names) -> {repo: directory}."""
    return {repo: build_repo(root, repo, rows=rows, seed=seed) for repo in repos_for(tasks)}
