"""Generations that overlap (threads, paused or abandoned streams, interrupts) never see each other:
each gets the tokens it would get alone, and a probe touches only its own generation."""
import gc
import threading
from contextlib import contextmanager

import numpy as np
import pytest

from workbench import DeltaNetCapture, Intervention, Trace

PROMPT = "def route(tokens, experts):"
CHANGE = Intervention(disable={3: list(range(8))}, force={3: 9})


@contextmanager
def fast(model, on: bool):
    before = model.fast_decode
    if on and not model.engine.fast_decode_available:
        pytest.skip("no fast decode path on this backend")
    model.fast_decode = on
    try:
        yield
    finally:
        model.fast_decode = before


def plain(model, n=24, prompt=PROMPT):
    return model.generate(prompt, max_new_tokens=n, ignore_eos=True).token_ids


def run_threads(jobs):
    """Run callables in threads started together; return their results (re-raising errors)."""
    results, errors = [None] * len(jobs), []
    barrier = threading.Barrier(len(jobs))

    def work(i, job):
        try:
            barrier.wait()
            results[i] = job()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    return results


def no_probe_left(model):
    """Nothing of a probe stays on the model: torch hooks and patched functions, MLX class swaps."""
    if model.backend == "torch":
        import importlib
        for layer in model.engine.model.model.layers:
            for module in layer.modules():
                assert not module._forward_hooks and not module._forward_pre_hooks, module
        mod = importlib.import_module(type(model.engine.model.model.layers[0].linear_attn).__module__)
        for name in ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule"):
            assert getattr(mod, name).__name__ != "wrapped", name
    else:
        import mlx_lm.models.qwen3_5 as q
        assert q.gated_delta_update.__name__ != "wrapped"
        for layer in model.engine.model.layers:
            for _, module in layer.named_modules():
                assert not type(module).__name__.startswith("Probed"), module


@pytest.mark.parametrize("fast_on", [True, False], ids=["fast", "reference"])
def test_two_threads_on_one_model_get_their_own_tokens(tiny, fast_on):
    with fast(tiny, fast_on):
        prompts = [PROMPT, "Once upon a time, in a land of experts,"]
        alone = [plain(tiny, 32, p) for p in prompts]
        for _ in range(5):
            got = run_threads([lambda p=p: plain(tiny, 32, p) for p in prompts])
            for a, b in zip(alone, got):
                np.testing.assert_array_equal(a, b)


def test_an_intervention_in_one_thread_does_not_change_another(tiny):
    base = plain(tiny)
    changed = tiny.generate(PROMPT, max_new_tokens=24, ignore_eos=True, intervene=CHANGE).token_ids
    assert not np.array_equal(base, changed)  # the intervention matters, so a leak would show
    for _ in range(3):
        got = run_threads([lambda: tiny.generate(PROMPT, max_new_tokens=24, ignore_eos=True,
                                                 intervene=CHANGE).token_ids,
                           lambda: plain(tiny)])
        np.testing.assert_array_equal(got[0], changed)
        np.testing.assert_array_equal(got[1], base)
    no_probe_left(tiny)


def test_paused_overlapping_abandoned_and_interrupted_streams_leave_no_trace(tiny):
    base = plain(tiny)
    traced = Trace(routing=True, deltanet=DeltaNetCapture(states="all", inputs=True))
    # paused: an intervened stream and a traced one, both left half-way
    paused = tiny.stream(PROMPT, max_new_tokens=24, ignore_eos=True, intervene=CHANGE)
    paused_iter = iter(paused)
    next(paused_iter)
    other = tiny.stream(PROMPT, max_new_tokens=24, ignore_eos=True, trace=traced)
    other_iter = iter(other)
    next(other_iter)
    np.testing.assert_array_equal(plain(tiny), base)
    # overlapping traces interleaved token by token (RecursionError / nesting on main)
    a = tiny.stream(PROMPT, max_new_tokens=6, ignore_eos=True, trace=traced)
    b = tiny.stream(PROMPT, max_new_tokens=6, ignore_eos=True, trace=traced)
    for _ in zip(a, b):
        pass
    list(a), list(b)
    # abandoned: dropped half-way and collected
    del paused, paused_iter
    gc.collect()
    # interrupted: an exception in the consumer in the middle of a traced run
    with pytest.raises(KeyboardInterrupt):
        for i, _ in enumerate(tiny.stream(PROMPT, max_new_tokens=12, ignore_eos=True, intervene=CHANGE,
                                          trace=traced)):
            if i == 3:
                raise KeyboardInterrupt
    np.testing.assert_array_equal(plain(tiny), base)
    no_probe_left(tiny)
    # the one still paused finishes with its own complete record
    rest = list(other_iter)
    gen = other.generation
    assert len(rest) >= 1 and gen.routing.n_tokens == len(gen.prompt_ids) + len(gen.token_ids) - 1
    assert gen.deltanet.states.shape[1] == gen.deltanet.n_tokens
    np.testing.assert_array_equal(gen.token_ids, base)


