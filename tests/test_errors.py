"""Bad input: a clear error naming the problem and the fix, and the model stays usable."""
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import workbench
from workbench.errors import BackendNotInstalled, WorkbenchError
from workbench.hub import CHECKPOINTS


def test_unknown_bundled_name():
    with pytest.raises(WorkbenchError, match="unknown model 'tinyy'.*tiny, tiny-dense"):
        workbench.load("tinyy")


def test_folder_without_config(tmp_path):
    with pytest.raises(WorkbenchError, match="has no config.json"):
        workbench.load(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(WorkbenchError, match="is not a folder"):
        workbench.load(str(tmp_path / "nope"))


def test_non_qwen_config(tmp_path):
    shutil.copytree(CHECKPOINTS / "tiny-random", tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(WorkbenchError, match="'llama' is not a Qwen3.5-family architecture"):
        workbench.load(tmp_path / "m")


def test_unknown_backend_and_device():
    with pytest.raises(WorkbenchError, match="backend='jax' is unknown"):
        workbench.load("tiny", backend="jax")
    with pytest.raises(WorkbenchError, match="device='tpu' is not an MLX device"):
        workbench.load("tiny", backend="mlx", device="tpu")
    with pytest.raises(WorkbenchError, match="dtype='int3'"):
        workbench.load("tiny", backend="torch", dtype="int3")


def test_mlx_cpu_moe_in_bf16_explains_why_not():
    with pytest.raises(WorkbenchError, match="float32 only"):
        workbench.load("tiny", backend="mlx", device="cpu", dtype="bfloat16")


def test_backend_not_installed_names_the_extra():
    """In a process where mlx cannot be imported, asking for it names the pip extra."""
    code = textwrap.dedent("""
        import sys, importlib.util
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name.split('.')[0] in ('mlx', 'mlx_lm') else real(name, *a)
        import workbench
        try:
            workbench.load('tiny', backend='mlx')
        except workbench.BackendNotInstalled as e:
            print('ERR', e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ERR backend 'mlx' is not installed: pip install 'qwen-workbench[mlx]'" in out
    assert issubclass(BackendNotInstalled, ImportError)


def test_bad_generation_input_leaves_the_model_usable(tiny):
    too_long = np.zeros(tiny.context_length + 5, dtype=np.int64)
    cases = [
        (dict(prompt=too_long), "the prompt has 2053 tokens but the context of this model is 2048"),
        (dict(prompt="hi", temperature=-0.5), "temperature"),
        (dict(prompt="hi", top_p=2.0), "top_p"),
        (dict(prompt="hi", max_new_tokens=0), "max_new_tokens"),
        (dict(prompt="hi", stop=[""]), "stop"),
        (dict(prompt=""), "empty"),
        (dict(prompt=3.5), "not understood"),
        (dict(prompt=[10**9]), "token ids must be in"),
        (dict(prompt=[{"content": "no role"}]), "role"),
    ]
    for kw, match in cases:
        with pytest.raises(WorkbenchError, match=match):
            tiny.generate(max_new_tokens=kw.pop("max_new_tokens", 4), **kw)
    assert tiny.generate("hi", max_new_tokens=3).stats.new_tokens == 3
