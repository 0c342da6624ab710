"""The MLX probe runs its own copy of mlx-lm's sparse MoE block (to read and change the routing):
it must stay bit-identical to upstream's, so moving the mlx-lm pin cannot silently change results."""
import numpy as np
import pytest

import workbench

mx = pytest.importorskip("mlx.core")


def test_probe_moe_forward_is_upstreams_bit_for_bit():
    from workbench.backends.mlx_probes import moe_forward
    model = workbench.load("tiny", backend="mlx")
    x = mx.random.normal((1, 7, model.spec.hidden_size), key=mx.random.key(0))
    for layer in model.spec.moe_layers:
        block = model.engine.model.layers[layer].mlp
        ours, (indices, weights, _, _) = moe_forward(block, x)
        theirs = block(x)
        np.testing.assert_array_equal(np.array(ours), np.array(theirs))
        assert indices.shape == (1, 7, model.spec.num_experts_per_tok)
