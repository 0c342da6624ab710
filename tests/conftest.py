"""Shared fixtures: the bundled checkpoints loaded once per backend for the whole session."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import workbench  # noqa: E402

# Every backend by default; WORKBENCH_TEST_BACKENDS=torch (or mlx, llamacpp, or a comma-separated
# list) runs the suite on those, for a machine that has only some frameworks (as einops selects its
# backends). A test that loads an unselected backend is skipped, as are cross-backend pairs and the
# tutorials (they run all three). The shared `tiny` fixtures run on torch and MLX, which load
# safetensors checkpoints; llama.cpp's tests load the bundled model's GGUF copies (tests/llamacpp).
LOCAL_BACKENDS = ("torch", "mlx")
ALL_BACKENDS = LOCAL_BACKENDS + ("llamacpp",)
BACKENDS = [b.strip() for b in os.environ.get("WORKBENCH_TEST_BACKENDS", ",".join(ALL_BACKENDS)).split(",")
            if b.strip()]
if not BACKENDS or set(BACKENDS) - set(ALL_BACKENDS):
    raise pytest.UsageError(f"WORKBENCH_TEST_BACKENDS={os.environ.get('WORKBENCH_TEST_BACKENDS')!r}: "
                            "name torch, mlx, llamacpp or several (comma-separated).")
BOTH = set(LOCAL_BACKENDS) <= set(BACKENDS)
EVERY = set(BACKENDS) == set(ALL_BACKENDS)


def pytest_collection_modifyitems(config, items):
    if EVERY:
        return
    skip = pytest.mark.skip(reason=f"the tutorials run every backend; WORKBENCH_TEST_BACKENDS={BACKENDS}")
    for item in items:
        if str(item.fspath).endswith(".ipynb") or "browser" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _selected_backends_only(monkeypatch):
    if EVERY:
        return
    import workbench.backends as backends
    real = backends.backend_class

    def selected(name):
        if name not in BACKENDS:
            pytest.skip(f"backend {name!r} is not selected (WORKBENCH_TEST_BACKENDS={','.join(BACKENDS)})")
        return real(name)

    monkeypatch.setattr(backends, "backend_class", selected)


@pytest.fixture(scope="session", params=[b for b in BACKENDS if b in LOCAL_BACKENDS])
def tiny(request):
    """The bundled random-weight MoE checkpoint (exact checks need a fixture no training changes)."""
    return workbench.load("tiny-random", backend=request.param, device="cpu")


def _pair(name):
    if not BOTH:
        pytest.skip("cross-backend test: needs torch and MLX selected")
    return {b: workbench.load(name, backend=b, device="cpu") for b in LOCAL_BACKENDS}


@pytest.fixture(scope="session")
def tiny_pair():
    """The bundled MoE checkpoint on both backends, for parity tests."""
    return _pair("tiny-random")


@pytest.fixture(scope="session")
def dense_pair():
    return _pair("tiny-dense")


def gguf_copy(kind: str):
    """The bundled model's GGUF copy `kind` (F32, Q8_0, Q4_0); skips when llama.cpp is not selected.
    ./dev setup makes them (scripts/make_gguf_copies.py); a bare checkout makes them here, the same way."""
    from workbench.hub import BUNDLED_GGUF, CHECKPOINTS, bundled_gguf

    if "llamacpp" not in BACKENDS:
        pytest.skip("the llama.cpp backend is not selected (WORKBENCH_TEST_BACKENDS)")
    assert kind in BUNDLED_GGUF["tiny"]
    path = bundled_gguf("tiny", kind)
    if not path.exists():
        from workbench.gguf.convert import convert, quantize
        full = bundled_gguf("tiny", "F32")
        full.parent.mkdir(parents=True, exist_ok=True)
        if not full.exists():
            convert(CHECKPOINTS / "tiny", full, "f32")
        if kind != "F32":
            quantize(full, path, kind)
    return path
