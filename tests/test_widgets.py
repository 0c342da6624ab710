"""The explorers' controllers and widgets, driven without a browser (the browser tests prove
they render): every view draws, selections change what is drawn, errors land in the panel."""

import html

import numpy as np
import pytest

import workbench
from workbench.widgets.deltanet import VIEWS as DN_VIEWS
from workbench.widgets.deltanet import DeltaNetExplorer
from workbench.widgets.routing import VIEWS as ROUTING_VIEWS
from workbench.widgets.routing import RoutingExplorer


@pytest.fixture(scope="module", params=["torch", "llamacpp"])
def model(request):
    """The widgets on torch and on a real 4-bit GGUF file through llama.cpp."""
    from selection import BACKENDS, gguf_copy

    if request.param == "llamacpp":
        return workbench.load(gguf_copy("Q4_0"))
    if "torch" not in BACKENDS:
        pytest.skip("the torch backend is not selected (WORKBENCH_TEST_BACKENDS)")
    return workbench.load("tiny-random", backend="torch", device="cpu")


def test_routing_explorer_views_and_token_selection(model):
    ex = RoutingExplorer(model, prompt="def add(a, b):\n    return a + b\ndef sub(a, b):\n    return a - b",
                         compare_prompt="The cat sat on the mat.", max_new_tokens=4)
    assert "RoutingTrace" in ex.status.text
    for view in ROUTING_VIEWS:
        ex.view.value = view
        assert "Error" not in ex.status.text, (view, ex.status.text)
        assert len(ex.area.figure.data) >= 1, view
    ex.view.value = "token"
    before = ex.area.figure.data[0].y
    ex._select(3)  # what a click on the token map does
    assert ex.token.value == 3 and "<b>token 3</b>" in ex.details.value
    assert not np.array_equal(before, ex.area.figure.data[0].y)
    trace = ex.session.trace
    row = trace.token(3)[0]
    assert f"E{row['experts'][0]} ({row['weights'][0]:.2f})" in ex.details.value


def test_routing_explorer_reports_errors_and_stays_usable(model):
    ex = RoutingExplorer(model, prompt="hello")
    ex.view.value = "compare prompts"
    assert "second prompt" in ex.status.text
    ex.prompt.value = "   "
    ex.run_button.click()
    assert "type a prompt" in ex.status.text
    ex.prompt.value = "x = 1"
    ex.compare_prompt.value = "y = 2"
    ex.run_button.click()
    assert "Error" not in ex.status.text and ex.session.compare_trace is not None


def test_routing_explorer_refuses_a_dense_model(dense_pair):
    with pytest.raises(workbench.WorkbenchError, match="dense"):
        RoutingExplorer(dense_pair["torch"])


def test_deltanet_explorer_views_and_slider(model):
    ex = DeltaNetExplorer(model, prompt="one two three one two three", max_new_tokens=2)
    for view in DN_VIEWS:
        ex.view.value = view
        assert "Error" not in ex.status.text, (view, ex.status.text)
        assert len(ex.area.figure.data) >= 1, view
    ex.view.value = "state matrix"
    z0 = np.array(ex.area.figure.data[0].z)
    ex.token.value = 5
    z5 = np.array(ex.area.figure.data[0].z)
    assert not np.allclose(z0, z5)
    np.testing.assert_allclose(z5, ex.session.trace.state(ex.layer.value, 5, ex.head.value), rtol=1e-6)
    ex.layer.value = model.spec.linear_layers[-1]  # not kept yet: the explorer re-runs for it
    assert ex.session.trace.state_layers.tolist() == [model.spec.linear_layers[-1]]
    assert "Error" not in ex.status.text
    ex.prompt.value = ""
    ex.run_button.click()
    assert "type a prompt" in ex.status.text


def test_planner_panel_updates_with_its_controls():
    from workbench.widgets import PlannerPanel

    panel = PlannerPanel(model="Qwen/Qwen3.5-35B-A3B", weights="gguf-q4_k_m", context=8192, device="RTX 4090")
    assert "fits RTX 4090" in panel.verdict.value
    weights_q4 = panel.area.figure.data[0].y[0]
    panel.weights.value = "bf16"
    assert "does NOT fit" in panel.verdict.value and "offload" in panel.verdict.value
    assert panel.area.figure.data[0].y[0] > 3 * weights_q4
    kv_8k = panel.area.figure.data[1].y[0]
    panel.context.value = 65536
    assert panel.area.figure.data[1].y[0] == pytest.approx(8 * kv_8k)
    panel.device.value = "H200"
    assert "fits H200" in panel.verdict.value


