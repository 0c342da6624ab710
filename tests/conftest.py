"""Shared fixtures: the bundled checkpoints loaded once per backend for the whole session."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import workbench  # noqa: E402

BACKENDS = ["torch", "mlx"]


@pytest.fixture(scope="session", params=BACKENDS)
def tiny(request):
    """The bundled random-weight MoE checkpoint (exact checks need a fixture no training changes)."""
    return workbench.load("tiny-random", backend=request.param, device="cpu")


@pytest.fixture(scope="session")
def tiny_pair():
    """The bundled MoE checkpoint on both backends, for parity tests."""
    return {b: workbench.load("tiny-random", backend=b, device="cpu") for b in BACKENDS}


@pytest.fixture(scope="session")
def dense_pair():
    return {b: workbench.load("tiny-dense", backend=b, device="cpu") for b in BACKENDS}
