"""Routing analyses checked against hand computations on small traces."""
import numpy as np
import pytest

import workbench
from workbench import Intervention, RoutingTrace, Trace
from workbench.analysis import routing as ra


def small_trace(probs=True) -> RoutingTrace:
    """2 MoE layers (model layers 1, 3), 4 tokens, top-2 of 4 experts."""
    experts = np.array([[[0, 1], [0, 1], [1, 2], [0, 3]],
                        [[2, 3], [2, 0], [2, 3], [1, 2]]], dtype=np.int32)
    weights = np.full(experts.shape, 0.5, dtype=np.float32)
    p = None
    if probs:
        p = np.full((2, 4, 4), 0.25, dtype=np.float32)
        p[0, 0] = [0.7, 0.1, 0.1, 0.1]
    return RoutingTrace(experts=experts, weights=weights, shared_gate=np.full((2, 4), 0.5, np.float32),
                        layers=np.array([1, 3]), token_ids=np.array([5, 6, 5, 5]),
                        tokens=np.array(["a", "b", "a", "a"]), phase=np.array(["prompt"] * 3 + ["decode"]),
                        num_experts=4, probs=p)


def test_expert_load_and_balance():
    load = ra.expert_load(small_trace())
    # layer 1: expert 0 in 3 of 4 tokens, 1 in 3, 2 in 1, 3 in 1
    np.testing.assert_allclose(load.load[0], [0.75, 0.75, 0.25, 0.25])
    np.testing.assert_allclose(load.load.sum(1), 2.0)
    assert load.uniform == 0.5
    np.testing.assert_allclose(load.cv[0], np.std([0.75, 0.75, 0.25, 0.25]) / 0.5)
    np.testing.assert_allclose(load.max_over_mean[0], 1.5)
    # layer 3: expert 2 in all 4, 3 in 2, 0 in 1, 1 in 1 -> none unused
    np.testing.assert_allclose(load.load[1], [0.25, 0.25, 1.0, 0.5])
    assert load.unused_share.tolist() == [0.0, 0.0]
    # aux loss E * sum_i f_i P_i; layer 3 has uniform probs -> E * 2 * 1/4 = 2 = k
    np.testing.assert_allclose(load.aux_loss[1], 2.0)
    p0 = np.array([[0.7, 0.1, 0.1, 0.1]] + [[0.25] * 4] * 3).mean(0)
    np.testing.assert_allclose(load.aux_loss[0], 4 * (load.load[0] * p0).sum(), rtol=1e-6)
    assert ra.expert_load(small_trace(probs=False)).aux_loss is None
    np.testing.assert_allclose(ra.expert_load(small_trace(), phase="decode").load[0], [1, 0, 0, 1])


def test_entropy_coactivation_flow_locality():
    t = small_trace()
    h = ra.routing_entropy(t)
    np.testing.assert_allclose(h[1, 0], np.log(4))
    np.testing.assert_allclose(h[0, 0], -(0.7 * np.log(0.7) + 3 * 0.1 * np.log(0.1)), rtol=1e-6)
    co = ra.coactivation(t, layer=1)
    # expert 0 chosen by tokens 0, 1, 3; with expert 1 in tokens 0, 1 -> 2/3
    np.testing.assert_allclose(co[0, 1], 2 / 3)
    np.testing.assert_allclose(np.diag(co), 1.0)
    flow = ra.cross_layer_flow(t, layer=1)
    assert flow[0, 2] == 2 and flow[1, 2] == 1 and flow[0, 1] == 1 and flow.sum() == 4
    with pytest.raises(workbench.WorkbenchError, match="last MoE layer"):
        ra.cross_layer_flow(t, layer=3)
    loc = ra.locality(t)
    # layer 1 overlaps: t0-t1 2/2, t1-t2 1/2, t2-t3 0 -> mean 0.5
    np.testing.assert_allclose(loc.loc[1, "observed"], 0.5)
    np.testing.assert_allclose(loc.loc[1, "ratio"], 0.5 / loc.loc[1, "shuffled"])


