"""Notebook hygiene: the py:percent twins are the reviewed source, the .ipynb are generated.

`python -m ipt_utils.notebooks sync`  - regenerate every notebooks/*.ipynb from its .py
`python -m ipt_utils.notebooks check` - fail if a pair is out of sync or outputs are committed
"""
from __future__ import annotations

import sys
from pathlib import Path

from .schema import REPO_ROOT

NB_DIR = REPO_ROOT / "notebooks"


def _cells(nb) -> list[tuple]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]


def pairs(nb_dir: Path = NB_DIR) -> list[tuple[Path, Path]]:
    return [(py, py.with_suffix(".ipynb")) for py in sorted(nb_dir.glob("[0-9][0-9]_*.py"))]


def sync(nb_dir: Path = NB_DIR) -> list[Path]:
    """Regenerate the .ipynb whose .py changed; unchanged cells keep their ids (small diffs)."""
    import jupytext
    import nbformat

    written = []
    for py, ipynb in pairs(nb_dir):
        nb = jupytext.read(py)
        for c in nb.cells:
            if c.cell_type == "code":
                c.outputs, c.execution_count = [], None
        if ipynb.exists():
            old = nbformat.read(ipynb, as_version=4)
            clean = not any(c.get("outputs") or c.get("execution_count") for c in old.cells)
            if clean and _cells(old) == _cells(nb):
                continue
            ids = {cell: c.get("id") for cell, c in zip(_cells(old), old.cells)}
            for cell, c in zip(_cells(nb), nb.cells):
                if ids.get(cell):
                    c["id"] = ids[cell]
        jupytext.write(nb, ipynb, fmt="ipynb")
        written.append(ipynb)
    return written


def problems(nb_dir: Path = NB_DIR) -> list[str]:
    import jupytext
    import nbformat

    found = []
    for py, ipynb in pairs(nb_dir):
        if not ipynb.exists():
            found.append(f"{ipynb.name}: missing (run `make sync-notebooks`)")
            continue
        nb = nbformat.read(ipynb, as_version=4)
        if any(c.get("outputs") or c.get("execution_count") for c in nb.cells if c.cell_type == "code"):
            found.append(f"{ipynb.name}: has outputs committed (run `make sync-notebooks`)")
        if _cells(nb) != _cells(jupytext.read(py)):
            found.append(f"{ipynb.name}: out of sync with {py.name} (edit the .py, run `make sync-notebooks`)")
    for ipynb in sorted(nb_dir.glob("*.ipynb")):
        if not ipynb.with_suffix(".py").exists():
            found.append(f"{ipynb.name}: no py:percent twin")
    return found


def main(argv=None) -> int:
    cmd = (argv or sys.argv[1:] or ["check"])[0]
    if cmd == "sync":
        for p in sync():
            print(f"wrote {p.relative_to(REPO_ROOT)}")
        return 0
    found = problems()
    for msg in found:
        print(f"error: {msg}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