def test_the_meter_counts_tokens_not_ids_or_chunks():
    """A token repeats ("0" "0" "0"), a token's text can be held back and come out with a later one
    (a possible stop string), and one token can yield two chunks (the end of thinking, then text):
    the meter counts `Chunk.tokens`, the generation's own count (it counted changes of token id,
    and a Q4_0 copy writing " # 1000000000" read 4 tokens for 12)."""
    from workbench.model import Chunk
    from workbench.widgets.speed import TokensPerSecondMeter

    stats = workbench.Stats(2, 6, 0.01, 200.0, 100.0, 0.06, None)
    gen = workbench.Generation(text="0000000", token_ids=np.full(6, 15), prompt_ids=np.zeros(2, np.int64),
                               finish_reason="length", stats=stats, raw_text="0000000")

    class Replayed:  # the chunks of one such stream, as Stream yields them
        generation = gen

        def __iter__(self):
            yield from [Chunk("0", True, 15, 1), Chunk("0", False, 15, 1), Chunk("0", False, 15, 2),
                        Chunk("000", False, 15, 5), Chunk("0", False, 15, 6)]
    meter = TokensPerSecondMeter()
    assert meter.run(Replayed()) is gen
    assert meter.tokens == 6


def test_streaming_meter_updates_per_token(model):
    from workbench.widgets import StreamingMeter

    panel = StreamingMeter(model, prompt="def f(x):", max_new_tokens=12)
    seen = []
    panel.meter.observe(lambda change: seen.append(change["new"]), names="value")
    gen = panel.generate()
    assert panel.meter.tokens == len(gen.token_ids) == 12
    assert sum("tok/s" in v for v in seen) >= 10          # updated while streaming, not only at the end
    assert "tok/s</b> decode" in panel.meter.value and html.escape(gen.text[:5]) in panel.text.value


def test_speed_dashboard_runs_a_sweep(model):
    from workbench.widgets import SpeedDashboard

    dash = SpeedDashboard(model, prompt_tokens="8", new_tokens="4", depths="0,16", repeats=1)
    steps = []
    dash.progress.observe(lambda change: steps.append(change["new"]), names="value")
    df = dash.run()
    assert list(df.test) == ["pp8", "tg4", "pp8 @ d16", "tg4 @ d16"]
    assert steps[-1] == 4 and len(steps) >= 4
    assert len(dash.area.figure.data) >= 1 and "pp8 @ d16" in dash.table.value
    dash.view.value = "depth sweep"
    assert [list(t.x) for t in dash.area.figure.data][0] == [0, 16]
    dash.depths.value = "zero"
    dash.button.click()
    assert "not a comma-separated list" in dash.status.text


def test_speed_dashboard_compares_plain_and_speculative_decoding(model):
    from workbench.widgets import SpeedDashboard

    dash = SpeedDashboard(model, prompt_tokens="8", new_tokens="6", depths="0", repeats=1, speculative="0,2")
    if not model.has_mtp:
        assert dash.speculative.layout.display == "none"
        return
    df = dash.run()
    assert list(df.speculative) == [0, 0, 2, 2] and df["tokens/verify"].iloc[3] >= 1
    assert sorted(t.name for t in dash.area.figure.data) == [f"{model.backend}, MTP k=2", f"{model.backend}, plain"]
    dash.speculative.value = "9"
    dash.button.click()
    assert "speculative=9 is invalid" in dash.status.text


def test_chat_panel_send_stream_stop_reset(model):
    from workbench.widgets import ChatPanel

    def get_weather(city: str) -> str:
        """Weather in a city."""
        return "sunny"

    panel = ChatPanel(model, tools=[get_weather], preset="greedy (reproducible)", max_new_tokens=8)
    assert panel.temperature.value == 0 and not panel.thinking.value
    panel.preset.value = "thinking: general"
    assert panel.thinking.value and panel.temperature.value == 1.0 and panel.presence_penalty.value == 1.5
    panel.preset.value = "greedy (reproducible)"
    seen = []
    panel.meter.observe(lambda change: seen.append(change["new"]), names="value")
    panel.message.value = "Hello there"
    panel.send()
    panel.wait(60)
    assert "done:" in panel.status.text and panel.messages[-1]["role"] == "assistant"
    assert "<b>you</b>" in panel.history.value and "Hello there" in panel.history.value
    assert "wb-answer" in panel.history.value and any("tok/s" in v for v in seen)
    assert panel.message.value == "" and not panel.send_button.disabled
    # Stop: a long reply is interrupted at once and the model stays usable
    panel.max_new_tokens.value = 2000
    panel.send("Tell me a long story")
    panel.stop()  # at once: the trained model's replies are short, and llama.cpp makes 500 tokens/s
    panel.wait(30)
    assert panel.last_result.finish_reason == "interrupted"
    assert len(panel.last_result.generations[-1].token_ids) < 2000
    assert model.generate("hi", max_new_tokens=2).token_ids.size == 2
    # an empty message or a bad setting is reported in the panel, not raised
    panel.send("   ")
    assert "type a message" in panel.status.text
    panel.reset()
    assert panel.messages == [] and panel.history.value == ""


def test_chat_panel_thinking_is_shown_apart(model):
    from workbench.widgets import ChatPanel

    panel = ChatPanel(model, preset="greedy (reproducible)", max_new_tokens=12)
    panel.thinking.value = True
    panel.send("Why is the sky blue?")
    panel.wait(60)
    assert "class='wb-thinking'" in panel.history.value  # the reply started in the thinking block
    assert panel.last_result.thinking is not None
