"""Backend selection, lazy framework imports, and the fused-kernel guard."""
import subprocess
import sys
import types

import pytest

from workbench.backends import choose_backend


def test_import_workbench_imports_no_framework():
    code = "import sys, workbench; print('torch' in sys.modules, 'mlx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_auto_backend_and_override(monkeypatch):
    monkeypatch.delenv("WORKBENCH_BACKEND", raising=False)
    assert choose_backend("auto") == ("mlx" if sys.platform == "darwin" else "torch")
    monkeypatch.setenv("WORKBENCH_BACKEND", "mlx")
    assert choose_backend("auto") == "mlx"
    assert choose_backend("torch") == "torch"  # an explicit choice wins


def test_model_reports_what_it_is(tiny):
    assert tiny.backend in ("torch", "mlx") and tiny.device == "cpu" and tiny.dtype == "float32"
    assert tiny.path.name == "tiny-random" and (tiny.path / "config.json").exists()
    assert tiny.spec.is_moe and tiny.spec.num_experts == 16 and tiny.spec.num_experts_per_tok == 4
    assert set(tiny.kernels) == {"gated_delta_rule", "causal_conv1d", "attention", "moe", "decode"}
    assert "Triton" not in " ".join(tiny.kernels.values())
    text = "print('héllo')\n"
    assert tiny.decode(tiny.encode(text)) == text


def test_fused_kernels_never_run_off_cuda():
    """A module whose function transformers bound to a fused kernel (as with fla installed):
    after the guard, CPU tensors take the torch reference and the kernel is never called."""
    torch = pytest.importorskip("torch")
    from workbench.backends.torch_backend import _guard_fused_kernels

    def reference(x, scale=1.0):
        return x * scale

    def fused_kernel(x, scale=1.0):
        raise RuntimeError("0 active drivers")  # what a Triton kernel does on a CPU-only machine

    def bind(torch_function):  # the shape of transformers' use_kernel_func_from_hub_with_fallback
        implementation = fused_kernel

        def wrapped(*args, **kwargs):
            return implementation(*args, **kwargs)
        wrapped.__wrapped__ = torch_function
        return wrapped

    module = types.ModuleType("fake_modeling")
    module.torch_chunk_gated_delta_rule = bind(reference)
    fused = _guard_fused_kernels(module)
    assert fused["torch_chunk_gated_delta_rule"] is fused_kernel
    x = torch.ones(3)
    assert torch.equal(module.torch_chunk_gated_delta_rule(x, scale=2.0), x * 2)
