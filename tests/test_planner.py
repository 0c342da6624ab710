"""The planner: specs by name or path (also configs never seen), memory by hand, verdicts,
offload and ceilings, bad input."""
import json
from importlib.resources import files

import pytest
from meta_models import meta_text_model

import workbench
from workbench.planner import DEVICES, FORMATS, Device, plan, text_tensors
from workbench.planner.devices import GB

CONFIGS = files("workbench") / "configs"


def test_spec_by_hub_id_name_or_path_is_the_loaders_spec(tiny_pair):
    by_id = workbench.spec("Qwen/Qwen3.5-35B-A3B")
    assert by_id == workbench.spec("Qwen3.5-35B-A3B") == workbench.spec(CONFIGS / "Qwen3.5-35B-A3B.json")
    assert workbench.spec("Qwen/Qwen3.5-35B-A3B-FP8") == by_id  # derived repos share the architecture
    assert workbench.spec("tiny-random") == tiny_pair["torch"].spec == tiny_pair["mlx"].spec
    assert workbench.spec(tiny_pair["torch"].path) == tiny_pair["torch"].spec
    with pytest.raises(workbench.WorkbenchError, match="Known: .*Qwen/Qwen3.5-27B"):
        workbench.spec("Qwen/Qwen4-1T")


def test_a_config_the_registry_has_never_seen(tmp_path):
    """A made-up Qwen3.5-MoE size: counts still equal transformers' model."""
    raw = json.loads((CONFIGS / "Qwen3.5-35B-A3B.json").read_text())
    text = raw["text_config"]
    text.update(num_hidden_layers=12, layer_types=None, num_experts=64, num_experts_per_tok=6,
                hidden_size=1024, moe_intermediate_size=384, shared_expert_intermediate_size=384)
    text.pop("layer_types")
    (tmp_path / "config.json").write_text(json.dumps(raw))
    spec = workbench.spec(tmp_path / "config.json")
    assert spec.num_experts == 64 and spec.linear_layers == (0, 1, 2, 4, 5, 6, 8, 9, 10)
    assert spec.params_text == sum(p.numel() for p in meta_text_model(spec).parameters())
    assert plan(spec, "gguf-q4_k_m", 4096).weight_bytes > 0


@pytest.mark.parametrize("name", ["Qwen3.5-0.8B", "Qwen3.5-27B", "Qwen3.5-35B-A3B", "Qwen3.5-397B-A17B",
                                  "Qwen3-Next-80B-A3B-Instruct"])
def test_active_parameters_by_hand(name):
    """Active = all text parameters less the routed experts a token does not use and, when the
    embedding is not tied to the lm_head, all but one row of the embedding table."""
    spec = workbench.spec(name)
    unused_experts = len(spec.moe_layers) * (spec.num_experts - spec.num_experts_per_tok) \
        * 3 * spec.hidden_size * spec.moe_intermediate_size
    unread_rows = 0 if spec.tie_word_embeddings else (spec.vocab_size - 1) * spec.hidden_size
    assert spec.params_active == spec.params_text - unused_experts - unread_rows
    assert {t.layer for t in text_tensors(spec) if t.kind == "experts"} == set(spec.moe_layers)


def test_35b_a3b_memory_by_hand():
    spec = workbench.spec("Qwen/Qwen3.5-35B-A3B")
    p = plan(spec, "bf16", context=8192, device="H200")
    a_log = 30 * (32 + 128)  # float32 A_log and gated-norm weight: 2 bytes more per value than bf16
    assert p.weight_bytes == spec.params_text * 2 + a_log * 2
    assert p.kv_bytes == 8192 * 10 * 2 * 2 * 256 * 2           # tokens x layers x (K, V) x heads x dim x bf16
    assert p.state_bytes == 30 * (32 * 128 * 128 * 4 + 3 * (2 * 16 * 128 + 32 * 128) * 2)
    read = spec.params_active * 2 + a_log * 2 + p.kv_bytes + 2 * p.state_bytes
    assert p.read_per_token == pytest.approx(read, rel=1e-9)
    assert p.decode_ceiling == pytest.approx(4800e9 / read)
    assert p.fits and "fits H200" in p.verdict()
    assert p.table().loc["total", "GB"] == pytest.approx(p.total_bytes / GB)