def test_specialisation_and_comparison():
    spec = ra.specialisation(small_trace(), min_count=3)
    assert set(spec.token_id) == {5}  # token "b" occurs once
    row = spec[spec.layer == 3].iloc[0]
    assert row.expert == 2 and row.share == 1.0
    a, b = small_trace(), small_trace()
    cmp = ra.compare_loads(a, b, labels=("code", "prose"))
    np.testing.assert_allclose(cmp.jsd, 0.0, atol=1e-12)
    b.experts[:] = 3 - a.experts  # mirror the expert ids
    cmp = ra.compare_loads(a, b, labels=("code", "prose"))
    assert (cmp.jsd > 0).all() and cmp.jsd.max() <= 1.0
    assert "code prefers" in cmp.preferred().columns
    np.testing.assert_allclose(ra.jensen_shannon(np.array([1.0, 0]), np.array([0, 1.0])), 1.0)


def test_intervention_effect_on_the_bundled_model(tiny):
    layer = tiny.spec.moe_layers[-1]
    r = tiny.generate("def add(a, b):", max_new_tokens=1, trace=Trace(routing=True)).routing
    top = np.bincount(r.experts[r.row(layer)].ravel(), minlength=16).argsort()[::-1][:4].tolist()
    effect = ra.intervention_effect(tiny, "def add(a, b):", Intervention(disable={layer: top}), max_new_tokens=8)
    assert effect.kl.shape == (len(tiny.encode("def add(a, b):")),)
    assert (effect.kl >= -1e-9).all() and effect.mean_kl > 0
    none = ra.intervention_effect(tiny, "def add(a, b):", Intervention(), max_new_tokens=4)
    np.testing.assert_allclose(none.kl, 0.0, atol=1e-9)
    assert none.text == none.changed_text


def random_trace(n_tokens=3000, vocab=1000, k=4, e=16, seed=0) -> RoutingTrace:
    """Routing with no structure at all: each token picks k of e experts uniformly at random."""
    rng = np.random.default_rng(seed)
    experts = np.argsort(rng.random((2, n_tokens, e)), axis=-1)[..., :k].astype(np.int32)
    ids = rng.integers(0, vocab, n_tokens)
    return RoutingTrace(experts=experts, weights=np.full(experts.shape, 1 / k, np.float32),
                        shared_gate=np.full((2, n_tokens), 0.5, np.float32), layers=np.array([0, 1]),
                        token_ids=ids, tokens=ids.astype(str), phase=np.array(["prompt"] * n_tokens), num_experts=e)


def test_baselines_match_routing_without_structure():
    """On random routing every statistic sits on its baseline, and the baselines are not k/E: the
    favourite-expert share of a token seen 3 times is ~0.74 by chance (top-4 of 16)."""
    t = random_trace()
    spec = ra.specialisation(t, min_count=3)
    three = spec[spec["count"] == 3]
    assert 0.70 < three.share.mean() < 0.78 and 0.70 < three.shuffled.mean() < 0.78
    assert abs(spec.share.mean() - spec.shuffled.mean()) < 0.02
    loc = ra.locality(t)
    np.testing.assert_allclose(loc.observed, loc.shuffled, atol=0.01)
    load = ra.expert_load(t)
    np.testing.assert_allclose(load.cv, load.cv_random, atol=0.03)
    half = t.n_tokens // 2
    first = RoutingTrace(**{**{f: getattr(t, f) for f in ("layers", "num_experts")},
                            "experts": t.experts[:, :half], "weights": t.weights[:, :half],
                            "shared_gate": t.shared_gate[:, :half], "token_ids": t.token_ids[:half],
                            "tokens": t.tokens[:half], "phase": t.phase[:half]})
    cmp = ra.compare_loads(first, random_trace(seed=1))
    assert np.all(cmp.jsd < 3 * cmp.jsd_halves)     # two random sets differ as much as halves of one


def test_figures_show_the_baselines():
    from workbench.figures import routing as fr
    t = random_trace(300, vocab=40)
    names = [tr.name for tr in fr.specialisation(t).data]
    assert "shuffled routing (mean)" in names
    assert any("shuffled" in (tr.name or "") for tr in fr.locality(t).data)
    assert any("random router" in (tr.name or "") for tr in fr.load_balance(t).data)
    assert "halves" in fr.compare(ra.compare_loads(t, random_trace(300, seed=2))).data[0].y[0]
