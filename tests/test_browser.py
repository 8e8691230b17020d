"""The notebooks as a person uses them: JupyterLab in headless Chromium, every stage run by hand.

Starts JupyterLab (the project's `make lab` settings: project kernel by default) on a
loopback port with a token, over a temporary copy of notebooks/ so that neither the
repo's notebooks (JupyterLab saves outputs into them) nor the user's results/ are
touched: the notebooks' default run_dir `../results/runs/ci-tiny` then resolves inside
the temporary directory. Playwright drives Debian's Chromium (/usr/bin/chromium; no
browser download) to open 01..06 in order, run all cells with the default (tiny)
parameters from the Run menu, wait until the kernel is idle and check that no cell has an
error output and that each stage left its completion marker marked "interactive".

Artifacts (git-ignored): results/browser/06_report.png (the rendered report, tables and
figures), results/browser/02_synthesize_explorer.png (the synthesis explorer widgets),
and <notebook>-failure.png for a notebook that failed. IPT_BROWSER_ARTIFACTS overrides
the folder.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ipt_utils.registry import STAGES

# ~4 min on 2 idle cores; generous limits for a loaded machine
pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(5400)]

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
# Flags for this machine's closed network (see the machine notes): no background connections.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
ARTIFACTS = Path(os.environ.get("IPT_BROWSER_ARTIFACTS", REPO / "results" / "browser"))
NOTEBOOK_TIMEOUT_S = int(os.environ.get("IPT_BROWSER_NOTEBOOK_TIMEOUT_S", 1800))
TOKEN = "ipt-browser-test-token"

# JupyterLab user settings for the test: render every cell (no virtual scrolling, so the DOM
# holds all outputs and the screenshot can scroll to them), no autosave, no news checks.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
}


def _requirements() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (install Debian's chromium: apt-get install -y chromium; .ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (Python) not installed (pip install -c constraints-cpu.txt playwright)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, path: str, method: str = "GET"):
    req = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    reason = _requirements()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("lab")
    nb_dir = root / "notebooks"
    nb_dir.mkdir()
    for st in STAGES:
        for suffix in (".ipynb", ".py"):
            shutil.copy(st.notebook.with_suffix(suffix), nb_dir)
    settings = root / "lab-settings"
    for rel, value in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces")}
    env.pop("MPLBACKEND", None)  # as a person's kernel: matplotlib's inline backend
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--ServerApp.root_dir={nb_dir}", f"--IdentityProvider.token={TOKEN}",
         "--MappingKernelManager.default_kernel_name=ipt", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.port_retries=0"] + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=nb_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while True:
        try:
            _api(base, "/api/status")
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-3000:]}")
            time.sleep(1)
    try:
        yield {"base": base, "root": root, "run_dir": root / "results" / "runs" / "ci-tiny"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# Evaluated in the page: the state of the current notebook (exposed app, read only).
STATE_JS = """() => {
  const app = window.jupyterapp;
  const nb = app && app.shell.currentWidget;
  if (!nb || !nb.content || !nb.sessionContext) return null;
  const cells = nb.content.widgets.filter(c => c.model.type === 'code');
  const errors = [];
  let pending = 0, running = 0;
  cells.forEach((c, i) => {
    if (c.model.executionCount === null) pending += 1;
    if (c.model.executionState === 'running' || (c.promptNode && c.promptNode.textContent.includes('*')))
      running += 1;
    for (const o of c.model.outputs.toJSON())
      if (o.output_type === 'error') errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
  });
  const session = nb.sessionContext.session;
  const kernel = session && session.kernel;
  return {cells: cells.length, pending, running, errors, path: nb.context.path,
          kernel: kernel ? kernel.status : null, kernelName: kernel ? kernel.name : null};
}"""


def _run_notebook(page, base: str, name: str, workspace: str) -> dict:
    page.goto(f"{base}/lab/workspaces/{workspace}/tree/{name}.ipynb?token={TOKEN}")
    page.wait_for_function(f"""() => {{ const s = ({STATE_JS})();
        return s && s.path === '{name}.ipynb' && s.kernel === 'idle'; }}""", timeout=120_000)
    state = page.evaluate(STATE_JS)
    assert state["kernelName"] == "ipt", f"{name}: kernel {state['kernelName']!r}, expected the project kernel"
    # Run > Run All Cells, as a person would
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    deadline, quiet = time.time() + NOTEBOOK_TIMEOUT_S, 0
    while time.time() < deadline:
        time.sleep(2)
        state = page.evaluate(STATE_JS)
        done = state["running"] == 0 and state["kernel"] == "idle" and (state["pending"] == 0 or state["errors"])
        quiet = quiet + 1 if done else 0
        if quiet >= 2:
            return state
    raise AssertionError(f"{name}: cells still running after {NOTEBOOK_TIMEOUT_S} s: {state}")


def _shutdown_kernels(base: str) -> None:
    for s in _api(base, "/api/sessions"):
        _api(base, f"/api/sessions/{s['id']}", method="DELETE")


def _scroll_to(page, heading: str) -> None:
    """Scroll the notebook so that a rendered markdown heading is at the top of the view."""
    loc = page.locator(".jp-RenderedMarkdown :is(h1, h2, h3)", has_text=heading).first
    loc.wait_for(timeout=30_000)
    loc.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)


# The notebook's scroll height (JupyterLab 4 scrolls an inner element of the notebook panel).
HEIGHT_JS = """() => Math.max(...[...document.querySelectorAll(
  '.jp-Notebook, .jp-Notebook .jp-WindowedPanel-outer, .jp-Notebook .jp-WindowedPanel-inner')]
  .map(e => e.scrollHeight))"""


def _screenshot_report(page, path: Path) -> None:
    """The rendered report from its "Tables and figures" heading down, every table and figure in view."""
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    page.locator(".jp-Notebook .jp-RenderedImage img").first.wait_for(timeout=30_000)
    _scroll_to(page, "Tables and figures")
    below = page.evaluate("""() => { const h = [...document.querySelectorAll('.jp-RenderedMarkdown h2')]
        .find(e => e.textContent.includes('Tables and figures'));
        const nb = document.querySelector('.jp-Notebook');
        return nb.getBoundingClientRect().top + (""" + HEIGHT_JS + """)() - h.getBoundingClientRect().top; }""")
    page.set_viewport_size({"width": 1600, "height": max(1200, min(int(below) + 200, 12000))})
    _scroll_to(page, "Tables and figures")
    page.screenshot(path=str(path))


def test_every_notebook_runs_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(lab["root"] / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1600, "height": 1200})
        page = context.new_page()
        try:
            for i, st in enumerate(STAGES):
                t0 = time.time()
                try:
                    state = _run_notebook(page, lab["base"], st.name, f"w{i}")
                    assert not state["errors"], f"{st.name}: error outputs: {state['errors']}"
                    assert state["pending"] == 0, f"{st.name}: {state['pending']} cells did not run"
                    if st.name == "02_synthesize":  # the explorer renders as widgets
                        page.locator(".jp-Notebook .widget-dropdown").first.wait_for(timeout=30_000)
                        _scroll_to(page, "Explore the synthesized data")
                        page.get_by_text("Prompt sent to the synthesizer").first.wait_for()
                        page.screenshot(path=str(ARTIFACTS / "02_synthesize_explorer.png"))
                    if st.name == "06_report":
                        _screenshot_report(page, ARTIFACTS / "06_report.png")
                except Exception:
                    page.screenshot(path=str(ARTIFACTS / f"{st.name}-failure.png"))
                    raise
                finally:
                    _shutdown_kernels(lab["base"])
                marker = json.loads((lab["run_dir"] / st.name / ".complete").read_text())
                assert marker["mode"] == "interactive"
                print(f"{st.name}: {state['cells']} cells in {time.time() - t0:.0f} s")
        finally:
            context.close()
    manifest = json.loads((lab["run_dir"] / "manifest.json").read_text())
    assert {n: e["mode"] for n, e in manifest["stages"].items()} == {s.name: "interactive" for s in STAGES}
    assert all(e["status"] == "completed" for e in manifest["stages"].values())
    # the report saw every stage's files: its tables and figures were built
    assert list((lab["run_dir"] / "06_report" / "figures").glob("*.png"))
    assert (ARTIFACTS / "06_report.png").stat().st_size > 50_000