def test_27b_q8_0_by_hand():
    spec = workbench.spec("Qwen3.5-27B")
    p = plan(spec, "gguf-q8_0", context=4096)
    small = sum(t.numel for t in text_tensors(spec) if t.kind == "small")
    assert p.weight_bytes == pytest.approx((spec.params_text - small) * 8.5 / 8 + small * 4)
    assert 8.49 < p.bits_per_weight < 8.52


def test_formats_order_and_overheads():
    spec = workbench.spec("Qwen3.5-35B-A3B")
    bits = {f: plan(spec, f, 1024).bits_per_weight for f in FORMATS}
    assert bits["bf16"] == pytest.approx(16, abs=0.01)
    assert 8.0 < bits["fp8"] < 8.5 and 4.5 <= bits["mlx-4bit"] < 4.6 and 4.6 < bits["gguf-q4_k_m"] < 5.0
    assert bits["gguf-q4_k_m"] < bits["gguf-q6_k"] < bits["gguf-q8_0"] < bits["bf16"]


def test_offload_when_it_does_not_fit():
    p = plan("Qwen3.5-35B-A3B", "bf16", context=8192, device="RTX 4090")
    assert not p.fits and p.offload is not None
    o = p.offload
    assert o.gpu_expert_layers + o.cpu_expert_layers == 40 and o.cpu_expert_layers > 0
    assert o.gpu_bytes <= DEVICES["RTX 4090"].usable_bytes
    assert 0 < o.decode_ceiling < p.decode_ceiling
    assert plan("Qwen3.5-27B", "bf16", device="RTX 4090").offload is None  # dense: nothing to offload


def test_custom_device_and_bad_input():
    mine = Device("my card", memory_gb=20, bandwidth_gbs=500)
    assert plan("Qwen3.5-4B", "bf16", 4096, device=mine).fits
    for kwargs, message in [({"weights": "q3"}, "not a known format"), ({"device": "GTX 9090"}, "not in the table"),
                            ({"context": 10**7}, "exceeds"), ({"batch": 0}, "batch=0")]:
        with pytest.raises(workbench.WorkbenchError, match=message):
            plan("Qwen3.5-4B", **kwargs)


def test_speculative_ceiling_counts_the_verify_and_the_drafts():
    from workbench.errors import WorkbenchError
    from workbench.planner import speculative_ceiling

    moe = workbench.plan("Qwen/Qwen3.5-35B-A3B", "bf16", context=4096, device="H200")
    dense = workbench.plan("Qwen/Qwen3.5-27B", "bf16", context=4096, device="H200")
    # Nothing accepted: the drafts and a wider verify cost bandwidth for no token.
    assert speculative_ceiling(moe, 2, 1.0).ceiling < moe.decode_ceiling
    assert speculative_ceiling(dense, 2, 1.0).ceiling < dense.decode_ceiling
    # The verify reads the dense weights once for all k + 1 tokens, but the union of their experts.
    full_dense, full_moe = speculative_ceiling(dense, 3, 4.0), speculative_ceiling(moe, 3, 4.0)
    assert full_dense.speedup > full_moe.speedup > 1
    one_token = moe.read_per_token
    assert one_token < full_moe.verify_bytes < 4 * one_token
    assert abs(speculative_ceiling(dense, 1, 2.0).verify_bytes - dense.read_per_token) / dense.read_per_token < 0.01
    assert "tokens per verify" in str(full_moe)
    for bad in ((0, 1.0), (2, 3.5), (2, 0.5)):
        with pytest.raises(WorkbenchError):
            speculative_ceiling(moe, *bad)
    with pytest.raises(WorkbenchError, match="device"):
        speculative_ceiling(workbench.plan("Qwen/Qwen3.5-27B", "bf16"), 2, 2.0)
