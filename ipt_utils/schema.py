"""A small typed-schema validator for profiles.

Each stage declares its parameter section as a dataclass whose fields carry
constraints in their metadata (see `spec`). `validate` walks a dataclass type and a
plain mapping (from YAML) and returns an instance, or raises `SchemaError` listing
every problem with its dotted key and what was expected. Every key is required:
profiles must spell out the same keys, so a diff between profiles shows exactly
what changes with scale.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent

# Prefixes understood by `kind="source"` / `kind="model"` fields.
HUB_PREFIX = "hf:"  # loaded by name from the Hugging Face hub
STAGE_PREFIX = "stage:"  # produced by an earlier stage of the same run
TINY = "tiny"  # built from config by ipt_utils.assets


class SchemaError(ValueError):
    """One or more problems in a profile; `problems` is a list of (key, message)."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "<profile>"):
        self.problems = problems
        self.source = source
        lines = [f"{source}: {key}: {msg}" for key, msg in problems]
        super().__init__("invalid profile\n" + "\n".join(lines))


def spec(*, ge=None, gt=None, le=None, lt=None, choices=None, kind=None, help=""):
    """A required dataclass field with constraints.

    kind: "path"   - a local file/dir that must exist (relative to the repo root);
          "source" - `hf:NAME` (hub dataset) or an existing local path;
          "model"  - `tiny`, `hf:NAME`, `stage:NN_name` or an existing local path;
          "optpath"- like "path" but may be empty.
    """
    meta = dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices, kind=kind, help=help)
    return dataclasses.field(metadata=meta)


def hub_source(value: str) -> tuple[str, str] | None:
    """`hf:NAME` / `hf:NAME:CONFIG` -> (NAME, CONFIG or ""); NAME may be a local dataset dir.
    None for a value that is not an `hf:` source."""
    if not value.startswith(HUB_PREFIX):
        return None
    name, _, config = value[len(HUB_PREFIX):].partition(":")
    return name, config


# ---------------------------------------------------------------- hub datasets
# The config names of the hub datasets profiles load by name (as listed on the hub), so that a
# profile naming a config a repo lacks fails when it is validated, not once a stage streams it.
# The offline mirrors (ipt_utils/dataset_mirror.py) write exactly these configs.
SYNTH_COLLECTION = "instruction-pretrain/ft-instruction-synthesizer-collection"
# One config per data folder, named after it, except that config AQUA_RAT reads folder
# AQUA_RAT_yes_opt/; there is no config "PubMedQA".
SYNTH_COLLECTION_CONFIGS = (
    "AQUA_RAT", "COVID_QA", "CoQA", "ConvFinQA", "CosmosQA", "DoQA", "ECQA", "FairyTaleQA",
    "HotpotQA", "LogiQA", "NLQuAD", "NarrativeQA", "NewsQA", "PubMedQA_no_opt", "PubMedQA_yes_opt",
    "QASC", "QED", "QuaRTz", "Quac", "ROPES", "ReClor", "SpartQA", "TopiOCQA", "TriviaQA",
    "WikiTableQuestions", "bAbI", "dream", "mctest", "multirc", "qasper", "quail", "race", "race_c",
    "squad", "tweet_qa",
)
MMLU = "cais/mmlu"
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
HUB_DATASET_CONFIGS = {SYNTH_COLLECTION: SYNTH_COLLECTION_CONFIGS, MMLU: MMLU_SUBJECTS + ("all", "auxiliary_train")}


def readme_configs(directory: Path) -> list[str] | None:
    """The `configs:` names of a hub-layout dataset dir's README card, None without one."""
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
    dir's README `configs:`, else HUB_DATASET_CONFIGS; None when unknown."""
    name, _ = hub_source(source if source.startswith(HUB_PREFIX) else HUB_PREFIX + source)
    p = Path(name)
    if p.is_dir():
        return readme_configs(p)
    known = HUB_DATASET_CONFIGS.get(name)
    return list(known) if known else None


def resolve_path(value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (arg, *_) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(arg)}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check_scalar(tp, value, key, meta, problems):
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif tp is str:
        ok = isinstance(value, str)
    elif tp is Any:
        ok = True
    else:
        ok = isinstance(value, tp)
    if not ok:
        problems.append((key, f"expected {_type_name(tp)}, got {_describe(value)}"))
        return value
    bounds = [("ge", ">=", lambda a, b: a >= b), ("gt", ">", lambda a, b: a > b),
              ("le", "<=", lambda a, b: a <= b), ("lt", "<", lambda a, b: a < b)]
    for name, sym, cmp in bounds:
        bound = meta.get(name)
        if bound is not None and not cmp(value, bound):
            problems.append((key, f"expected {_type_name(tp)} {sym} {bound}, got {_describe(value)}"))
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        problems.append((key, f"expected one of {list(choices)}, got {_describe(value)}"))
    kind = meta.get("kind")
    if kind and isinstance(value, str):
        _check_kind(kind, value, key, problems)
    return value


def _check_kind(kind, value, key, problems):
    if kind == "optpath" and value == "":
        return
    if kind == "model" and (value == TINY or value.startswith(STAGE_PREFIX)):
        return
    if kind in ("source", "model") and value.startswith(HUB_PREFIX):
        if len(value) == len(HUB_PREFIX):
            problems.append((key, "expected a hub name after 'hf:'"))
        return
    if not value:
        problems.append((key, f"expected a {kind}, got an empty string"))
    elif not resolve_path(value).exists():
        hint = {"source": " (or hf:NAME for a hub dataset)",
                "model": " (or tiny, hf:NAME, stage:NN_name)"}.get(kind, "")
        problems.append((key, f"expected an existing file or directory{hint}, "
                              f"but {resolve_path(value)} does not exist"))


def _check(tp, value, key, meta, problems):
    if isinstance(tp, str):  # postponed annotation that failed to resolve
        raise TypeError(f"unresolved annotation {tp} at {key}")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _validate_dc(tp, value, key, problems)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            problems.append((key, f"expected {_type_name(tp)}, got {_describe(value)}"))
            return value
        (arg,) = typing.get_args(tp)[:1] or (Any,)
        return [_check(arg, v, f"{key}[{i}]", meta, problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            problems.append((key, f"expected a mapping, got {_describe(value)}"))
            return value
        kt, vt = typing.get_args(tp)
        return {k: _check(vt, v, f"{key}.{k}", meta, problems) for k, v in value.items()}
    return _check_scalar(tp, value, key, meta, problems)


def _validate_dc(cls, data, prefix, problems):
    if not isinstance(data, Mapping):
        problems.append((prefix or "<top>", f"expected {_type_name(cls)}, got {_describe(data)}"))
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for extra in sorted(set(data) - set(fields)):
        key = f"{prefix}.{extra}" if prefix else str(extra)
        problems.append((key, f"unknown key; expected one of {sorted(fields)}"))
    values = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            problems.append((key, f"missing key; expected {_type_name(hints[name])}"
                                  + (f" ({f.metadata['help']})" if f.metadata.get("help") else "")))
            continue
        values[name] = _check(hints[name], data[name], key, f.metadata, problems)
    if len(values) != len(fields):
        return None
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:  # __post_init__ cross-field checks
        problems.append((prefix or "<top>", str(e)))
        return None


def validate(cls, data, source: str = "<profile>", prefix: str = ""):
    """Validate `data` against dataclass `cls`; raise SchemaError naming every problem."""
    problems: list[tuple[str, str]] = []
    obj = _validate_dc(cls, data, prefix, problems)
    if problems:
        raise SchemaError(problems, source)
    return obj


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
