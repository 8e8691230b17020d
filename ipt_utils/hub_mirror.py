"""Offline mirrors of the hub repositories the GPU profiles load.

Each mirror is a local directory laid out like the real hub repository (folder, config and
file names, file formats, splits, field names and types) and filled with a little
synthetic content made from the shipped fixtures, so the code path that reads the hub
(`datasets.load_dataset(dir, config, split=..., streaming=...)`,
`AutoModelForCausalLM/AutoTokenizer.from_pretrained(dir)`) runs in CI. A profile is
"rehearsed" by replacing `hf:NAME` with `hf:<dataset_dir>` (datasets) or the model dir.

Builds are deterministic for given arguments, atomic (temp dir + rename) and idempotent
(a marker file records the builder version and arguments; a matching mirror is reused).
Layout facts we could not read on the hub are marked `unverified` where they are used.
"""
from __future__ import annotations

import json
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .assets import TOKENIZER_CORPUS, _corpus_lines
from .format import render_example
from .io import DIR_MODE
from .packing import IGNORE
from .schema import HUB_PREFIX, hub_source

BUILDER_VERSION = 3
MARKER = ".hub_mirror.json"  # hidden: `datasets` ignores dot-files when it infers data files
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def dataset_dir(root: Path, repo: str) -> Path:
    return Path(root) / "datasets" / repo


def model_dir(root: Path, repo: str) -> Path:
    return Path(root) / "models" / repo


# =========================================================================== helpers

