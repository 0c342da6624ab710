"""Backend selection. A backend's framework is imported only when that backend is chosen."""
from __future__ import annotations

import importlib
import importlib.util
import os
import platform

from ..errors import BackendNotInstalled, WorkbenchError

BACKENDS = ("torch", "mlx", "llamacpp")
_EXTRAS = {"torch": "torch", "mlx": "mlx", "llamacpp": "gguf"}
_CLASSES = {"torch": "TorchBackend", "mlx": "MLXBackend", "llamacpp": "LlamaCppBackend"}


def _installed(name: str) -> bool:
    modules = {"torch": ("torch", "transformers"), "mlx": ("mlx", "mlx_lm"), "llamacpp": ("llama_cpp",)}[name]
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def choose_backend(backend: str | None = "auto") -> str:
    """'auto' -> WORKBENCH_BACKEND if set, else MLX on Apple Silicon when installed, else torch
    (which itself picks CUDA or CPU). An explicit name wins over the environment variable."""
    name = (backend or "auto").lower()
    if name == "auto":
        name = os.environ.get("WORKBENCH_BACKEND", "auto").lower() or "auto"
    if name == "auto":
        if _apple_silicon() and _installed("mlx"):
            return "mlx"
        if _installed("torch"):
            return "torch"
        if _installed("mlx"):
            return "mlx"
        raise BackendNotInstalled(
            "no backend is installed: pip install 'qwen-workbench[torch]' (PyTorch; CUDA or CPU) "
            "or 'qwen-workbench[mlx]' (Apple Silicon; CPU build on Linux).")
    if name not in BACKENDS:
        raise WorkbenchError(f"backend={backend!r} is unknown; use 'auto', 'torch', 'mlx' or 'llamacpp' "
                             "(or set WORKBENCH_BACKEND to one of them).")
    return name


def backend_class(name: str):
    """Import the backend module (and its framework) and return its Backend class."""
    if not _installed(name):
        raise BackendNotInstalled(
            f"backend {name!r} is not installed: pip install 'qwen-workbench[{_EXTRAS[name]}]'"
            + {"mlx": " (on Linux: mlx[cpu] and mlx-lm).",
               "torch": " (on a CPU-only Linux machine: pip install torch==2.13.0 first).",
               "llamacpp": " (llama-cpp-python; it compiles llama.cpp: several minutes, see the README)."}[name])
    module = importlib.import_module(f".{name}_backend", __name__)
    return getattr(module, _CLASSES[name])
