"""The predecessor architecture (qwen3_next, flat config, per-expert weights) loads on both backends."""
import shutil

import numpy as np
import pytest

import workbench
from workbench.hub import CHECKPOINTS


@pytest.fixture(scope="module")
def qwen3_next_folder(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

    folder = tmp_path_factory.mktemp("next") / "tiny-next"
    tokenizer_files = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]
    config = Qwen3NextConfig(
        vocab_size=3072, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
        linear_key_head_dim=16, linear_value_head_dim=16, num_experts=8, num_experts_per_tok=2,
        moe_intermediate_size=32, shared_expert_intermediate_size=64, norm_topk_prob=True,
        max_position_embeddings=2048, decoder_sparse_step=1, mlp_only_layers=[])
    torch.manual_seed(0)
    model = Qwen3NextForCausalLM(config).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.1 if p.ndim == 1 else 0.05))
    model.save_pretrained(folder)  # the release layout of Qwen3-Next: one tensor per expert
    for f in tokenizer_files:
        shutil.copy(CHECKPOINTS / "tiny-random" / f, folder / f)
    return folder


def test_qwen3_next_parity(qwen3_next_folder):
    models = {b: workbench.load(qwen3_next_folder, backend=b, device="cpu") for b in ("torch", "mlx")}
    assert models["torch"].spec.architecture == "qwen3_next" and models["torch"].spec.is_moe
    ids = models["torch"].encode("def main():\n    return 0\n")
    a, b = models["torch"].logits(ids), models["mlx"].logits(ids)
    assert np.abs(a - b).max() / np.abs(a).max() < 1e-4
    ga, gb = (m.generate(ids, max_new_tokens=32) for m in models.values())
    np.testing.assert_array_equal(ga.token_ids, gb.token_ids)