def test_a_finished_trace_records_nothing_more(tiny):
    gen = tiny.generate(PROMPT, max_new_tokens=4, ignore_eos=True, trace=Trace(routing=True))
    before = gen.routing.experts.copy()
    for _ in range(3):
        plain(tiny, 8)
    np.testing.assert_array_equal(gen.routing.experts, before)
    no_probe_left(tiny)


def test_overlapping_traces_in_threads_each_record_their_own_run(tiny):
    prompts = [PROMPT, "A different prompt, longer, with other tokens in it."]
    trace = Trace(routing=True, deltanet=True)
    alone = [tiny.generate(p, max_new_tokens=8, ignore_eos=True, trace=trace) for p in prompts]
    got = run_threads([lambda p=p: tiny.generate(p, max_new_tokens=8, ignore_eos=True, trace=trace)
                       for p in prompts])
    for a, b in zip(alone, got):
        np.testing.assert_array_equal(a.routing.experts, b.routing.experts)
        np.testing.assert_allclose(a.deltanet.state_norm, b.deltanet.state_norm, rtol=1e-5)
    no_probe_left(tiny)


# ---- Stop and streams ------------------------------------------------------------------------
def test_stop_before_iterating_makes_no_token(tiny):
    stream = tiny.stream(PROMPT, max_new_tokens=16, ignore_eos=True)
    stream.stop()
    assert list(stream) == []
    gen = stream.generation
    assert gen.finish_reason == "interrupted" and len(gen.token_ids) == 0 and gen.text == ""


def test_a_stream_runs_once(tiny):
    stream = tiny.stream(PROMPT, max_new_tokens=6, ignore_eos=True)
    first = next(iter(stream))
    rest = "".join(stream)               # a second loop continues where the first stopped
    assert list(stream) == []            # and once done there is nothing more: no second run
    gen = stream.generation
    assert gen.raw_text == first + rest and len(gen.token_ids) == 6


def test_stop_right_after_send_is_not_lost(tiny):
    """The chat loop stopped before its stream exists (Stop pressed right after Send)."""
    from workbench.chat import ChatLoop
    loop = ChatLoop(tiny, [{"role": "user", "content": "Tell me a very long story."}], max_new_tokens=64)
    loop.stop()
    result = loop.run()
    assert result.finish_reason == "interrupted"
    assert len(result.generations[-1].token_ids) == 0


def test_the_chat_panel_and_a_cell_on_one_model(tiny):
    """The panel generates in its background thread while a cell generates on the same model."""
    pytest.importorskip("ipywidgets")
    from workbench.chat import ChatLoop
    from workbench.widgets import ChatPanel

    message = [{"role": "user", "content": "Tell me about routers."}]
    solo = ChatLoop(tiny, message, max_new_tokens=48, temperature=0.0).run().generations[-1].token_ids
    base = plain(tiny, 32)
    with fast(tiny, tiny.engine.fast_decode_available):
        panel = ChatPanel(tiny, preset="greedy (reproducible)", max_new_tokens=48)
        panel.send("Tell me about routers.")
        cell = plain(tiny, 32)
        panel.wait(120)
    np.testing.assert_array_equal(cell, base)
    np.testing.assert_array_equal(panel.last_result.generations[-1].token_ids, solo)
