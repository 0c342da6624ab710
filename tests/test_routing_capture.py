"""Routing capture: what the workbench records equals routing read independently from the model
(transformers' own `output_router_logits`, through the numpy reference router), on both backends,
during prefill and decode; interventions change routing as specified and nothing else."""
import numpy as np
import pytest

import workbench
from workbench import Intervention, RoutingTrace, Trace
from workbench.reference import softmax, top_k_routing

PROMPT = "def fibonacci(n):\n    return n"


def router_logits_from_transformers(model_torch, ids):
    """[moe_layer, token, E] as transformers reports them for a full forward."""
    import torch
    with torch.inference_mode():
        out = model_torch.engine.model(input_ids=torch.as_tensor(ids)[None], output_router_logits=True)
    return np.stack([r.float().numpy() for r in out.router_logits])


def test_capture_matches_an_independent_read(tiny_pair):
    gens = {b: m.generate(PROMPT, max_new_tokens=8, ignore_eos=True, trace=Trace(routing=True, router_probs=True))
            for b, m in tiny_pair.items()}
    forwarded = gens["torch"].routing.token_ids
    logits = router_logits_from_transformers(tiny_pair["torch"], forwarded)
    experts, weights = top_k_routing(logits, k=4)
    for backend, gen in gens.items():
        r = gen.routing
        n_prompt = len(gen.prompt_ids)
        # one row per forwarded token: the prompt, then each generated token fed back
        assert r.n_tokens == n_prompt + len(gen.token_ids) - 1
        assert list(r.phase[:n_prompt]) == ["prompt"] * n_prompt and set(r.phase[n_prompt:]) == {"decode"}
        np.testing.assert_array_equal(r.token_ids, np.concatenate([gen.prompt_ids, gen.token_ids])[:r.n_tokens])
        assert r.experts.shape == (4, r.n_tokens, 4) and r.experts.dtype == np.int32
        np.testing.assert_array_equal(r.experts, experts, err_msg=backend)
        # Decode steps and one whole-sequence forward sum in different orders (and with other kernels
        # on AVX-512/AMX CPUs): up to 2.6e-5 apart on a Sapphire Rapids machine.
        np.testing.assert_allclose(r.weights, weights, atol=1e-4, err_msg=backend)
        assert np.all(np.diff(r.weights, axis=-1) <= 0), "experts are sorted by weight"
        np.testing.assert_allclose(r.weights.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(r.probs, softmax(logits), atol=1e-4, err_msg=backend)
        assert ((r.shared_gate > 0) & (r.shared_gate < 1)).all()
        assert list(r.layers) == list(tiny_pair[backend].spec.moe_layers)
        assert r.tokens[0] == tiny_pair[backend].decode([r.token_ids[0]])
    np.testing.assert_allclose(gens["torch"].routing.shared_gate, gens["mlx"].routing.shared_gate, atol=1e-4)


def test_stream_returns_the_same_trace_as_generate(tiny):
    stream = tiny.stream(PROMPT, max_new_tokens=5, trace=Trace(routing=True))
    text = "".join(stream)
    gen = tiny.generate(PROMPT, max_new_tokens=5, trace=Trace(routing=True))
    assert text == gen.text
    np.testing.assert_array_equal(stream.generation.routing.experts, gen.routing.experts)


def test_tracing_does_not_change_the_output(tiny):
    plain = tiny.generate(PROMPT, max_new_tokens=12, ignore_eos=True)
    traced = tiny.generate(PROMPT, max_new_tokens=12, ignore_eos=True,
                           trace=Trace(routing=True, router_probs=True, deltanet=True, attention=True))
    np.testing.assert_array_equal(plain.token_ids, traced.token_ids)


def test_trace_saves_and_loads_unchanged(tiny, tmp_path):
    r = tiny.generate(PROMPT, max_new_tokens=4, trace=Trace(routing=True, router_probs=True)).routing
    path = r.save(tmp_path / "routing.npz")
    back = RoutingTrace.load(path)
    for name in ("experts", "weights", "shared_gate", "layers", "token_ids", "tokens", "phase", "probs"):
        np.testing.assert_array_equal(getattr(back, name), getattr(r, name))
    assert back.num_experts == r.num_experts
    with pytest.raises(workbench.WorkbenchError, match="holds a RoutingTrace"):
        workbench.DeltaNetTrace.load(path)


def test_dense_model_refuses_routing(dense_pair):
    with pytest.raises(workbench.WorkbenchError, match="dense"):
        dense_pair["torch"].generate("hi", max_new_tokens=2, trace=Trace(routing=True))


def test_disabling_experts_routes_around_them(tiny_pair):
    ids = tiny_pair["torch"].encode(PROMPT)
    logits = router_logits_from_transformers(tiny_pair["torch"], ids)
    chosen = top_k_routing(logits, 4)[0]
    layer = 3
    off = [int(chosen[layer, 0, 0]), int(chosen[layer, 1, 0])]
    change = Intervention(disable={layer: off})
    masked = logits[layer].copy()
    masked[:, off] = -np.inf
    want_e, want_w = top_k_routing(masked, 4)
    outs = {}
    for backend, model in tiny_pair.items():
        gen = model.generate(ids, max_new_tokens=1, trace=Trace(routing=True), intervene=change)
        r = gen.routing
        assert not np.isin(r.experts[r.row(layer)], off).any()
        np.testing.assert_array_equal(r.experts[r.row(layer)], want_e, err_msg=backend)
        np.testing.assert_allclose(r.weights[r.row(layer)], want_w, atol=2e-5)
        # layers before the change route as before
        np.testing.assert_array_equal(r.experts[:r.row(layer)], chosen[:r.row(layer)])
        outs[backend] = model.logits(ids, intervene=change)
        assert not np.allclose(outs[backend], model.logits(ids))
    np.testing.assert_allclose(outs["torch"], outs["mlx"], atol=2e-4)


def test_forcing_an_expert_at_chosen_positions(tiny_pair):
    ids = tiny_pair["torch"].encode(PROMPT)
    layer, expert = 1, 9
    change = Intervention(force={layer: expert}, positions=[2, 5])
    probs = softmax(router_logits_from_transformers(tiny_pair["torch"], ids))[layer]
    for backend, model in tiny_pair.items():
        r = model.generate(ids, max_new_tokens=1, trace=Trace(routing=True), intervene=change).routing
        got = r.experts[r.row(layer)]
        for t in range(len(ids)):
            if t in (2, 5):
                assert expert in got[t]
                # the forced expert replaced the lowest-ranked choice; weights from the router's probs
                others = [e for e in np.argsort(-probs[t]) if e != expert][:3]
                assert set(got[t]) == set(others) | {expert}
                w = probs[t, got[t]] / probs[t, got[t]].sum()
                np.testing.assert_allclose(r.weights[r.row(layer), t], w.astype(np.float32), atol=2e-5)
            else:
                np.testing.assert_array_equal(np.sort(got[t]), np.sort(np.argsort(-probs[t])[:4]))


@pytest.mark.parametrize("change, message", [
    (Intervention(disable={7: [1]}), "not a MoE layer"),
    (Intervention(disable={3: [16]}), "outside 0..15"),
    (Intervention(disable={3: list(range(13))}), "fewer than the 4"),
    (Intervention(force={3: 2}, disable={3: [2]}), "also disabled"),
], ids=["not-moe-layer", "expert-out-of-range", "too-many-disabled", "forced-and-disabled"])
def test_bad_interventions_are_refused(tiny, change, message):
    with pytest.raises(workbench.WorkbenchError, match=message):
        tiny.generate("hi", max_new_tokens=2, intervene=change)
    assert tiny.generate("hi", max_new_tokens=2).finish_reason in ("stop", "length")  # still usable
