"""A damaged or inconsistent checkpoint folder never loads with holes filled by random values: each
gets a WorkbenchError that names the problem and the fix, on both backends."""
import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import workbench
from workbench.errors import WorkbenchError
from workbench.hub import CHECKPOINTS

BACKENDS = ["torch", "mlx"]


@pytest.fixture
def folder(tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(CHECKPOINTS / "tiny-random", dst)
    return dst


def edit_weights(folder, change):
    path = folder / "model.safetensors"
    weights = load_file(path)
    change(weights)
    save_file(weights, path, metadata={"format": "pt"})


def edit_config(folder, change):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_missing_tensor_is_named(folder, backend):
    edit_weights(folder, lambda w: w.pop("model.language_model.layers.1.mlp.gate.weight"))
    with pytest.raises(WorkbenchError, match=r"(?s)do not match its config.json.*layers.1.mlp.gate"):
        workbench.load(folder, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_extra_text_tensor_is_named(folder, backend):
    edit_weights(folder, lambda w: w.update({"model.language_model.extra.weight": np.ones(3, np.float32)}))
    with pytest.raises(WorkbenchError, match=r"(?s)do not match its config.json.*extra"):
        workbench.load(folder, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_more_layers_declared_than_stored(folder, backend):
    def more(c):
        t = c["text_config"]
        t["num_hidden_layers"] = 8
        t["layer_types"] = t["layer_types"] * 2
    edit_config(folder, more)
    with pytest.raises(WorkbenchError, match=r"(?s)do not match.*layers.(4|5|6|7)"):
        workbench.load(folder, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vocab_size_disagreeing_with_the_weights(folder, backend):
    edit_config(folder, lambda c: c["text_config"].update(vocab_size=c["text_config"]["vocab_size"] + 7))
    with pytest.raises(WorkbenchError, match=r"(?s)do not match.*embed_tokens"):
        workbench.load(folder, backend=backend)


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:5000]),
     "damaged or truncated"),
    (lambda f: (f / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"),
     "damaged or truncated"),
    (lambda f: (f / "model.safetensors").unlink(), "no \\*.safetensors weights"),
    (lambda f: (f / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}})), "missing weight files"),
    (lambda f: (f / "tokenizer.json").write_text("{garbage"), "not a tokenizer"),
    (lambda f: (f / "config.json").write_text("[1, 2]"), "holds a list"),
    (lambda f: (f / "chat_template.jinja").write_text("{% if %}"), "does not compile"),
    (lambda f: (f / "generation_config.json").write_text("[]"), "not a JSON object"),
], ids=["truncated", "garbage-header", "no-weights", "index-names-absent-file", "garbage-tokenizer",
        "config-is-a-list", "template-syntax", "generation-config-list"])
def test_damaged_files_are_named(folder, damage, message):
    damage(folder)
    for backend in BACKENDS:
        with pytest.raises(WorkbenchError, match=message):
            workbench.load(folder, backend=backend)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.update(num_experts_per_tok=17), "num_experts_per_tok = 17 with 16 experts"),
    (lambda t: t.update(num_hidden_layers=6), "num_hidden_layers = 6 but layer_types lists 4"),
    (lambda t: t.update(hidden_size="64"), "hidden_size = '64'"),
    (lambda t: t.update(layer_types=["linear_attention", "mamba", "linear_attention", "full_attention"]),
     "mamba"),
], ids=["top-k-above-experts", "layers-vs-types", "size-as-string", "unknown-layer-type"])
def test_impossible_configs_are_refused(folder, change, message):
    edit_config(folder, lambda c: change(c["text_config"]))
    with pytest.raises(WorkbenchError, match=message):
        workbench.load(folder, backend="torch")


def test_an_mlx_quantized_folder_on_torch_points_to_mlx(folder):
    edit_config(folder, lambda c: c.update(quantization={"group_size": 64, "bits": 4}))
    with pytest.raises(WorkbenchError, match="MLX-quantized weights .*backend='mlx'"):
        workbench.load(folder, backend="torch")


def test_vision_and_mtp_weights_are_not_missing_tensors():
    """The released layout keeps vision and MTP weights beside the text model: they load quietly."""
    for backend in BACKENDS:
        assert workbench.load("tiny-random", backend=backend).generate("hi", max_new_tokens=2)
