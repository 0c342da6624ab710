"""The bundled checkpoints have the exact layout of the Qwen3.5 releases."""
import json

import numpy as np
import pytest
from safetensors import safe_open

from workbench.hub import CHECKPOINTS


def _tensors(name):
    with safe_open(CHECKPOINTS / name / "model.safetensors", "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize("name,arch,cls", [("tiny", "qwen3_5_moe", "Qwen3_5MoeForConditionalGeneration"),
                                           ("tiny-random", "qwen3_5_moe", "Qwen3_5MoeForConditionalGeneration"),
                                           ("tiny-dense", "qwen3_5", "Qwen3_5ForConditionalGeneration")])
def test_release_layout(name, arch, cls):
    folder = CHECKPOINTS / name
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == arch and config["architectures"] == [cls]
    text = config["text_config"]
    assert text["mtp_num_hidden_layers"] == 1 and text["mamba_ssm_dtype"] == "float32"
    n = text["num_hidden_layers"]
    assert n % 4 == 0 and text["layer_types"] == (["linear_attention"] * 3 + ["full_attention"]) * (n // 4)
    assert "vision_config" in config
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (folder / f).exists()
    weights = _tensors(name)
    assert any(k.startswith("model.language_model.layers.") for k in weights)
    assert any(k.startswith("model.visual.") for k in weights)
    assert {"mtp.fc.weight", "mtp.norm.weight", "mtp.pre_fc_norm_embedding.weight",
            "mtp.pre_fc_norm_hidden.weight"} <= set(weights)
    assert weights["model.language_model.layers.0.linear_attn.A_log"].dtype == np.float32
    if arch == "qwen3_5_moe":
        e, i, h = text["num_experts"], text["moe_intermediate_size"], text["hidden_size"]
        assert weights["model.language_model.layers.0.mlp.experts.gate_up_proj"].shape == (e, 2 * i, h)
        assert weights["model.language_model.layers.0.mlp.experts.down_proj"].shape == (e, h, i)
        assert not any(".experts.0." in k for k in weights)  # fused, not per expert
    # The trained model may take 40 MB; the random fixtures stay small.
    assert sum(p.stat().st_size for p in folder.iterdir()) < (40e6 if name == "tiny" else 8e6)


@pytest.mark.parametrize("name", ["tiny-random", "tiny-dense"])
def test_every_parameter_is_off_its_initial_value(name):
    """Offsets initialised to 0 (norms), dt_bias to 1, conv/linear inits: none left as made."""
    for key, w in _tensors(name).items():
        assert np.std(w) > 0 or w.size == 1, key
        if key.endswith("layernorm.weight") or key.endswith(("q_norm.weight", "k_norm.weight", "model.norm.weight")):
            assert np.abs(w).mean() > 0.01, f"{key}: norm offset still ~0"
        if key.endswith("dt_bias"):
            assert not np.allclose(w, 1.0), key
