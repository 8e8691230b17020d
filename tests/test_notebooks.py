"""Notebooks: paired with py:percent twins, no outputs, parameters = the ci-tiny profile."""
import ast

import jupytext
import pytest

from ipt_utils import notebooks
from ipt_utils.profiles import load_profile
from ipt_utils.registry import STAGES


def test_pairs_in_sync_and_without_outputs():
    assert notebooks.problems() == []


def test_problems_are_detected(tmp_path):
    src = (notebooks.NB_DIR / "01_synth_tune.py").read_text()
    (tmp_path / "01_x.py").write_text(src)
    assert any("missing" in p for p in notebooks.problems(tmp_path))
    notebooks.sync(tmp_path)
    assert notebooks.problems(tmp_path) == []
    (tmp_path / "01_x.py").write_text(src.replace("max_steps = ", "max_steps = 1 + "))
    assert any("out of sync" in p for p in notebooks.problems(tmp_path))
    notebooks.sync(tmp_path)
    nb = jupytext.read(tmp_path / "01_x.ipynb")
    import nbformat

    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi")]
    jupytext.write(nb, tmp_path / "01_x.ipynb", fmt="ipynb")
    assert any("outputs" in p for p in notebooks.problems(tmp_path))


def _parameters(stage):
    nb = jupytext.read(stage.notebook.with_suffix(".py"))
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{stage.name}: expected one parameters cell"
    values = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign), f"{stage.name}: parameters cell holds plain assignments only"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_parameter_defaults_are_the_tiny_profile(stage):
    prof = load_profile("ci-tiny")
    params = _parameters(stage)
    expected = {**prof.stage_parameters(stage), "run_dir": "../results/runs/ci-tiny", "interactive": True}
    assert params == expected