def _fixture(name: str) -> list[dict]:
    with open(FIXTURES / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _build_atomically(dest: Path, key: dict, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp)` into a fresh temp dir beside `dest` and rename it into place, unless
    `dest` already holds a finished build with the same key (the no-op rebuild)."""
    dest = Path(dest)
    key = {"builder_version": BUILDER_VERSION, **key}
    marker = dest / MARKER
    if marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == key:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        write(tmp)
        (tmp / MARKER).write_text(json.dumps(key, sort_keys=True) + "\n", encoding="utf-8")
        tmp.chmod(DIR_MODE)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _write_parquet(path: Path, rows: list[dict], schema, features: dict | None = None) -> None:
    """A parquet file; `features` (datasets' feature dict) is embedded in the schema metadata as
    `datasets.push_to_hub` does, so e.g. a ClassLabel column reads back as one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if features is not None:
        schema = schema.with_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _readme(front_matter: dict, title: str, body: str) -> str:
    import yaml

    head = yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True)
    return f"---\n{head}---\n\n# {title}\n\n{body}\n"


def _configs_block(configs: dict[str, dict[str, str]]) -> list[dict]:
    """config -> {split: glob} as the hub's README `configs:` list."""
    return [{"config_name": name, "data_files": [{"split": s, "path": p} for s, p in splits.items()]}
            for name, splits in configs.items()]


def _chunks(rows: list, n: int) -> list[list]:
    """`rows` split into n contiguous, near-equal, non-empty parts (fewer if rows < n)."""
    n = max(1, min(n, len(rows)))
    k, r = divmod(len(rows), n)
    out, start = [], 0
    for i in range(n):
        end = start + k + (i < r)
        out.append(rows[start:end])
        start = end
    return out


MIRROR_NOTE = ("Offline mirror written by ipt_utils.hub_mirror: the real repository's layout with a "
               "little synthetic content, for rehearsing the GPU profiles without the hub.")


# =========================================================================== the synthesizer collection

COLLECTION = "instruction-pretrain/ft-instruction-synthesizer-collection"
# The 35 data folders of the collection; each holds <folder>/shard/*.jsonl (split train).
COLLECTION_FOLDERS = (
    "AQUA_RAT_yes_opt", "COVID_QA", "CoQA", "ConvFinQA", "CosmosQA", "DoQA", "ECQA", "FairyTaleQA",
    "HotpotQA", "LogiQA", "NLQuAD", "NarrativeQA", "NewsQA", "PubMedQA_no_opt", "PubMedQA_yes_opt",
    "QASC", "QED", "QuaRTz", "Quac", "ROPES", "ReClor", "SpartQA", "TopiOCQA", "TriviaQA",
    "WikiTableQuestions", "bAbI", "dream", "mctest", "multirc", "qasper", "quail", "race", "race_c",
    "squad", "tweet_qa",
)
# Config names follow the folders, except that config AQUA_RAT reads AQUA_RAT_yes_opt/.
# There is no config "PubMedQA".
COLLECTION_CONFIG_FOLDER = {("AQUA_RAT" if f == "AQUA_RAT_yes_opt" else f): f for f in COLLECTION_FOLDERS}
COLLECTION_CONFIGS = tuple(COLLECTION_CONFIG_FOLDER)

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
    pool = _fixture("synth_collection.jsonl")
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
        for i, part in enumerate(_chunks(recs, files or 2)):
            path = d / folder / "shard" / f"{i:05d}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    configs = {c: {"train": f"{f}/shard/*.jsonl"} for c, f in COLLECTION_CONFIG_FOLDER.items()}
    (d / "README.md").write_text(_readme(
        {"license": "other", "configs": _configs_block(configs)},
        "Instruction synthesizer tuning collection (mirror)", MIRROR_NOTE), encoding="utf-8")


# =========================================================================== raw corpora

def _raw_texts(domain: str) -> list[str]:
    return [r["text"] for r in _fixture("raw_corpus.jsonl") if r["domain"] == domain]


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
    for i, part in enumerate(_chunks(recs, files)):
        _write_parquet(d / "data" / f"train-{i:05d}-of-{REFINEDWEB_FILES:05d}-{_FAKE_HASH}.parquet", part, schema)
    # The real card declares dataset_info features but no `configs:` (default config, split train).
    feats = [{"name": "content", "dtype": "string"}, {"name": "url", "dtype": "string"},
             {"name": "timestamp", "dtype": "timestamp[s]"}, {"name": "dump", "dtype": "string"},
             {"name": "segment", "dtype": "string"},
             {"name": "image_urls", "sequence": {"sequence": "string"}}]
    (d / "README.md").write_text(_readme({"dataset_info": {"features": feats}, "license": "odc-by"},
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
    for n, part in enumerate(_chunks(recs, files), start=1):
        for k, r in enumerate(part):
            r["id"] = f"pubmed23n{n:04d}_{k}"
        path = d / "chunk" / f"pubmed23n{n:04d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    (d / "README.md").write_text(_readme({"task_categories": ["question-answering"], "language": ["en"]},
                                         "The PubMed corpus in MedRAG (mirror)", MIRROR_NOTE), encoding="utf-8")


# The real repository's two data files (names from its file listing).
FINANCE_FILES = ("train-00000-of-00002-a3f58f0eb179f9ed.parquet", "train-00001-of-00002-50e0d6558d13575f.parquet")


def _write_finance(d: Path, rows: int, seed: int, files: int) -> None:
    import pyarrow as pa

    texts = _take(_raw_texts("finance"), rows or 16, seed, "finance")
    recs = [{"title": t.split(". ")[0][:80], "text": t, "url": f"https://example.com/news/{i}"}
            for i, t in enumerate(texts)]
    schema = pa.schema([("title", pa.string()), ("text", pa.string()), ("url", pa.string())])
    for name, part in zip(FINANCE_FILES, _chunks(recs, len(FINANCE_FILES))):
        _write_parquet(d / "data" / name, part, schema)
    feats = [{"name": c, "dtype": "string"} for c in ("title", "text", "url")]
    (d / "README.md").write_text(_readme({"dataset_info": {"features": feats}},
                                         "financial-news-articles (mirror)", MIRROR_NOTE), encoding="utf-8")


# =========================================================================== instruction data

OPENORCA_FILES = ("1M-GPT4-Augmented.parquet", "3_5M-GPT3_5-Augmented.parquet")
_SYSTEM_PROMPTS = ("", "You are an AI assistant. You will be given a task. You must generate a detailed answer.",
                   "You are a helpful assistant, who always provide explanation.")


def _write_openorca(d: Path, rows: int, seed: int, files: int) -> None:
    import pyarrow as pa

    pool = _fixture("general_instructions.jsonl")
    rows = rows or 24
    rng = random.Random(f"{seed}:openorca")
    sources = ("flan", "niv", "t0", "cot")
    recs = [{"id": f"{sources[i % 4]}.{rng.randrange(10**6)}", "system_prompt": _SYSTEM_PROMPTS[i % 3],
             "question": pool[i % len(pool)]["question"], "response": pool[i % len(pool)]["response"]}
            for i in range(rows)]
    schema = pa.schema([(c, pa.string()) for c in ("id", "system_prompt", "question", "response")])
    # Both files at the repository root, no `configs:` (unverified: the card may declare none).
    for name, part in zip(OPENORCA_FILES, _chunks(recs, 2)):
        _write_parquet(d / name, part, schema)
    (d / "README.md").write_text(_readme({"license": "mit", "language": ["en"], "pretty_name": "Open Orca"},
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

    pool = _fixture("instructions.jsonl")
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
        for i, part in enumerate(_chunks(recs, files or 2)):
            _write_parquet(d / folder / f"part.{i}.parquet", part, schema)
    (d / "README.md").write_text(_readme({"license": "cc-by-4.0", "language": ["en"]},
                                         "FLAN Collection (mirror)", MIRROR_NOTE), encoding="utf-8")


# =========================================================================== MMLU

MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine",
    "college_physics", "computer_security", "conceptual_physics", "econometrics", "electrical_engineering",
    "elementary_mathematics", "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics", "high_school_mathematics",
    "high_school_microeconomics", "high_school_physics", "high_school_psychology", "high_school_statistics",
    "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality",
    "international_law", "jurisprudence", "logical_fallacies", "machine_learning", "management",
    "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy",
    "virology", "world_religions",
)
MMLU_CONFIGS = MMLU_SUBJECTS + ("all", "auxiliary_train")
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

    pool = _fixture("eval/mmlu.jsonl")
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
            _write_parquet(d / subject / f"{split}-00000-of-00001.parquet", recs, schema, _MMLU_FEATURES)
    aux = [{**everything["test"][i], "subject": ""} for i in range(min(16, len(everything["test"])))]
    for split in MMLU_SPLITS:
        _write_parquet(d / "all" / f"{split}-00000-of-00001.parquet", everything[split], schema, _MMLU_FEATURES)
    _write_parquet(d / "all" / "auxiliary_train-00000-of-00001.parquet", aux, schema, _MMLU_FEATURES)
    _write_parquet(d / "auxiliary_train" / "train-00000-of-00001.parquet", aux, schema, _MMLU_FEATURES)
    configs = {c: {s: f"{c}/{s}-*" for s in MMLU_SPLITS} for c in MMLU_SUBJECTS}
    configs["all"] = {**{s: f"all/{s}-*" for s in MMLU_SPLITS}, "auxiliary_train": "all/auxiliary_train-*"}
    configs["auxiliary_train"] = {"train": "auxiliary_train/train-*"}
    (d / "README.md").write_text(_readme({"language": ["en"], "license": "mit", "configs": _configs_block(configs)},
                                         "MMLU (mirror)", MIRROR_NOTE), encoding="utf-8")


# =========================================================================== dataset registry

@dataclass(frozen=True)
class DatasetBuilder:
    write: Callable[[Path, int, int, int], None]  # (dir, rows, seed, files); 0 = the default
    configs: tuple[str, ...] | None  # the repo's config names, None = only the default config
    layout: str  # one line: what the mirror reproduces


DATASETS: dict[str, DatasetBuilder] = {
    COLLECTION: DatasetBuilder(_write_collection, COLLECTION_CONFIGS,
                               "35 folders <folder>/shard/*.jsonl, README configs (AQUA_RAT -> AQUA_RAT_yes_opt/)"),
    "tiiuae/falcon-refinedweb": DatasetBuilder(_write_refinedweb, None,
                                               "data/train-NNNNN-of-05534-<hash>.parquet, column content"),
    "Open-Orca/OpenOrca": DatasetBuilder(_write_openorca, None, "two parquet files at the root"),
    "Open-Orca/FLAN": DatasetBuilder(_write_flan, None, "<submix>_data/part.N.parquet, inputs/targets"),
    "cais/mmlu": DatasetBuilder(_write_mmlu, MMLU_CONFIGS, "<config>/<split>-00000-of-00001.parquet"),
    "MedRAG/pubmed": DatasetBuilder(_write_pubmed, None, "chunk/pubmed23nNNNN.jsonl, column content"),
    "ashraq/financial-news-articles": DatasetBuilder(_write_finance, None, "data/train-0000N-of-00002-<hash>.parquet"),
}


def _known(kind: str, registry: dict, repo: str):
    if repo not in registry:
        raise ValueError(f"no {kind} mirror for {repo!r}; known: {sorted(registry)}")
    return registry[repo]


def build_dataset(root, repo: str, *, rows: int = 0, seed: int = 0, files: int = 0) -> Path:
    """Write (or reuse) the mirror of dataset `repo` under root/datasets/<repo>.

    rows: records per config (0 = a small default); files: data files where the repo shards
    its data (0 = default; falcon-refinedweb's default 8 is what shard_by: files splits)."""
    b = _known("dataset", DATASETS, repo)
    return _build_atomically(dataset_dir(root, repo), {"repo": repo, "rows": rows, "seed": seed, "files": files},
                             lambda d: b.write(d, rows, seed, files))


def _readme_configs(directory: Path) -> list[str] | None:
    readme = directory / "README.md"
    if not readme.exists():
        return None
    import yaml

    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return None
    front = yaml.safe_load(text.split("---", 2)[1]) or {}
    configs = front.get("configs")
    return [c["config_name"] for c in configs] if isinstance(configs, list) else None


def dataset_configs(source: str) -> list[str] | None:
    """The config names of `hf:NAME[:CONFIG]` (or a bare name / local dataset dir): a local
    dir's README `configs:`, else the known list of a repo we mirror; None when unknown."""
    name, _ = hub_source(source if source.startswith(HUB_PREFIX) else HUB_PREFIX + source)
    p = Path(name)
    if p.is_dir():
        return _readme_configs(p)
    b = DATASETS.get(name)
    return list(b.configs) if b and b.configs else None


# =========================================================================== tokenizers
# Tiny tokenizers of the same KIND as the real repos' (model type, pre-tokenizer, special
# tokens and their ids' placement, BOS/EOS/pad behaviour), trained on the fixtures in
# milliseconds. Written as tokenizer.json + tokenizer_config.json + special_tokens_map.json.

_HUGE = 1000000000000000019884624838656  # model_max_length the hub configs carry when unset
# Llama-3's pre-tokenizer split (tiktoken style: contractions, letters, 1-3 digits, punctuation).
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_BLOOM_SPLIT = r" ?[^(\s|[.,!?…。，、।۔،])]+"


def _train_bpe(pre_tokenizer, vocab_size: int, special_tokens: list[str], byte_level: bool):
    """A BPE Tokenizer trained on the fixture texts (special_tokens get the first ids). Without
    byte_level, printable ASCII is still in the alphabet (a real 32k vocab has every one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else [chr(c) for c in range(33, 127)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(_corpus_lines(TOKENIZER_CORPUS), trainer=trainer)
    return tok


def _bpe_parts(tok) -> tuple[dict, list]:
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def _added(content: str, special: bool = True) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special}


def _save_tokenizer(tok, out: Path, config: dict, special_map: dict) -> None:
    tok.save(str(out / "tokenizer.json"))
    decoder = {str(tok.token_to_id(t)): _added(t) for t in _specials_of(tok)}
    cfg = {**config, "added_tokens_decoder": decoder}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    (out / "special_tokens_map.json").write_text(
        json.dumps({k: _added(v) for k, v in special_map.items()}, indent=2) + "\n", encoding="utf-8")


def _specials_of(tok) -> list[str]:
    return [a["content"] for a in json.loads(tok.to_str())["added_tokens"] if a["special"]]


def _sentencepiece_kind(out: Path, vocab_size: int = 2048) -> None:
    """Mistral / Llama-2 kind: BPE over `▁`-marked text with byte fallback (`<0x00>`..`<0xFF>`),
    `<unk>`=0 `<s>`=1 `</s>`=2, BOS added by the post-processor, no pad token; markup such as
    `<CON>` is plain text (no added tokens), as on the real Mistral tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    specials = ["<unk>", "<s>", "</s>"]
    trained = _train_bpe(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
                         vocab_size - len(specials) - 256, [], byte_level=False)
    vocab, merges = _bpe_parts(trained)
    full = {t: i for i, t in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)])}
    for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        full.setdefault(t, len(full))
    tok = Tokenizer(models.BPE(vocab=full, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    _save_tokenizer(tok, out, {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": None, "clean_up_tokenization_spaces": False, "legacy": True,
        "model_max_length": _HUGE, "spaces_between_special_tokens": False, "tokenizer_class": "LlamaTokenizer",
        "use_default_system_prompt": False, "additional_special_tokens": [], "sp_model_kwargs": {},
    }, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})


def _llama3_specials() -> list[str]:
    """The 256 special tokens after the BPE vocab, in Llama-3's order."""
    names = ["<|begin_of_text|>", "<|end_of_text|>"] + [f"<|reserved_special_token_{i}|>" for i in range(4)]
    names += ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
    return names + [f"<|reserved_special_token_{i}|>" for i in range(5, 5 + 256 - len(names))]


def _llama3_kind(out: Path, vocab_size: int = 2048) -> None:
    """Llama-3 kind: tiktoken-style byte-level BPE (no unk), 256 special tokens placed after the
    vocab (`<|begin_of_text|>` first), BOS added by a post-processor, no pad token."""
    from tokenizers import AddedToken, Regex, decoders, pre_tokenizers, processors

    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = _train_bpe(pre, vocab_size - 256, [], byte_level=True)
    tok.decoder = decoders.ByteLevel()
    specials = _llama3_specials()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    bos = tok.token_to_id(specials[0])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{specials[0]} $A", pair=f"{specials[0]} $A {specials[0]} $B",
                                      special_tokens=[(specials[0], bos)])])
    _save_tokenizer(tok, out, {
        "bos_token": specials[0], "eos_token": specials[1], "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"], "model_max_length": _HUGE,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }, {"bos_token": specials[0], "eos_token": specials[1]})


def _neox_kind(out: Path, vocab_size: int = 2048) -> None:
    """GPT-NeoX (Pythia) kind: byte-level BPE, `<|endoftext|>`=0 is bos = eos = unk,
    `<|padding|>`=1 exists but is not the pad token; nothing added around the text."""
    from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors

    specials = ["<|endoftext|>", "<|padding|>"]
    tok = _train_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), vocab_size, specials, byte_level=True)
    tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    eot = specials[0]
    _save_tokenizer(tok, out, {
        "add_prefix_space": False, "bos_token": eot, "eos_token": eot, "unk_token": eot,
        "clean_up_tokenization_spaces": True, "model_max_length": _HUGE, "tokenizer_class": "GPTNeoXTokenizer",
    }, {"bos_token": eot, "eos_token": eot, "unk_token": eot})


def _bloom_kind(out: Path, vocab_size: int = 2048) -> None:
    """BLOOM kind: byte-level BPE with `<unk>`=0 `<s>`=1 `</s>`=2 `<pad>`=3, a pad token, left
    padding, and no BOS/EOS added around the text."""
    from tokenizers import AddedToken, Regex, decoders, pre_tokenizers, processors

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_BLOOM_SPLIT), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = _train_bpe(pre, vocab_size, specials, byte_level=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    _save_tokenizer(tok, out, {
        "add_prefix_space": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": "<pad>", "padding_side": "left", "tokenizer_class": "BloomTokenizerFast",
        "model_max_length": _HUGE, "clean_up_tokenization_spaces": False,
    }, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})


TOKENIZER_KINDS = {"sentencepiece": _sentencepiece_kind, "llama3": _llama3_kind,
                   "neox": _neox_kind, "bloom": _bloom_kind}


# =========================================================================== models

@dataclass(frozen=True)
class ModelSpec:
    arch: str  # config class family: mistral | llama | gpt_neox | bloom
    tokenizer: str  # a TOKENIZER_KINDS key
    shards: int  # safetensors files on the hub (1 = model.safetensors, else an index + N files)
    dtype: str  # the dtype the hub weights are stored in
    config: dict  # architecture fields beyond the tiny sizes (as in the real config.json)
    generation: dict  # generation_config.json fields besides bos/eos
    writes_markup: bool = False  # a synthesizer: briefly taught the markup, so a rehearsal yields pairs


TINY = {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 256}
_MISTRAL = {"max_position_embeddings": 32768, "rope_theta": 10000.0, "sliding_window": 4096,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": False}

MODELS: dict[str, ModelSpec] = {
    "mistralai/Mistral-7B-v0.1": ModelSpec("mistral", "sentencepiece", 2, "bfloat16", _MISTRAL, {}),
    # A Mistral-7B fine-tune: shard count (3) and dtype unverified.
    "instruction-pretrain/instruction-synthesizer": ModelSpec("mistral", "sentencepiece", 3, "bfloat16", _MISTRAL, {},
                                                              writes_markup=True),
    "meta-llama/Meta-Llama-3-8B": ModelSpec("llama", "llama3", 4, "bfloat16", {
        "max_position_embeddings": 8192, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False}, {}),
    # Single model.safetensors; fp16 storage unverified.
    "EleutherAI/pythia-1b": ModelSpec("gpt_neox", "neox", 1, "float16", {
        "max_position_embeddings": 2048, "rotary_pct": 0.25, "rotary_emb_base": 10000,
        "use_parallel_residual": True, "tie_word_embeddings": False}, {}),
    # Single model.safetensors, tied embeddings, ALiBi (no positions); fp16 storage unverified.
    "bigscience/bloom-3b": ModelSpec("bloom", "bloom", 1, "float16", {"tie_word_embeddings": True},
                                     {"pad_token_id": 3}),
}


def _model_config(spec: ModelSpec, tok_dir: Path):
    """The tiny transformers config of `spec`, token ids read from the written tokenizer."""
    from transformers import BloomConfig, GPTNeoXConfig, LlamaConfig, MistralConfig
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    cfg_tok = json.loads((tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    bos, eos = tok.token_to_id(cfg_tok["bos_token"]), tok.token_to_id(cfg_tok["eos_token"])
    vocab = tok.get_vocab_size()
    t = TINY
    if spec.arch in ("mistral", "llama"):
        cls = MistralConfig if spec.arch == "mistral" else LlamaConfig
        return cls(vocab_size=vocab, hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
                   num_hidden_layers=t["num_layers"], num_attention_heads=t["num_heads"],
                   num_key_value_heads=t["num_kv_heads"], head_dim=t["hidden_size"] // t["num_heads"],
                   bos_token_id=bos, eos_token_id=eos, **spec.config)
    if spec.arch == "gpt_neox":
        # Pythia's embedding matrix is padded beyond the tokenizer (50304 > 50277 tokens).
        return GPTNeoXConfig(vocab_size=-(-vocab // 128) * 128 + 128, hidden_size=t["hidden_size"],
                             intermediate_size=4 * t["hidden_size"], num_hidden_layers=t["num_layers"],
                             num_attention_heads=t["num_heads"], bos_token_id=bos, eos_token_id=eos, **spec.config)
    if spec.arch == "bloom":
        return BloomConfig(vocab_size=-(-vocab // 128) * 128, hidden_size=t["hidden_size"], n_layer=t["num_layers"],
                           n_head=t["num_heads"], bos_token_id=bos, eos_token_id=eos, pad_token_id=3, **spec.config)
    raise ValueError(f"unknown architecture {spec.arch!r}")


def _reshard(out: Path, shards: int) -> None:
    """Split model.safetensors into model-0000k-of-0000N.safetensors + model.safetensors.index.json,
    the layout of the real multi-file checkpoints (contiguous groups of near-equal bytes)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    single = out / "model.safetensors"
    with safe_open(str(single), "pt") as f:
        meta = f.metadata() or {"format": "pt"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    names = list(tensors)
    if len(names) < shards:
        raise ValueError(f"{len(names)} tensors cannot fill {shards} shards")
    sizes = [tensors[n].numel() * tensors[n].element_size() for n in names]
    total, cum, starts = sum(sizes), 0, [0]
    for i, size in enumerate(sizes):  # a shard starts where the bytes so far pass k/N of the total
        if len(starts) < shards and cum >= total * len(starts) / shards and i > starts[-1]:
            starts.append(i)
        cum += size
    while len(starts) < shards:  # too few boundaries (one huge tensor): split off the tail
        starts.append(len(names) - (shards - len(starts)))
    starts = sorted(set(starts))
    groups = [names[a:b] for a, b in zip(starts, starts[1:] + [len(names)])]
    weight_map = {}
    for k, group in enumerate(groups, start=1):
        fname = f"model-{k:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in group}, str(out / fname), metadata=meta)
        weight_map.update({n: fname for n in group})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    single.unlink()


def _teach_markup(model, tok_dir: Path, seed: int, steps: int = 400, batch: int = 8, max_len: int = 192) -> None:
    """A few hundred short fp32 steps on the shipped tuning fixtures in the synthesizer's markup,
    so the tiny "released synthesizer" writes parseable pairs and a rehearsal exercises chains,
    histories and documents, not only empty generations (about 20 s on 2 idle cores)."""
    import random

    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    rows = [r for r in _fixture("synth_collection.jsonl") if r.get("QA_list")]
    seqs = [tok(render_example(r["context"], [(qa["Q"], qa["A"]) for qa in r["QA_list"]]),
                add_special_tokens=False)["input_ids"][:max_len] for r in rows]
    rng, opt = random.Random(seed), torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        chosen = rng.sample(seqs, min(batch, len(seqs)))
        n = max(map(len, chosen))
        ids = torch.tensor([s + [tok.eos_token_id] * (n - len(s)) for s in chosen])
        labels = torch.tensor([s + [IGNORE] * (n - len(s)) for s in chosen])
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def _write_model(out: Path, spec: ModelSpec, seed: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    TOKENIZER_KINDS[spec.tokenizer](out)
    config = _model_config(spec, out)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if spec.writes_markup:
        _teach_markup(model, out, seed)
    model = model.to(getattr(torch, spec.dtype))
    model.generation_config.bos_token_id = config.bos_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    for k, v in spec.generation.items():
        setattr(model.generation_config, k, v)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="100GB")
    if spec.shards > 1:
        _reshard(out, spec.shards)


def build_model(root, repo: str, *, seed: int = 0) -> Path:
    """Write (or reuse) a tiny random-weight mirror of model `repo` under root/models/<repo>:
    the real architecture class and tokenizer kind, config.json, generation_config.json,
    safetensors sharded as on the hub, tokenizer.json + tokenizer_config.json + special_tokens_map.json."""
    spec = _known("model", MODELS, repo)
    return _build_atomically(model_dir(root, repo), {"repo": repo, "seed": seed},
                             lambda d: _write_model(d, spec, seed))
