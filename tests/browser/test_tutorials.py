"""Every tutorial opened in a fresh JupyterLab in Chromium, run with Run All, and every widget used
as a user would; assertions are on what the browser renders. Screenshots land in
tests/browser/screenshots/."""
import re
import time

import pytest
from lab_driver import open_notebook, plotly_figures, run_all, screenshot, widget_output

pytestmark = pytest.mark.browser


def wait_for(fn, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_quickstart_chat_panel(page, lab):
    name = "00_quickstart.ipynb"
    open_notebook(page, lab, name)
    run_all(page, lab, name)
    panel = widget_output(page, "preset")
    box = panel.locator("textarea").first
    box.fill("Hello, who are you?")
    box.press("Control+Enter")  # sends, as the Send button does (and does not run the cell)
    answer = panel.locator(".wb-answer, .wb-thinking")
    wait_for(lambda: answer.count() and answer.first.inner_text().strip(), what="streamed text")
    wait_for(lambda: "tok/s" in panel.inner_text(), what="the tokens/s readout")
    wait_for(lambda: "done:" in panel.inner_text(), what="the reply to finish")
    screenshot(page, name, panel)


def test_chat_panel_stop_ends_a_long_reply(page, lab):
    """Stop on a reply certain to outlast it: greedy decoding on the random-weight model, which on
    this prompt never ends by itself before its 2,000-token limit (about 25 s on a CPU). Prompts
    are not alike here: on "...about a cat." the same model says end-of-turn after about 6 s, so
    a slow click once found the reply already done."""
    import nbformat
    name = "scratch_stop.ipynb"
    code = ("import workbench\nfrom workbench.widgets import ChatPanel\n"
            "ChatPanel(workbench.load('tiny-random'), preset='greedy (reproducible)', max_new_tokens=2000)")
    # The tutorials' kernel metadata, so JupyterLab starts the kernel without asking which one.
    metadata = nbformat.read(str(lab.root / "00_quickstart.ipynb"), as_version=4).metadata
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)], metadata=metadata)
    nbformat.write(notebook, str(lab.root / name))
    open_notebook(page, lab, name)
    run_all(page, lab, name)
    panel = widget_output(page, "preset")
    panel.locator("textarea").first.fill("Tell me a very long story about a dog.")
    panel.locator("button", has_text="Send").click()
    wait_for(lambda: "generating" in panel.inner_text(), what="the reply to start")
    # The click event itself: Playwright's click() first waits until the button stands still, and the
    # Stop button moves down while the reply above it grows, so on a slow machine that wait outlasted
    # the whole reply ("done: length").
    panel.locator("button", has_text="Stop").dispatch_event("click")
    wait_for(lambda: "done:" in panel.inner_text(), what="the stopped reply")
    shown = panel.inner_text()
    assert "done: interrupted" in shown, f"the reply ended before Stop was clicked: {shown[-200:]!r}"
    assert "Tell me a very long story" in shown


def run_with_figures(page, lab, name: str, at_least: int) -> None:
    """Open and run a tutorial; every plotly figure it makes must be drawn."""
    open_notebook(page, lab, name)
    run_all(page, lab, name)
    figures, drawn = plotly_figures(page)
    assert figures >= at_least and drawn == figures, (figures, drawn)


def test_routing_explorer_click_a_token(page, lab):
    name = "01_expert_routing.ipynb"
    run_with_figures(page, lab, name, at_least=11)  # 10 figure cells + the explorer
    explorer = widget_output(page, "prompt A")
    details = explorer.locator(".widget-html", has_text="experts (weight)").first
    before = details.inner_text()
    assert "token 0" in before
    drag = explorer.locator(".js-plotly-plot .nsewdrag").first
    box = drag.bounding_box()
    drag.click(position={"x": box["width"] * 0.6, "y": box["height"] * 0.5})
    wait_for(lambda: details.inner_text() != before, what="the clicked token's experts")
    assert re.search(r"token \d+", details.inner_text()) and "token 0 " not in details.inner_text()
    # A view switch leaves nothing of the previous view drawn: the layer's load bars carry a
    # "uniform k/E" line and label; the entropy map after them must not.
    plot = explorer.locator(".js-plotly-plot").first
    # (a plot being replaced has no layout for a moment: -1 then)
    leftovers = "el => el.layout ? (el.layout.shapes || []).length + (el.layout.annotations || []).length : -1"
    view = explorer.locator("select").first
    view.select_option("expert load")
    wait_for(lambda: plot.evaluate(leftovers) > 0, what="the load view's uniform line")
    view.select_option("entropy")
    title = "el => (el.layout && el.layout.title && el.layout.title.text) || ''"
    wait_for(lambda: "Routing entropy" in plot.evaluate(title), what="the entropy view")
    assert plot.evaluate(leftovers) == 0
    screenshot(page, name, explorer)


