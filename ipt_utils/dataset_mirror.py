"""Offline mirrors of the hub datasets the GPU profiles load by name (rehearsals).

`build_dataset(root, repo)` writes root/datasets/<repo>: the synthesizer's tuning collection,
the raw corpora (falcon-refinedweb, MedRAG/pubmed, financial news), the instruction data
(OpenOrca, FLAN) and MMLU, each in the real repository's layout (ipt_utils/hub_mirror.py: what
every mirror shares). The repos' config names are hub knowledge that profile validation uses
too: they live in ipt_utils/schema.py (`HUB_DATASET_CONFIGS`), and the mirrors write exactly those.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .hub_mirror import (MIRROR_NOTE, build_atomically, chunks, configs_block, dataset_dir, fixture_rows,
                         known_repo, readme, write_parquet)
from .schema import MMLU, MMLU_SUBJECTS, SYNTH_COLLECTION, SYNTH_COLLECTION_CONFIGS


# =========================================================================== the synthesizer collection

# The collection's data folders, one per config of schema.SYNTH_COLLECTION_CONFIGS; each holds
# <folder>/shard/*.jsonl (split train). Config AQUA_RAT reads folder AQUA_RAT_yes_opt/.
COLLECTION_CONFIG_FOLDER = {c: ("AQUA_RAT_yes_opt" if c == "AQUA_RAT" else c) for c in SYNTH_COLLECTION_CONFIGS}
COLLECTION_FOLDERS = tuple(COLLECTION_CONFIG_FOLDER.values())

# Which fixture family (rc_name in fixtures/synth_collection.jsonl) reads most like each config;
# configs not listed draw from every family.
_FAMILY = {
    "squad": "squad_like", "NewsQA": "squad_like", "TriviaQA": "squad_like", "COVID_QA": "pubmedqa_like",
    "HotpotQA": "hotpot_like", "race": "race_like", "race_c": "race_like", "dream": "race_like",
    "mctest": "race_like", "PubMedQA_no_opt": "pubmedqa_like", "PubMedQA_yes_opt": "pubmedqa_like",
    "ConvFinQA": "convfinqa_like", "CosmosQA": "cosmos_like", "ECQA": "ecqa_like", "QASC": "ecqa_like",
    "LogiQA": "logiqa_like", "ReClor": "logiqa_like"
}
_OPTIONS = "\nOptions:\n"


def _drop_options(q: str) -> str:
    """A question without its option list (the collection's `_no_opt` variants)."""
    if _OPTIONS not in q:
        return q
    head, _, rest = q.partition(_OPTIONS)
    tail = [line for line in rest.split("\n") if not line.startswith("- ")]
    return "\n".join([head] + [t for t in tail if t])


def _collection_records(config: str, rows: int, seed: int) -> list[dict]:
    pool = fixture_rows("synth_collection.jsonl")
    family = _FAMILY.get(config)
    if family:
        pool = [r for r in pool if r["rc_name"] == family]
    if config == "AQUA_RAT":  # math word problems with options and a rationale
        pool = [r for r in pool if r["QA_type"] == "multiple-choice+CoT"]
    elif config.endswith("_yes_opt"):
        pool = [r for r in pool if r["QA_type"].startswith("multiple-choice")] or pool
    rng = random.Random(f"{seed}:{config}")
    picked = [pool[i % len(pool)] for i in rng.sample(range(max(rows, len(pool))), rows)]
    out = []
    for rec in picked:
        qa = [{"Q": p["Q"], "A": p["A"]} for p in rec["QA_list"]]
        qa_type = rec["QA_type"]
        if config.endswith("_no_opt"):
            qa = [{"Q": _drop_options(p["Q"]), "A": p["A"]} for p in qa]
            qa_type = qa_type.replace("multiple-choice", "free-form")
        # Field names context / QA_list[{Q, A}] / QA_type / rc_name are unverified on the hub
        # (taken from the authors' description); rc_name holds the folder name here.
        out.append({"context": rec["context"], "QA_list": qa, "QA_type": qa_type,
                    "rc_name": COLLECTION_CONFIG_FOLDER[config]})
    return out


def _write_collection(d: Path, rows: int, seed: int, files: int) -> None:
    rows = rows or 12
    for config, folder in COLLECTION_CONFIG_FOLDER.items():
        recs = _collection_records(config, rows, seed)
        # Shard file names inside shard/ are unverified; the loader only globs *.jsonl.
        for i, part in enumerate(chunks(recs, files or 2)):
            path = d / folder / "shard" / f"{i:05d}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    configs = {c: {"train": f"{f}/shard/*.jsonl"} for c, f in COLLECTION_CONFIG_FOLDER.items()}
    (d / "README.md").write_text(readme(
        {"license": "other", "configs": configs_block(configs)},
        "Instruction synthesizer tuning collection (mirror)", MIRROR_NOTE), encoding="utf-8")


# =========================================================================== raw corpora

def _raw_texts(domain: str) -> list[str]:
    return [r["text"] for r in fixture_rows("raw_corpus.jsonl") if r["domain"] == domain]


def _take(texts: list[str], rows: int, seed: int, salt: str) -> list[str]:
    """rows texts drawn in a seeded order, cycling when rows exceeds the pool."""
    order = list(range(len(texts)))
    random.Random(f"{seed}:{salt}").shuffle(order)
    return [texts[order[i % len(order)]] for i in range(rows)]


REFINEDWEB_FILES = 5534  # the real number of data files (the mirror's names carry it)
_FAKE_HASH = "0123456789abcdef"  # real names end in a per-file content hash


def _write_refinedweb(d: Path, rows: int, seed: int, files: int) -> None:
    import datetime as dt

    import pyarrow as pa

    files = files or 8
    rows = rows or 8 * files
    schema = pa.schema([("content", pa.string()), ("url", pa.string()), ("timestamp", pa.timestamp("s")),
                        ("dump", pa.string()), ("segment", pa.string()),
                        ("image_urls", pa.list_(pa.list_(pa.string())))])
    texts = _take(_raw_texts("general"), rows, seed, "refinedweb")
    recs = [{"content": t, "url": f"https://example.org/page/{i}",
             "timestamp": dt.datetime(2022, 1, 1) + dt.timedelta(hours=i), "dump": "CC-MAIN-2022-05",
             "segment": f"1642320302715.{i % 100:02d}", "image_urls": []} for i, t in enumerate(texts)]
    if files > len(recs):
        raise ValueError(f"falcon-refinedweb mirror: {files} files need at least as many rows, got {rows}")
    for i, part in enumerate(chunks(recs, files)):
        write_parquet(d / "data" / f"train-{i:05d}-of-{REFINEDWEB_FILES:05d}-{_FAKE_HASH}.parquet", part, schema)
    # The real card declares dataset_info features but no `configs:` (default config, split train).
    feats = [{"name": "content", "dtype": "string"}, {"name": "url", "dtype": "string"},
             {"name": "timestamp", "dtype": "timestamp[s]"}, {"name": "dump", "dtype": "string"},
             {"name": "segment", "dtype": "string"},
             {"name": "image_urls", "sequence": {"sequence": "string"}}]
    (d / "README.md").write_text(readme({"dataset_info": {"features": feats}, "license": "odc-by"},
                                        "Falcon RefinedWeb (mirror)", MIRROR_NOTE), encoding="utf-8")


def _write_pubmed(d: Path, rows: int, seed: int, files: int) -> None:
    # MedRAG/pubmed: chunk/pubmed23nNNNN.jsonl, fields id, title, content, contents, PMID (from its
    # card and file listing). The id format and PMID type are unverified.
    files = files or 3
    texts = _take(_raw_texts("biomedicine"), rows or 24, seed, "pubmed")
    recs = []
    for i, t in enumerate(texts):
        title, _, rest = t.partition(". ")
        title, content = title.strip() + ".", rest.strip() or t
        recs.append({"id": "", "title": title, "content": content, "contents": f"{title} {content}",
                     "PMID": str(30000000 + i)})
    for n, part in enumerate(chunks(recs, files), start=1):
        for k, r in enumerate(part):
            r["id"] = f"pubmed23n{n:04d}_{k}"
        path = d / "chunk" / f"pubmed23n{n:04d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    (d / "README.md").write_text(readme({"task_categories": ["question-answering"], "language": ["en"]},
                                        "The PubMed corpus in MedRAG (mirror)", MIRROR_NOTE), encoding="utf-8")


# The real repository's two data files (names from its file listing).
FINANCE_FILES = ("train-00000-of-00002-a3f58f0eb179f9ed.parquet", "train-00001-of-00002-50e0d6558d13575f.parquet")


def _write_finance(d: Path, rows: int, seed: int, files: int) -> None:
    import pyarrow as pa

    texts = _take(_raw_texts("finance"), rows or 16, seed, "finance")
    recs = [{"title": t.split(". ")[0][:80], "text": t, "url": f"https://example.com/news/{i}"}
            for i, t in enumerate(texts)]
    schema = pa.schema([("title", pa.string()), ("text", pa.string()), ("url", pa.string())])
    for name, part in zip(FINANCE_FILES, chunks(recs, len(FINANCE_FILES))):
        write_parquet(d / "data" / name, part, schema)
    feats = [{"name": c, "dtype": "string"} for c in ("title", "text", "url")]
    (d / "README.md").write_text(readme({"dataset_info": {"features": feats}},
                                        "financial-news-articles (mirror)", MIRROR_NOTE), encoding="utf-8")


# =========================================================================== instruction data

OPENORCA_FILES = ("1M-GPT4-Augmented.parquet", "3_5M-GPT3_5-Augmented.parquet")
_SYSTEM_PROMPTS = ("", "You are an AI assistant. You will be given a task. You must generate a detailed answer.",
                   "You are a helpful assistant, who always provide explanation.")


def _write_openorca(d: Path, rows: int, seed: int, files: int) -> None:
    import pyarrow as pa

    pool = fixture_rows("general_instructions.jsonl")
    rows = rows or 24
    rng = random.Random(f"{seed}:openorca")
    sources = ("flan", "niv", "t0", "cot")
    recs = [{"id": f"{sources[i % 4]}.{rng.randrange(10**6)}", "system_prompt": _SYSTEM_PROMPTS[i % 3],
             "question": pool[i % len(pool)]["question"], "response": pool[i % len(pool)]["response"]}
            for i in range(rows)]
    schema = pa.schema([(c, pa.string()) for c in ("id", "system_prompt", "question", "response")])
    # Both files at the repository root, no `configs:` (unverified: the card may declare none).
    for name, part in zip(OPENORCA_FILES, chunks(recs, 2)):
        write_parquet(d / name, part, schema)
    (d / "README.md").write_text(readme({"license": "mit", "language": ["en"], "pretty_name": "Open Orca"},
                                        "OpenOrca (mirror)", MIRROR_NOTE), encoding="utf-8")


# The 14 Dask-sharded sub-mixture folders (names from the card's `du` listing and the file tree);
# each holds part.N.parquet. Unverified: the column names below (the FLAN v2 export's), and the
# top-level *_submix_data.json files, which we do not mirror (the loader keeps the parquet files).
FLAN_FOLDERS = ("cot_fsopt_data", "cot_zsopt_data", "dialog_fsopt_data", "dialog_zsopt_data",
                "flan_fsnoopt_data", "flan_fsopt_data", "flan_zsnoopt_data", "flan_zsopt_data",
                "niv2_fsopt_data", "niv2_zsopt_data", "t0_fsnoopt_data", "t0_fsopt_data",
                "t0_zsnoopt_data", "t0_zsopt_data")


def _write_flan(d: Path, rows: int, seed: int, files: int) -> None:
    import pyarrow as pa

    pool = fixture_rows("instructions.jsonl")
    schema = pa.schema([("inputs", pa.string()), ("targets", pa.string()), ("_template_idx", pa.int64()),
                        ("_task_source", pa.string()), ("_task_name", pa.string()),
                        ("_template_type", pa.string())])
    per = rows or 4
    for folder in FLAN_FOLDERS:
        source, kind = folder.split("_")[:2]
        rng = random.Random(f"{seed}:{folder}")
        recs = []
        for _ in range(per):
            r = pool[rng.randrange(len(pool))]
            recs.append({"inputs": r["instruction"], "targets": r["response"], "_template_idx": rng.randrange(10),
                         "_task_source": {"flan": "Flan2021", "t0": "P3", "niv2": "NIv2", "cot": "CoT",
                                          "dialog": "Dialog"}[source],
                         "_task_name": r["task"], "_template_type": kind})
        for i, part in enumerate(chunks(recs, files or 2)):
            write_parquet(d / folder / f"part.{i}.parquet", part, schema)
    (d / "README.md").write_text(readme({"license": "cc-by-4.0", "language": ["en"]},
                                        "FLAN Collection (mirror)", MIRROR_NOTE), encoding="utf-8")


# =========================================================================== MMLU

MMLU_SPLITS = ("test", "validation", "dev")
_MMLU_FEATURES = {"question": {"dtype": "string", "_type": "Value"},
                  "subject": {"dtype": "string", "_type": "Value"},
                  "choices": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
                  "answer": {"names": ["A", "B", "C", "D"], "_type": "ClassLabel"}}


def _write_mmlu(d: Path, rows: int, seed: int, files: int) -> None:
    """Every subject config (so lm-eval's `mmlu` group finds all 57), `all` (their union plus
    auxiliary_train) and `auxiliary_train`; files `<config>/<split>-00000-of-00001.parquet`.
    rows = test questions per subject (validation gets half, dev always 5, as on the hub)."""
    import pyarrow as pa

    pool = fixture_rows("eval/mmlu.jsonl")
    schema = pa.schema([("question", pa.string()), ("subject", pa.string()),
                        ("choices", pa.list_(pa.string())), ("answer", pa.int64())])
    per_split = {"test": rows or 4, "validation": max(1, (rows or 4) // 2), "dev": 5}
    rng = random.Random(f"{seed}:mmlu")
    everything = {s: [] for s in MMLU_SPLITS}
    for subject in MMLU_SUBJECTS:
        for split in MMLU_SPLITS:
            recs = []
            for _ in range(per_split[split]):
                r = pool[rng.randrange(len(pool))]
                recs.append({"question": r["question"], "subject": subject, "choices": list(r["choices"]),
                             "answer": int(r["answer"])})
            everything[split] += recs
            write_parquet(d / subject / f"{split}-00000-of-00001.parquet", recs, schema, _MMLU_FEATURES)
    aux = [{**everything["test"][i], "subject": ""} for i in range(min(16, len(everything["test"])))]
    for split in MMLU_SPLITS:
        write_parquet(d / "all" / f"{split}-00000-of-00001.parquet", everything[split], schema, _MMLU_FEATURES)
    write_parquet(d / "all" / "auxiliary_train-00000-of-00001.parquet", aux, schema, _MMLU_FEATURES)
    write_parquet(d / "auxiliary_train" / "train-00000-of-00001.parquet", aux, schema, _MMLU_FEATURES)
    configs = {c: {s: f"{c}/{s}-*" for s in MMLU_SPLITS} for c in MMLU_SUBJECTS}
    configs["all"] = {**{s: f"all/{s}-*" for s in MMLU_SPLITS}, "auxiliary_train": "all/auxiliary_train-*"}
    configs["auxiliary_train"] = {"train": "auxiliary_train/train-*"}
    (d / "README.md").write_text(readme({"language": ["en"], "license": "mit", "configs": configs_block(configs)},
                                        "MMLU (mirror)", MIRROR_NOTE), encoding="utf-8")


# =========================================================================== dataset registry

@dataclass(frozen=True)
class DatasetBuilder:
    write: Callable[[Path, int, int, int], None]  # (dir, rows, seed, files); 0 = the default
    layout: str  # one line: what the mirror reproduces


DATASETS: dict[str, DatasetBuilder] = {
    SYNTH_COLLECTION: DatasetBuilder(
        _write_collection, "35 folders <folder>/shard/*.jsonl, README configs (AQUA_RAT -> AQUA_RAT_yes_opt/)"),
    "tiiuae/falcon-refinedweb": DatasetBuilder(_write_refinedweb,
                                               "data/train-NNNNN-of-05534-<hash>.parquet, column content"),
    "Open-Orca/OpenOrca": DatasetBuilder(_write_openorca, "two parquet files at the root"),
    "Open-Orca/FLAN": DatasetBuilder(_write_flan, "<submix>_data/part.N.parquet, inputs/targets"),
    MMLU: DatasetBuilder(_write_mmlu, "<config>/<split>-00000-of-00001.parquet"),
    "MedRAG/pubmed": DatasetBuilder(_write_pubmed, "chunk/pubmed23nNNNN.jsonl, column content"),
    "ashraq/financial-news-articles": DatasetBuilder(_write_finance, "data/train-0000N-of-00002-<hash>.parquet"),
}


def build_dataset(root, repo: str, *, rows: int = 0, seed: int = 0, files: int = 0) -> Path:
    """Write (or reuse) the mirror of dataset `repo` under root/datasets/<repo>.

    rows: records per config (0 = a small default); files: data files where the repo shards
    its data (0 = default; falcon-refinedweb's default 8 is what shard_by: files splits)."""
    b = known_repo("dataset", DATASETS, repo)
    return build_atomically(dataset_dir(root, repo), {"repo": repo, "rows": rows, "seed": seed, "files": files},
                            lambda d: b.write(d, rows, seed, files))
