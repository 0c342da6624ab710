"""What the figures and explorers show is true and readable (issue 25): positions on token axes,
a fresh figure per view, baselines, teaching heads, no NaN in figure data, widgets that behave
like tools. Checked on the figure data and the controllers; the browser tests prove they render."""
import json

import numpy as np
import plotly.io as pio
import pytest

import workbench
from workbench import DeltaNetCapture, Trace
from workbench.analysis import deltanet as da
from workbench.figures import bench as fb
from workbench.figures import deltanet as fd
from workbench.figures import routing as fr

REPEATS = "one two three one two three one two three one two three one two"


@pytest.fixture(scope="module")
def tiny_model():
    return workbench.load("tiny", backend="torch")


@pytest.fixture(scope="module")
def traced(tiny_model):
    return tiny_model.generate(REPEATS, max_new_tokens=1, trace=Trace(
        routing=True, deltanet=DeltaNetCapture(states="all", inputs=True), attention=True))


def test_effective_attention_is_drawn_per_position(traced):
    d = traced.deltanet
    n = d.n_tokens
    assert len(set(d.tokens.tolist())) < n                 # repeated tokens: merged axes would shrink
    fig = fd.effective_attention(d, int(d.layers[0]), 0, traced.attention)
    for trace in fig.data:
        m = len(trace.z)
        assert m == len(trace.z[0]) and list(trace.x) == list(range(m)) and list(trace.y) == list(range(m))
    assert len(fig.data[0].z) == n and len(fig.data[1].z) == traced.attention.probs.shape[-1]
    assert fig.data[0].z[0][1] is None                     # above the diagonal: empty, not NaN


def all_figures(traced, tiny_model):
    d, r = traced.deltanet, traced.routing
    layer, head = da.longest_memory(d)
    yield from [fd.half_lives(d), fd.half_life_over_tokens(d, layer), fd.write_strength(d, layer),
                fd.state_norm(d), fd.state_norm(d, layer), fd.effective_rank(d, layer),
                fd.state_matrix(d, layer, head, 3), fd.effective_attention(d, layer, head, traced.attention),
                fr.token_map(r, 2), fr.token_experts(r, 2), fr.entropy(r), fr.shared_gate(r),
                fr.expert_load(r), fr.load_balance(r), fr.locality(r), fr.specialisation(r, 2),
                fr.coactivation(r, int(r.layers[0])), fr.flow(r, int(r.layers[0])),
                fb.results(workbench.bench(tiny_model, prompt_tokens=8, new_tokens=2, repeats=1)),
                fr.token_map(engine_trace(traced, tiny_model), 2), fr.token_experts(engine_trace(traced, tiny_model), 2),
                fr.expert_load(engine_trace(traced, tiny_model)), fb.serving(serving_rows())]


def engine_trace(traced, model):
    """The trace a serving engine would give for the same run: expert ids only (weights NaN)."""
    from workbench.remote import routing as rr
    r = traced.routing
    return rr.trace(r.experts.transpose(1, 0, 2), 0, model.spec, r.token_ids, list(r.tokens), r.n_prompt)


def serving_rows():
    """Serving-benchmark rows as a level with one-token answers and a failed level leave them: NaN latencies."""
    import pandas as pd
    nan = float("nan")
    row = {"concurrency": 1, "backend": "remote: test", "output_throughput": 10.0, "request_throughput": 2.0,
           **{f"{m}_ms_{s}": 5.0 for m in ("ttft", "tpot", "itl") for s in ("median", "p99")}}
    failed = dict(row, concurrency=4, output_throughput=nan, request_throughput=nan,
                  **{f"{m}_ms_{s}": nan for m in ("ttft", "tpot", "itl") for s in ("median", "p99")})
    return pd.DataFrame([row, failed])


def test_no_nan_reaches_the_browser(traced, tiny_model):
    """NaN is not JSON: the widget's message serialization drops the figure ("Out of range float")."""
    for fig in all_figures(traced, tiny_model):
        text = pio.to_json(fig, validate=False, engine="json")
        json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in {fig.layout.title.text}"))