def test_deltanet_explorer_slider_moves_the_state(page, lab):
    name = "02_deltanet_state.ipynb"
    run_with_figures(page, lab, name, at_least=9)  # 8 figure cells + the explorer
    explorer = widget_output(page, "head")
    plot = explorer.locator(".js-plotly-plot").first
    # While an animation frame redraws the figure, its data is briefly unset: read None then.
    z = lambda: plot.evaluate("el => el.data && el.data[0] ? JSON.stringify(el.data[0].z) : null")  # noqa: E731
    before = z()
    token = explorer.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text=re.compile(r"^token$")))
    track = token.locator(".noUi-target").first
    box = track.bounding_box()
    track.click(position={"x": box["width"] * 0.5, "y": box["height"] / 2})  # drag the token slider halfway
    wait_for(lambda: z() not in (before, None), what="the state after another token")
    after = z()
    explorer.locator(".widget-play button").first.click()  # play: the slider animates the state
    wait_for(lambda: z() not in (after, None), timeout=30, what="the animation to move the state")
    screenshot(page, name, explorer)


def test_speed_dashboard_runs_a_sweep(page, lab):
    name = "03_tokens_per_second.ipynb"
    open_notebook(page, lab, name)
    run_all(page, lab, name)
    meter = widget_output(page, "Generate")
    meter.locator("button", has_text="Generate").click()
    wait_for(lambda: "decode" in meter.inner_text(), timeout=120, what="the meter's final reading")
    dash = widget_output(page, "Run sweep")
    dash.locator("button", has_text="Run sweep").click()
    wait_for(lambda: dash.locator(".js-plotly-plot g.barlayer path").count() > 0, timeout=300,
             what="the sweep's bars")
    assert "pp64" in dash.inner_text()
    screenshot(page, name, dash)


def test_planner_panel_follows_its_controls(page, lab):
    name = "04_memory_and_hardware.ipynb"
    open_notebook(page, lab, name)
    run_all(page, lab, name)
    panel = widget_output(page, "weights")
    verdict = lambda: panel.locator(".widget-html", has_text="GB").last.inner_text()  # noqa: E731
    assert "RTX 4090" in verdict()
    panel.locator("select").nth(2).select_option("H200")
    wait_for(lambda: "H200" in verdict(), what="the verdict for the H200")
    assert panel.locator(".js-plotly-plot g.barlayer path").count() >= 3
    screenshot(page, name, panel)


def test_quantization_explorer_runs_and_switches_views(page, lab):
    name = "05_quantization.ipynb"
    open_notebook(page, lab, name)
    run_all(page, lab, name)
    assert plotly_figures(page)[1] >= 3  # drawn: KLD distributions, routing heatmap, text by KLD
    panel = widget_output(page, "candidates")
    panel.locator("button", has_text="Run").click()
    wait_for(lambda: "done:" in panel.inner_text(), timeout=300, what="the comparison to finish")
    assert "mean KLD" in panel.inner_text()
    wait_for(lambda: panel.locator(".js-plotly-plot g.boxlayer path").count() > 0, what="the KLD boxes")
    panel.locator("button", has_text="routing agreement").click()
    wait_for(lambda: panel.locator(".js-plotly-plot .hm, .js-plotly-plot image").count() > 0,
             what="the routing heatmap")
    panel.locator("button", has_text="text by KLD").click()
    wait_for(lambda: panel.locator(".js-plotly-plot g.textpoint").count() > 20, what="the coloured text")
    screenshot(page, name, panel)


def test_serving_engines_chat_and_benchmark_over_a_server(page, lab):
    """The chat panel and the speed dashboard over servers the notebook started (mlx_lm.server and
    llama.cpp's server on loopback)."""
    name = "06_serving_engines.ipynb"
    open_notebook(page, lab, name)
    run_all(page, lab, name)
    panel = widget_output(page, "preset")
    box = panel.locator("textarea").first
    box.fill("What is the weather in Paris?")
    box.press("Control+Enter")
    wait_for(lambda: "done:" in panel.inner_text(), timeout=120, what="the reply over the server")
    assert panel.locator(".wb-assistant").count() >= 1 and "tok/s" in panel.inner_text()
    dash = widget_output(page, "Run sweep")
    dash.locator("button", has_text="Run sweep").click()
    wait_for(lambda: dash.locator(".js-plotly-plot g.barlayer path").count() > 0, timeout=300,
             what="the serving benchmark's bars")
    assert "concurrency" in dash.inner_text() and "ttft_ms_median" in dash.inner_text()
    screenshot(page, name, dash)
