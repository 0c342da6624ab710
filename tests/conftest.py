"""Shared fixtures: the bundled checkpoints loaded once per backend for the whole session."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from selection import ALL_BACKENDS, BACKENDS, BOTH, EVERY, LOCAL_BACKENDS  # noqa: E402,F401

import workbench  # noqa: E402


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