def test_token_axes_stay_readable_and_hovers_name_the_position(tiny_model):
    long = tiny_model.generate("def f(x):\n    return x * 2\n" * 8, max_new_tokens=1, trace=Trace(routing=True))
    fig = fr.token_map(long.routing)
    assert long.routing.n_tokens > 60 and len(fig.layout.xaxis.tickvals) <= 40
    assert fig.data[0].customdata[0][5].startswith("#5 ")


def test_the_teaching_head_has_the_longest_memory(traced):
    d = traced.deltanet
    layer, head = da.longest_memory(d)
    t = da.head_half_lives(d)
    assert t[d.row(layer), head] == t.max()
    assert da.readable_tokens(np.array([0.001, 0.55, 12.3, 4500.0])).tolist() == ["<0.1", "0.6", "12", "4.5k"]
    text = fd.half_lives(d).data[0].text
    assert not any("e" in cell or cell == "0.0" for row in text for cell in row)


def test_explorer_default_head_is_the_longest_memory(tiny_model):
    from workbench.widgets import DeltaNetExplorer
    ex = DeltaNetExplorer(tiny_model, prompt=REPEATS, max_new_tokens=1)
    gen = tiny_model.generate(REPEATS, max_new_tokens=1, ignore_eos=True, trace=Trace(deltanet=True))
    assert (ex.layer.value, ex.head.value) == da.longest_memory(gen.deltanet)


def layout_items(fig):
    """Shapes, annotations and titled axes: what a stale layout would leave behind."""
    lay = fig.layout.to_plotly_json()
    axes = {k: v.get("title", {}).get("text") for k, v in lay.items() if k.startswith(("xaxis", "yaxis"))}
    return (len(lay.get("shapes", ())), [a.get("text") for a in lay.get("annotations", ())],
            {k: t for k, t in axes.items() if t}, lay.get("title", {}).get("text"))


@pytest.mark.parametrize("explorer", ["routing", "deltanet"])
def test_a_view_switch_draws_a_fresh_figure(tiny_model, explorer):
    from workbench.widgets import DeltaNetExplorer, RoutingExplorer
    from workbench.widgets.deltanet import VIEWS as DN_VIEWS
    from workbench.widgets.routing import VIEWS as ROUTING_VIEWS
    if explorer == "routing":
        ex = RoutingExplorer(tiny_model, prompt=REPEATS, compare_prompt="The cat sat.", max_new_tokens=2)
        views = list(ROUTING_VIEWS)

        def expected(view):
            layer = ex.layer.value if ex.layer.disabled is False else None
            return ex.session.figure(view, layer, ex.token.value)
    else:
        ex = DeltaNetExplorer(tiny_model, prompt=REPEATS, max_new_tokens=2)
        views = list(DN_VIEWS)

        def expected(view):
            return ex.session.figure(view, ex.layer.value, ex.head.value, ex.token.value)
    for previous, view in zip(views, views[1:] + views[:1]):
        ex.view.value = previous
        before = ex.area.figure
        ex.view.value = view
        assert "Error" not in ex.status.text, (view, ex.status.text)
        assert ex.area.figure is not before, view              # a new widget: nothing of the last view's layout
        assert layout_items(ex.area.figure) == layout_items(expected(view)), (previous, view)


def test_controls_a_view_does_not_use_are_disabled(tiny_model):
    from workbench.widgets import DeltaNetExplorer
    ex = DeltaNetExplorer(tiny_model, prompt=REPEATS, max_new_tokens=1)
    ex.view.value = "half-life (heads)"
    assert ex.layer.disabled and ex.head.disabled and ex.token.disabled
    ex.view.value = "state matrix"
    assert not (ex.layer.disabled or ex.head.disabled or ex.token.disabled)


