"""ModelSpec reads the real Qwen3.5-family configs; parameter counts match transformers' models."""
import json
import math
from pathlib import Path

import pytest
from meta_models import meta_text_model

from workbench.errors import WorkbenchError
from workbench.hub import CHECKPOINTS
from workbench.spec import ModelSpec

# The released models' config.json files, shipped with the package.
CONFIGS = Path(__file__).resolve().parents[1] / "workbench" / "configs"
REAL = sorted(CONFIGS.glob("*.json"))


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_reads_real_configs(path):
    assert len(REAL) == 7
    spec = ModelSpec.from_file(path)
    assert spec.num_layers == len(spec.layer_types)
    assert len(spec.full_attention_layers) * 4 == spec.num_layers  # 3 DeltaNet : 1 attention
    assert spec.linear_layers[:3] == (0, 1, 2) and spec.full_attention_layers[0] == 3
    assert spec.is_moe == ("-A" in path.stem)  # MoE names carry the active size: 35B-A3B
    assert 0 < spec.params_active <= spec.params_text + spec.vocab_size * spec.hidden_size


@pytest.mark.parametrize("path", REAL + [CHECKPOINTS / "tiny-random" / "config.json",
                                         CHECKPOINTS / "tiny-dense" / "config.json"],
                         ids=lambda p: p.parent.name if p.name == "config.json" else p.stem)
def test_parameter_counts_match_transformers(path):
    spec = ModelSpec.from_file(path)
    model = meta_text_model(spec)
    names = dict(model.named_parameters())
    total = sum(p.numel() for p in names.values())
    if spec.tie_word_embeddings:
        assert "lm_head.weight" not in names or names["lm_head.weight"] is names["model.embed_tokens.weight"]
    assert spec.params_text == total
    experts = sum(p.numel() for n, p in names.items() if ".mlp.experts." in n)
    unused = experts * (spec.num_experts - spec.num_experts_per_tok) // max(spec.num_experts, 1)
    embed = spec.vocab_size * spec.hidden_size
    # one embedding row is looked up; a tied table is read whole as the lm_head
    expected_active = total - unused - (0 if spec.tie_word_embeddings else embed - spec.hidden_size)
    assert spec.params_active == expected_active


def test_35b_a3b_is_what_its_name_says():
    spec = ModelSpec.from_file(CONFIGS / "Qwen3.5-35B-A3B.json")
    assert 34e9 < spec.params_text < 36e9
    assert 2.5e9 < spec.params_active < 3.5e9
    assert spec.num_experts == 256 and spec.num_experts_per_tok == 8 and spec.moe_layers == tuple(range(40))


def test_rejects_other_architectures(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(WorkbenchError, match="not a Qwen3.5-family architecture.*qwen3_5_moe"):
        ModelSpec.from_file(tmp_path)


def test_incomplete_config_names_the_missing_key(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_5", "text_config": {"hidden_size": 8}}))
    with pytest.raises(WorkbenchError, match="num_hidden_layers"):
        ModelSpec.from_file(tmp_path)


def test_spec_is_frozen():
    spec = ModelSpec.from_file(CHECKPOINTS / "tiny-random")
    with pytest.raises(Exception):
        spec.hidden_size = 1


@pytest.mark.parametrize("path", [p for p in REAL if "vision_config" in json.loads(p.read_text())],
                         ids=lambda p: p.stem)
def test_vision_tower_count_matches_transformers(path):
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5VisionModel

    spec = ModelSpec.from_file(path)
    config = AutoConfig.for_model(**dict(spec.raw))
    with torch.device("meta"):
        vision = Qwen3_5VisionModel(config.vision_config)
    assert spec.params_vision == sum(p.numel() for p in vision.parameters())


@pytest.mark.parametrize("name", ["tiny", "tiny-random", "tiny-dense"])
def test_total_equals_the_tensors_stored_in_the_checkpoint(name):
    """text + vision + MTP = every tensor of a checkpoint in the release layout."""
    from safetensors import safe_open

    spec = ModelSpec.from_file(CHECKPOINTS / name)
    with safe_open(CHECKPOINTS / name / "model.safetensors", "np") as f:
        stored = {k: f.get_slice(k).get_shape() for k in f.keys()}
    count = {part: sum(math.prod(s) for k, s in stored.items() if k.startswith(prefix))
             for part, prefix in (("mtp", "mtp."), ("vision", "model.visual."))}
    assert spec.params_mtp == count["mtp"] > 0
    assert spec.params_vision == count["vision"] > 0
    assert spec.params_total == sum(math.prod(s) for s in stored.values())
