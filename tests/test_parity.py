"""The same checkpoint through torch and MLX: logits, greedy tokens, routing, cached decoding."""
import shutil

import numpy as np
import pytest

import workbench

PROMPT = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("pair", ["tiny_pair", "dense_pair"])
def test_float32_logits_agree(pair, request):
    models = request.getfixturevalue(pair)
    ids = models["torch"].encode(PROMPT)
    a, b = models["torch"].logits(ids), models["mlx"].logits(ids)
    assert a.shape == b.shape == (len(ids), models["torch"].spec.vocab_size)
    assert a.dtype == b.dtype == np.float32
    assert _rel(b, a) < 1e-4


@pytest.mark.parametrize("pair", ["tiny_pair", "dense_pair"])
def test_greedy_tokens_identical(pair, request):
    models = request.getfixturevalue(pair)
    outs = {b: m.generate(PROMPT, max_new_tokens=80, ignore_eos=True) for b, m in models.items()}
    ids = {b: g.token_ids for b, g in outs.items()}
    assert len(ids["torch"]) == 80
    np.testing.assert_array_equal(ids["torch"], ids["mlx"])
    assert outs["torch"].text == outs["mlx"].text


@pytest.mark.parametrize("backend", ["torch", "mlx"])
@pytest.mark.parametrize("name", ["tiny-random", "tiny-dense"])
def test_cached_decoding_matches_full_forward(name, backend, tiny_pair, dense_pair):
    model = (tiny_pair if name == "tiny-random" else dense_pair)[backend]
    engine = model.engine
    ids = model.encode(PROMPT)
    full = model.logits(ids)
    cache = engine.new_cache()
    split = len(ids) - 6
    last = engine.forward(ids[:split], cache)
    np.testing.assert_allclose(engine.to_numpy(last), full[split - 1], rtol=1e-4, atol=1e-4)
    for t in range(split, len(ids)):
        last = engine.forward(ids[t:t + 1], cache)
        np.testing.assert_allclose(engine.to_numpy(last), full[t], rtol=1e-4, atol=1e-4)


def _router_topk(model, ids):
    """Top-k experts of every MoE layer for a prompt, read from each backend's own router."""
    if model.backend == "torch":
        import torch
        picks = []
        hooks = [layer.mlp.gate.register_forward_hook(lambda m, i, o: picks.append(o[2].numpy().copy()))
                 for layer in model.engine.model.model.layers]
        with torch.inference_mode():
            model.engine.model(torch.as_tensor(ids)[None])
        for h in hooks:
            h.remove()
        return [np.sort(p, axis=-1) for p in picks]
    import mlx.core as mx
    inner = model.engine.model.language_model.model
    x = inner.embed_tokens(mx.array(ids)[None])
    picks = []
    from mlx_lm.models.base import create_attention_mask, create_ssm_mask
    fa_mask, ssm_mask = create_attention_mask(x, None), create_ssm_mask(x, None)
    for layer in inner.layers:
        h = layer.input_layernorm(x)
        r = layer.linear_attn(h, ssm_mask, None) if layer.is_linear else layer.self_attn(h, fa_mask, None)
        hidden = x + r
        gates = mx.softmax(layer.mlp.gate(layer.post_attention_layernorm(hidden)), axis=-1, precise=True)
        k = layer.mlp.top_k
        picks.append(np.sort(np.array(mx.argpartition(gates, kth=-k, axis=-1)[..., -k:])[0], axis=-1))
        x = layer(x, ssm_mask if layer.is_linear else fa_mask, None)
    return picks


@pytest.fixture(scope="module")
def bf16_copy(tmp_path_factory):
    """The bundled MoE checkpoint stored in bfloat16 (A_log kept float32), as Qwen releases are."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    src = workbench.hub.CHECKPOINTS / "tiny-random"
    dst = tmp_path_factory.mktemp("bf16") / "tiny-bf16"
    shutil.copytree(src, dst)
    state = load_file(src / "model.safetensors")
    state = {k: (v if k.endswith("A_log") or k.endswith("linear_attn.norm.weight") else v.to(torch.bfloat16))
             for k, v in state.items()}
    save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((dst / "config.json").read_text())
    config["text_config"]["dtype"] = "bfloat16"
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_bf16_checkpoint_routes_like_torch_on_mlx(bf16_copy):
    torch_model = workbench.load(bf16_copy, backend="torch", dtype="float32")
    mlx_model = workbench.load(bf16_copy, backend="mlx", device="cpu")
    ids = torch_model.encode(PROMPT * 3)
    for layer, (a, b) in enumerate(zip(_router_topk(torch_model, ids), _router_topk(mlx_model, ids))):
        np.testing.assert_array_equal(a, b, err_msg=f"MoE layer {layer}")


def test_mlx_lm_own_loader_rounds_norm_offsets_in_bf16(bf16_copy):
    """Why the workbench has its own MLX loader: mlx_lm.load adds 1 to the bf16 offsets in bf16."""
    import mlx.core as mx
    from mlx_lm import load as mlx_lm_load

    ours = workbench.load(bf16_copy, backend="mlx", device="cpu")
    theirs, _ = mlx_lm_load(str(bf16_copy))
    key = "input_layernorm"
    a = np.array(ours.engine.model.language_model.model.layers[0].input_layernorm.weight.astype(mx.float32))
    b = np.array(theirs.language_model.model.layers[0].input_layernorm.weight.astype(mx.float32))
    assert theirs.language_model.model.layers[0].input_layernorm.weight.dtype == mx.bfloat16, key
    assert np.abs(a - b).max() > 1e-4  # theirs is rounded to bf16 after adding 1; ours is not
