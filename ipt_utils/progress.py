"""Progress bars for long steps: a widget in JupyterLab, plain text lines under papermill.

`bar(...)` is tqdm with the display chosen by how the stage runs (`stage.open_stage`
calls `set_interactive`): run by hand in JupyterLab it is `tqdm.auto` (an ipywidgets
bar); under papermill (`interactive = False`) or outside a notebook it is the text
tqdm on stderr, refreshed at most every `log_interval` seconds so that the executed
notebook and the papermill log hold a few readable progress lines, not thousands.
"""
from __future__ import annotations

import os
import sys

_interactive: bool | None = None  # None: not inside a stage notebook


def set_interactive(flag: bool) -> None:
    global _interactive
    _interactive = bool(flag)


def bar(iterable=None, *, total=None, desc=None, disable: bool = False, log_interval: float = 10.0, **kw):
    if os.environ.get("IPT_NO_PROGRESS"):
        disable = True
    if _interactive:
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, disable=disable, **kw)
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=disable, file=sys.stderr,
                mininterval=log_interval, maxinterval=max(log_interval, 30.0), ascii=True, **kw)