def test_an_error_dims_the_old_result_and_run_is_disabled_while_running(tiny_model):
    from workbench.widgets import RoutingExplorer
    ex = RoutingExplorer(tiny_model, prompt="x = 1", max_new_tokens=1)
    states = []
    ex.run_button.observe(lambda c: states.append(c["new"]), names="disabled")
    ex.run_button.click()
    assert states == [True, False]
    ex.prompt.value = " "
    ex.run_button.click()
    assert "type a prompt" in ex.status.text and ex.area.widget.layout.opacity == "0.35"
    ex.prompt.value = "y = 2"
    ex.run_button.click()
    assert ex.area.widget.layout.opacity == "1"


def test_meter_placeholder_before_the_second_token():
    from workbench.widgets.speed import TokensPerSecondMeter
    meter = TokensPerSecondMeter()
    meter.start()
    meter.tick()
    assert "nan" not in meter.value and "- tok/s" in meter.value
    meter.tick()
    assert "nan" not in meter.value and "tok/s" in meter.value


def test_chat_panel_ctrl_enter_cut_replies_and_unknown_tools(tiny_model):
    from workbench.widgets import ChatPanel
    panel = ChatPanel(tiny_model, preset="greedy (reproducible)", max_new_tokens=3)
    panel.message.value = "Tell me about routers."
    panel.message.submit()                                   # what Ctrl/Cmd+Enter sends from the browser
    panel.wait(60)
    assert panel.last_result.finish_reason == "length"
    assert "cut at 3 tokens" in panel.status.text and "raise 'max tokens'" in panel.status.text
    from workbench.chat import ChatEvent
    from workbench.tools import ToolCall
    from workbench.widgets.chat import _Turn
    turn = _Turn()
    panel._on_event(ChatEvent("text", "Let me check.\n<tool_call>\n<function=get_weather>"), turn)
    call = ToolCall("get_weather", {"city": "Paris"}, error="unknown function 'get_weather'; available: none")
    panel._on_event(ChatEvent("tool_call", call=call), turn)
    shown = turn.html(live=False)
    assert "&lt;tool_call&gt;" not in shown and "a tool this chat does not have" in shown


def test_the_planner_does_not_promise_the_impossible():
    from workbench.figures.planner import ceilings
    mlx_on_nvidia = workbench.plan("Qwen/Qwen3.5-35B-A3B", "mlx-4bit", device="RTX 4090")
    assert not mlx_on_nvidia.fits and mlx_on_nvidia.verdict().startswith("cannot run on RTX 4090")
    assert "tok/s" not in mlx_on_nvidia.verdict()
    assert workbench.plan("Qwen/Qwen3.5-35B-A3B", "mlx-4bit", device="M4 Max 128GB").fits
    huge = workbench.plan("Qwen/Qwen3.5-397B-A17B", "gguf-q4_k_m", device="RTX 4090")
    assert huge.verdict().startswith("does not fit RTX 4090, even with expert offload")
    assert "tok/s" not in huge.verdict() and not huge.runs_with_offload
    assert [v for t in ceilings([huge]).data for v in t.y] == [None, None]
    roomy = workbench.plan("Qwen/Qwen3.5-397B-A17B", "gguf-q4_k_m", device="RTX 4090", host_memory_gb=512)
    assert roomy.runs_with_offload and "tok/s" in roomy.verdict()


def test_the_planner_panel_takes_ram_bandwidth_and_a_custom_device():
    from workbench.widgets import PlannerPanel
    from workbench.widgets.planner import CUSTOM
    panel = PlannerPanel(model="Qwen/Qwen3.5-397B-A17B", weights="gguf-q4_k_m", context=8192, device="RTX 4090")
    assert "even with expert offload" in panel.verdict.value and panel.device_memory.disabled
    panel.host_memory.value = 512
    assert "offload: experts of" in panel.verdict.value
    panel.device.value = CUSTOM
    panel.device_memory.value, panel.device_bandwidth.value = 400, 3000
    assert "fits custom device" in panel.verdict.value and "3,000 GB/s" in panel.verdict.value
    assert all(c.style.description_width == "initial" for c in (panel.model, panel.host_bandwidth))
    assert panel.area.figure.layout.yaxis.rangemode == "tozero"
