"""Driving a tutorial in JupyterLab as a user does: open it, wait for its kernel, Run All, wait until
every cell ran, then find widgets by what they show."""
from __future__ import annotations

import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "tests" / "browser" / "screenshots"   # look at them after a run
TOKEN = "workbench-test"


def open_notebook(page, lab, name: str):
    page.goto(f"{lab.url}/lab/tree/{name}?reset&token={TOKEN}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    deadline = time.time() + 120
    while time.time() < deadline:  # a kernel connected and idle: before that Run All does nothing
        sessions = [s for s in lab.api("/api/sessions") if s["path"].endswith(name)]
        if sessions and sessions[0]["kernel"]["execution_state"] == "idle" and sessions[0]["kernel"]["connections"]:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the kernel of {name} never became idle")
    time.sleep(1)


def run_all(page, lab, name: str, timeout_s: float = 600):
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    deadline = time.time() + timeout_s
    time.sleep(2)
    while time.time() < deadline:
        prompts = page.locator(".jp-InputPrompt").all_inner_texts()
        busy = [p for p in prompts if "*" in p]
        kernel = [s for s in lab.api("/api/sessions") if s["path"].endswith(name)][0]["kernel"]
        if not busy and kernel["execution_state"] == "idle":
            break
        time.sleep(1)
    else:
        raise AssertionError(f"{name} did not finish running within {timeout_s} s")
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
    assert not tracebacks, f"{name}: a cell failed:\n{tracebacks[0][:2000]}"


def plotly_figures(page):
    """Rendered plotly figures with at least one drawn trace."""
    figs = page.locator(".js-plotly-plot")
    drawn = 0
    for i in range(figs.count()):
        if figs.nth(i).locator("g.trace, g.hm, g.heatmaplayer image, g.sankey, path.point, g.barlayer").count():
            drawn += 1
    return figs.count(), drawn


def screenshot(page, name: str, widget=None) -> Path:
    """The window as the user sees it, and the widget's own area when given (the notebook scrolls
    inside the app, so a full-page shot would show no more)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{Path(name).stem}.png"
    if widget is not None:
        widget.scroll_into_view_if_needed()
        widget.screenshot(path=str(path.with_name(path.stem + "-widget.png")))
    page.screenshot(path=str(path))
    return path


def widget_output(page, text: str):
    """The output area of the cell whose widget contains `text`."""
    return page.locator(".jp-OutputArea-output", has=page.locator(".widget-box", has_text=text)).last
