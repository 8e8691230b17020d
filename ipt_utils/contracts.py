"""The data contracts: what each stage promises to write in its metrics.json, and the rows
it hands the next stage, declared once as TypedDicts (the way lm-eval's result_schema.py
declares its results).

Each key carries its meaning in `Annotated[type, "meaning"]`; keys a stage writes only under
some settings are `NotRequired`. `stage.finish_stage` checks a stage's metrics against its
schema before writing them (a missing or undeclared key is a bug, named with its path), and
`python -m ipt_utils.contracts` writes docs/CONTRACTS.md from these declarations (a test keeps
that file current).

A stage module registers its schema with `@metrics_schema("NN_name")`; nested TypedDicts
(and `dict[str, SomeTypedDict]` maps, e.g. one entry per arm) are checked recursively.
"""
from __future__ import annotations

import importlib
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Mapping, NotRequired, get_args, get_origin

from .registry import STAGES

METRICS: dict[str, type] = {}  # stage name -> its metrics TypedDict
ROWS: dict[str, type] = {}  # file contract name (e.g. "augmented.jsonl") -> its row TypedDict


def metrics_schema(stage: str):
    """Class decorator: register `cls` as the schema of `stage`'s metrics.json."""
    def register(cls):
        METRICS[stage] = cls
        return cls
    return register


def row_schema(name: str):
    """Class decorator: register `cls` as the row schema of the file contract `name`."""
    def register(cls):
        ROWS[name] = cls
        return cls
    return register


class ContractError(ValueError):
    pass


def _is_typeddict(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def required_keys(cls) -> frozenset:
    """The keys a TypedDict requires. Read from its resolved hints: under `from __future__ import
    annotations` (string hints) Python 3.11's __required_keys__ does not see `NotRequired`."""
    hints = _hints(cls)
    return frozenset(k for k in hints if get_origin(hints[k]) is not NotRequired
                     and (k in cls.__required_keys__ or get_origin(hints[k]) is typing.Required))


def _strip(tp):
    """-> (bare type, meaning) of an `Annotated[...]` / `NotRequired[...]` hint."""
    meaning = ""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            args = get_args(tp)
            tp, meaning = args[0], meaning or next((a for a in args[1:] if isinstance(a, str)), "")
        elif origin is NotRequired:
            tp = get_args(tp)[0]
        else:
            return tp, meaning


def problems(schema, value: Mapping, path: str = "") -> list[str]:
    """Every missing or undeclared key of `value` under `schema`, as 'path: what' (nested TypedDicts
    and dict maps of them are checked; scalar types and list items are not)."""
    if not isinstance(value, Mapping):
        return [f"{path or '.'}: expected an object, got {type(value).__name__}"]
    hints = _hints(schema)
    out = [f"{path}{k}: missing" for k in sorted(required_keys(schema) - value.keys())]
    out += [f"{path}{k}: not declared in {schema.__name__}" for k in sorted(value.keys() - hints.keys())]
    for k in sorted(value.keys() & hints.keys()):
        tp, _ = _strip(hints[k])
        v = value[k]
        if _is_typeddict(tp):
            out += problems(tp, v, f"{path}{k}.")
        elif get_origin(tp) is dict and _is_typeddict(_strip(get_args(tp)[1])[0]):
            inner = _strip(get_args(tp)[1])[0]
            if not isinstance(v, Mapping):
                out.append(f"{path}{k}: expected an object, got {type(v).__name__}")
                continue
            for name, sub in v.items():
                out += problems(inner, sub, f"{path}{k}.{name}.")
    return out


def check_metrics(stage: str, metrics: Mapping) -> None:
    """Raise ContractError naming every key of `metrics` that breaks `stage`'s schema
    (a stage without a registered schema is not checked)."""
    schema = METRICS.get(stage)
    if schema is None:
        return
    found = problems(schema, metrics)
    if found:
        raise ContractError(f"{stage} metrics.json does not match {schema.__module__}.{schema.__name__}: "
                            + "; ".join(found))


# --------------------------------------------------------------------------- docs/CONTRACTS.md

def _type_name(tp) -> str:
    tp, _ = _strip(tp)
    if _is_typeddict(tp):
        return tp.__name__
    origin = get_origin(tp)
    if origin is None:
        return getattr(tp, "__name__", repr(tp)).replace("NoneType", "null")
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in get_args(tp))  # a "|" would split the table cell
    args = ", ".join(_type_name(a) for a in get_args(tp))
    name = getattr(origin, "__name__", None) or repr(origin).replace("typing.", "")
    return f"{name}[{args}]" if args else name


def _table(cls, seen: list) -> list[str]:
    lines = [f"#### `{cls.__name__}`", ""]
    if cls.__doc__:
        lines += [" ".join(cls.__doc__.split()), ""]
    lines += ["| key | type | required | meaning |", "|---|---|---|---|"]
    for k, hint in _hints(cls).items():
        tp, meaning = _strip(hint)
        lines.append(f"| `{k}` | `{_type_name(hint)}` | {'yes' if k in required_keys(cls) else 'no'} "
                     f"| {meaning} |")
        for nested in (tp, *get_args(tp)):
            nested = _strip(nested)[0]
            if _is_typeddict(nested):
                seen.append(nested)
    return lines + [""]


def render() -> str:
    """docs/CONTRACTS.md: every registered schema, nested ones after their first parent (each once)."""
    _load_stage_modules()
    lines = ["# Data contracts", "",
             "Generated by `python -m ipt_utils.contracts` from the TypedDicts in the stage modules",
             "(registered in ipt_utils/contracts.py); do not edit by hand. `stage.finish_stage` checks every",
             "stage's metrics.json against its schema before writing it.", ""]
    shown: set = set()
    for title, registry in (("Stage metrics (`<run>/<stage>/metrics.json`)", METRICS), ("Rows handed between stages", ROWS)):
        lines += [f"## {title}", ""]
        for name in sorted(registry):
            lines += [f"### {name}", ""]
            queue = [registry[name]]
            while queue:
                cls = queue.pop(0)
                if cls not in shown:
                    shown.add(cls)
                    lines += _table(cls, queue)
    return "\n".join(lines).rstrip() + "\n"


def _load_stage_modules() -> None:
    """Import every stage module so that their schemas are registered."""
    for s in STAGES:
        importlib.import_module(f"ipt_utils.{s.section}")


DOC = Path(__file__).resolve().parent.parent / "docs" / "CONTRACTS.md"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        current = DOC.read_text() if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is out of date: run python -m ipt_utils.contracts", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    # run as the package's module: the stage modules register their schemas there, not in __main__
    raise SystemExit(importlib.import_module("ipt_utils.contracts").main())
