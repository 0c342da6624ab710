"""DeltaNet analyses checked against hand computations and the numpy reference."""
from importlib.resources import files

import numpy as np
import pytest

import workbench
from workbench import DeltaNetCapture, Trace
from workbench.analysis import deltanet as da
from workbench.planner.caches import cache_growth, deltanet_state_bytes, kv_bytes_per_token
from workbench.reference import gated_delta_rule

PROMPT = "one two three one two three one"


def test_half_life_and_effective_rank_by_hand():
    np.testing.assert_allclose(da.half_life(np.array([0.5, 0.25, np.exp(-np.log(2) / 10)])), [1, 0.5, 10])
    rank_one = np.outer([1.0, 2, 0], [3.0, 0, 1])
    np.testing.assert_allclose(da.effective_rank(rank_one), 1.0)
    np.testing.assert_allclose(da.effective_rank(np.eye(4)), 4.0)
    assert da.effective_rank(np.zeros((3, 3))) == 0.0


def test_effective_attention_reproduces_the_readout(tiny):
    d = tiny.generate(PROMPT, max_new_tokens=1, trace=Trace(deltanet=DeltaNetCapture(
        states="all", inputs=True))).deltanet
    for layer in d.state_layers[:2]:
        li, si = d.row(layer), d.state_row(layer)
        _, outputs = gated_delta_rule(d.queries[si], d.keys[si], d.values[si], d.decay[li], d.beta[li])
        for head in (0, 3):
            a = da.effective_attention(d, int(layer), head)
            assert np.allclose(np.triu(a, 1), 0)
            np.testing.assert_allclose(a @ d.values[si, :, head], outputs[:, head], rtol=1e-6, atol=1e-9)
    with pytest.raises(workbench.WorkbenchError, match="inputs=True"):
        da.effective_attention(tiny.generate(PROMPT, max_new_tokens=1, trace=Trace(deltanet=True)).deltanet, 0, 0)


def test_rank_over_tokens_grows_from_one(tiny):
    d = tiny.generate(PROMPT, max_new_tokens=1, trace=Trace(deltanet=DeltaNetCapture(states="all"))).deltanet
    r = da.rank_over_tokens(d, 0)
    assert r.shape == (d.n_tokens, 4)
    np.testing.assert_allclose(r[0], 1.0, atol=1e-6)  # one write: a rank-one state
    assert r[-1].max() > 1.5  # heads that forget slowly hold several directions


def test_cache_bytes_for_35b_a3b_by_hand():
    spec = workbench.ModelSpec.from_file(files("workbench") / "configs" / "Qwen3.5-35B-A3B.json")
    # 10 full-attention layers x (K + V) x 2 KV heads x 256 dims x 2 bytes
    assert kv_bytes_per_token(spec) == 10 * 2 * 2 * 256 * 2 == 20 * 1024
    # 30 DeltaNet layers x 32 heads x 128 x 128 float32 + conv (3 x (2*16*128 + 32*128) bf16)
    assert deltanet_state_bytes(spec) == 30 * (32 * 128 * 128 * 4 + 3 * (2 * 16 * 128 + 32 * 128) * 2)
    g = cache_growth(spec, 262_144, "35B-A3B")
    assert 3000 < g.crossover < 3300
    assert g.kv_bytes[-1] == 262_144 * 20 * 1024
