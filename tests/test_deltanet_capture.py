"""DeltaNet capture: states recorded by the workbench equal (a) the state each backend keeps in its
own cache and (b) the numpy reference of the gated delta rule fed with the same layer's inputs;
both backends agree; oversized requests are refused before anything runs."""
import numpy as np
import pytest

import workbench
from workbench import DeltaNetCapture, DeltaNetTrace, Trace
from workbench.reference import gated_delta_rule

PROMPT = "The cat sat on the mat. The cat sat on the"
ALL = Trace(deltanet=DeltaNetCapture(states="all", inputs=True))


def cache_states(model, ids):
    """Recurrent state of every linear layer after `ids`, read from the backend's own cache:
    [lin_layer, Hv, Dk, Dv]."""
    engine = model.engine
    cache = engine.new_cache()
    engine.forward(np.asarray(ids), cache)
    engine.synchronize()
    if model.backend == "torch":
        states = [cache.get_recurrent_state(i, state_idx=0) for i in model.spec.linear_layers]
        return np.stack([s[0].float().numpy() for s in states])
    return np.stack([np.array(cache[i][1][0]).swapaxes(-1, -2) for i in model.spec.linear_layers])


def test_final_state_equals_the_backends_cache(tiny):
    ids = tiny.encode(PROMPT)
    d = tiny.generate(ids, max_new_tokens=1, trace=ALL).deltanet
    assert d.n_tokens == len(ids)
    want = cache_states(tiny, ids)
    np.testing.assert_allclose(d.final_state, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d.states[:, -1], want, rtol=1e-5, atol=1e-6)


def test_states_match_the_numpy_reference(tiny):
    gen = tiny.generate(PROMPT, max_new_tokens=6, ignore_eos=True, trace=ALL)
    d = gen.deltanet
    assert d.n_tokens == len(gen.prompt_ids) + 5  # prompt + generated tokens fed back
    assert d.states.shape == (3, d.n_tokens, 4, 16, 16)
    np.testing.assert_array_equal(d.state_tokens, np.arange(d.n_tokens))
    for li, layer in enumerate(d.state_layers):
        states, _ = gated_delta_rule(d.queries[li], d.keys[li], d.values[li], d.decay[li], d.beta[li])
        rel = np.linalg.norm(d.states[li] - states) / np.linalg.norm(states)
        assert rel < 1e-5, (tiny.backend, layer, rel)
        np.testing.assert_allclose(d.state_norm[d.row(layer)], np.linalg.norm(states, axis=(-2, -1)), rtol=1e-4)
    assert ((d.decay > 0) & (d.decay < 1)).all() and ((d.beta > 0) & (d.beta < 1)).all()
    np.testing.assert_allclose(np.linalg.norm(d.keys, axis=-1), 1.0, atol=1e-4)


def test_backends_agree(tiny_pair):
    got = {b: m.generate(PROMPT, max_new_tokens=4, ignore_eos=True, trace=ALL).deltanet
           for b, m in tiny_pair.items()}
    for name in ("decay", "beta", "state_norm", "states", "final_state", "queries", "keys", "values"):
        np.testing.assert_allclose(getattr(got["torch"], name), getattr(got["mlx"], name),
                                   rtol=1e-4, atol=1e-5, err_msg=name)


def test_summaries_by_default_and_selected_snapshots(tiny):
    d = tiny.generate(PROMPT, max_new_tokens=3, trace=Trace(deltanet=True)).deltanet
    assert d.states is None and d.queries is None
    assert d.decay.shape == d.beta.shape == d.state_norm.shape == (3, d.n_tokens, 4)
    assert d.final_state.shape == (3, 4, 16, 16)
    with pytest.raises(workbench.WorkbenchError, match="kept no full states"):
        d.state(0, 0, 0)
    some = tiny.generate(PROMPT, max_new_tokens=3, trace=Trace(deltanet=DeltaNetCapture(
        states=[0, 4, 11], layers=[1], heads=[2, 3]))).deltanet
    assert some.states.shape == (1, 3, 2, 16, 16)
    np.testing.assert_array_equal(some.state_tokens, [0, 4, 11])
    full = tiny.generate(PROMPT, max_new_tokens=3, trace=ALL).deltanet
    np.testing.assert_allclose(some.state(1, 4, 3), full.state(1, 4, 3), rtol=1e-6)
    with pytest.raises(workbench.WorkbenchError, match="head 0 was not kept"):
        some.state(1, 4, 0)
    with pytest.raises(workbench.WorkbenchError, match="not a Gated DeltaNet layer"):
        some.row(3)


def test_trace_saves_and_loads_unchanged(tiny, tmp_path):
    d = tiny.generate(PROMPT, max_new_tokens=2, trace=ALL).deltanet
    back = DeltaNetTrace.load(d.save(tmp_path / "dn.npz"))
    for name in ("decay", "beta", "state_norm", "states", "state_tokens", "state_heads", "final_state",
                 "queries", "keys", "values", "tokens", "phase", "layers"):
        np.testing.assert_array_equal(getattr(back, name), getattr(d, name))


@pytest.mark.parametrize("capture, message", [
    (DeltaNetCapture(states="all", max_bytes=50_000), "over its budget"),
    (DeltaNetCapture(layers=[3]), "not a Gated DeltaNet layer"),
    (DeltaNetCapture(heads=[4]), "head 4 is out of range"),
    (DeltaNetCapture(states="some"), "use 'all'"),
], ids=["over-budget", "attention-layer", "bad-head", "bad-states"])
def test_bad_requests_are_refused_up_front(tiny, capture, message):
    with pytest.raises(workbench.WorkbenchError, match=message):
        tiny.generate(PROMPT, max_new_tokens=64, trace=Trace(deltanet=capture))
    assert tiny.generate("hi", max_new_tokens=2).token_ids.size  # still usable


def test_real_model_sizes_are_refused_with_advice():
    """A full-state request at 35B-A3B shapes is refused from the spec alone (no weights)."""
    from importlib.resources import files

    from workbench.capture import plan_probes
    spec = workbench.ModelSpec.from_file(files("workbench") / "configs" / "Qwen3.5-35B-A3B.json")
    with pytest.raises(workbench.WorkbenchError, match=r"GiB.*states=\[\.\.\.\]"):
        plan_probes(spec, Trace(deltanet=DeltaNetCapture(states="all")), None, 512)
    plan = plan_probes(spec, Trace(deltanet=DeltaNetCapture(states=[511], layers=[0], heads=[0])), None, 512)
    assert plan.state_tokens == {511}
