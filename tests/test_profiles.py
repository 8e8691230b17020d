"""Profile validation: every shipped profile loads; bad input is rejected with exit 2."""
import dataclasses
import typing

import pytest
import yaml

from ipt_utils import cli, pretrain
from ipt_utils.profiles import PARAMS_DIR, SECTIONS, available_profiles, load_profile
from ipt_utils.registry import params_class
from ipt_utils.schema import REPO_ROOT, SchemaError

PROFILES = ["ci-tiny", "paper-500m", "paper-1.3b", "domain-biomed-llama3-8b", "domain-finance-llama3-8b",
            "ci-ablation", "paper-ablation-biomed"]


def test_shipped_profiles_present():
    assert set(PROFILES) <= set(available_profiles())


@pytest.mark.parametrize("name", PROFILES)
def test_profile_loads(name):
    prof = load_profile(name)
    assert set(prof.sections) == set(SECTIONS)


def _keys(obj, prefix=""):
    out = set()
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        out.add(key)
        if dataclasses.is_dataclass(v):
            out |= _keys(v, key + ".")
    return out


def test_same_keys_in_every_profile():
    tiny = load_profile("ci-tiny")
    for name in PROFILES[1:]:
        other = load_profile(name)
        for section in SECTIONS:
            assert _keys(other.sections[section]) == _keys(tiny.sections[section]), (name, section)


def _write_variant(tmp_path, mutate):
    data = yaml.safe_load(open(load_profile("ci-tiny").path))
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("mutate, key, expected", [
    (lambda d: d["synth_tune"].update(bogus=1), "synth_tune.bogus", "unknown key"),
    (lambda d: d["synth_tune"].update(max_steps="ten"), "synth_tune.max_steps", "expected an integer"),
    (lambda d: d["synth_tune"].update(learning_rate=-1.0), "synth_tune.learning_rate", "> 0.0"),
    (lambda d: d["synth_tune"].update(method="qlora9"), "synth_tune.method", "one of"),
    (lambda d: d["synth_tune"].update(data="no/such/file.jsonl"), "synth_tune.data", "does not exist"),
    (lambda d: d["run"].pop("seed"), "run.seed", "missing key"),
    (lambda d: d["synth_tune"]["tiny_model"].update(num_heads=3), "synth_tune.tiny_model", "divisible"),
    (lambda d: d.update(extra_section={}), "extra_section", "unknown section"),
])
def test_bad_profile_rejected(tmp_path, capsys, mutate, key, expected):
    path = _write_variant(tmp_path, mutate)
    with pytest.raises(SchemaError) as err:
        load_profile(str(path))
    assert any(k == key and expected in msg for k, msg in err.value.problems), err.value.problems
    # through the CLI: exit 2, one message naming file and key, nothing executed
    out_dir = tmp_path / "run"
    assert cli.main(["run", "--profile", str(path), "--out", str(out_dir)]) == 2
    msg = capsys.readouterr().err
    assert str(path) in msg and key in msg and expected in msg
    assert not out_dir.exists()


def test_validate_command_accepts_all(capsys):
    assert cli.main(["validate"]) == 0
    assert capsys.readouterr().out.count("ok:") == len(available_profiles())


def test_unknown_profile_and_stage(tmp_path, capsys):
    assert cli.main(["run", "--profile", "no-such-profile"]) == 2
    assert "profile not found" in capsys.readouterr().err
    assert cli.main(["run", "--profile", "ci-tiny", "--stages", "99_nope", "--out", str(tmp_path / "r")]) == 2
    assert "unknown stage" in capsys.readouterr().err


def _order_problems(value, tp, where: str) -> list[str]:
    """Mappings in `value` whose keys are not in the schema's field order (nested dataclasses,
    and the entries of list/dict fields of dataclasses, included)."""
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        want = [f.name for f in dataclasses.fields(tp)]
        out = [f"{where}: keys {list(value)}, schema order {want}"] if list(value) != want else []
        hints = typing.get_type_hints(tp)
        return out + [p for k in want if k in value for p in _order_problems(value[k], hints[k], f"{where}.{k}")]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list and isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _order_problems(v, args[0], f"{where}[{i}]")]
    if origin is dict and isinstance(value, dict):
        return [p for k, v in value.items() for p in _order_problems(v, args[1], f"{where}.{k}")]
    return []


def test_order_problems_sees_nested_keys():
    good = {"recipe": "instruct", "augmented": ""}
    assert _order_problems({"x": good}, dict[str, pretrain.ArmVariant], "arm_variants") == []
    assert _order_problems({"x": dict(reversed(good.items()))}, dict[str, pretrain.ArmVariant], "arm_variants") \
        == ["arm_variants.x: keys ['augmented', 'recipe'], schema order ['recipe', 'augmented']"]


@pytest.mark.parametrize("name", available_profiles())
def test_profile_layout(name):
    """One layout for every profile: sections in SECTIONS order, keys in the order the schema
    declares them (so a diff of two profiles shows only what changes), and an owner comment
    opening every section that names the module whose Params it is."""
    path = PARAMS_DIR / f"{name}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(data) == list(SECTIONS), f"{path}: sections {list(data)}"
    problems = [p for s in SECTIONS for p in _order_problems(data[s], params_class(s), f"{path.name}: {s}")]
    assert not problems, "\n".join(problems)
    lines = path.read_text(encoding="utf-8").splitlines()
    for section in SECTIONS:
        i = lines.index(f"{section}:")
        owner = "ipt_utils/registry.py (RunParams)" if section == "run" else f"ipt_utils/{section}.py (Params)"
        assert lines[i + 1].startswith(f"  # section owned by {owner}"), f"{path}:{i + 2}: {lines[i + 1]!r}"
        assert (REPO_ROOT / owner.split()[0]).exists()
