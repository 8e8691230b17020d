"""Profiles: one YAML per scale under params/, one section per stage, same keys everywhere.

`load_profile` validates the whole file against the stage schemas before anything
runs; a problem raises `SchemaError` naming the file and the dotted key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .manifest import params_hash
from .registry import STAGES, params_class
from .schema import REPO_ROOT, SchemaError, validate

PARAMS_DIR = REPO_ROOT / "params"
SECTIONS = ("run",) + tuple(s.section for s in STAGES)


@dataclass
class Profile:
    name: str
    path: Path
    sections: dict[str, Any]  # section -> validated Params instance

    def section(self, name: str) -> dict:
        return dataclasses.asdict(self.sections[name])

    def values(self) -> dict[str, dict]:
        """Every section as plain values (section -> dict), as in the YAML and the manifest."""
        return {k: self.section(k) for k in self.sections}

    def stage_parameters(self, stage) -> dict:
        """What the runner injects into a stage notebook's parameters cell."""
        return {"profile": self.name, "run": self.section("run"), **self.section(stage.section)}

    def stage_hash(self, stage) -> str:
        """Hash of what determines a stage's output (its section and the run section)."""
        return params_hash(stage.section, self.section("run"), self.section(stage.section))


def profile_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p.resolve()
    return PARAMS_DIR / f"{name_or_path}.yaml"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))


def load_profile(name_or_path: str) -> Profile:
    path = profile_path(name_or_path)
    try:
        shown = str(path.relative_to(REPO_ROOT))
    except ValueError:
        shown = str(path)
    if not path.exists():
        raise SchemaError([("<file>", f"profile not found; known profiles: {available_profiles()}")], shown)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise SchemaError([("<yaml>", f"not valid YAML: {e}")], shown) from None
    if not isinstance(data, dict):
        raise SchemaError([("<top>", "expected a mapping of sections")], shown)
    problems: list[tuple[str, str]] = []
    for extra in sorted(set(data) - set(SECTIONS)):
        problems.append((str(extra), f"unknown section; expected one of {list(SECTIONS)}"))
    sections = {}
    for name in SECTIONS:
        if name not in data:
            problems.append((name, "missing section"))
            continue
        try:
            sections[name] = validate(params_class(name), data[name] if data[name] is not None else {},
                                      source=shown, prefix=name)
        except SchemaError as e:
            problems.extend(e.problems)
    if problems:
        raise SchemaError(problems, shown)
    return Profile(name=path.stem, path=path, sections=sections)
