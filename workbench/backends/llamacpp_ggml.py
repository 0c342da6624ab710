"""What the llama.cpp backend needs of ggml that llama-cpp-python does not bind: the `ggml_tensor`
struct the eval callback receives (layout from the pinned `ggml/include/ggml.h`), reading a
computed tensor into numpy on any device, the devices llama.cpp runs on, and the CPU buffer type
that MoE offload overrides point at."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

GGML_MAX_DIMS, GGML_MAX_SRC, GGML_MAX_OP_PARAMS, GGML_MAX_NAME = 4, 10, 64, 64
_DEVICE_TYPES = {0: "CPU", 1: "GPU", 2: "integrated GPU", 3: "accelerator"}
_NUMPY = {0: np.float32, 26: np.int32}   # the ggml types of the tensors a probe reads (F32, I32)


class GGMLTensor(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


class GGML:
    """ggml's C functions, from the libraries llama-cpp-python built beside libllama."""

    def __init__(self):
        import llama_cpp.llama_cpp as binding

        base = Path(binding._base_path)
        mode = getattr(ctypes, "RTLD_GLOBAL", 0)
        self.base = ctypes.CDLL(str(_find(base, "ggml-base")), mode=mode)
        self.ggml = ctypes.CDLL(str(_find(base, "ggml")), mode=mode)
        self.cpu = ctypes.CDLL(str(_find(base, "ggml-cpu")), mode=mode)
        self.cpu.ggml_backend_cpu_buffer_type.restype = ctypes.c_void_p
        b, g = self.base, self.ggml
        b.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
        b.ggml_backend_tensor_get.restype = None
        b.ggml_nbytes.argtypes, b.ggml_nbytes.restype = [ctypes.c_void_p], ctypes.c_size_t
        g.ggml_backend_dev_count.restype = ctypes.c_size_t
        g.ggml_backend_dev_get.argtypes, g.ggml_backend_dev_get.restype = [ctypes.c_size_t], ctypes.c_void_p
        g.ggml_backend_dev_by_type.argtypes, g.ggml_backend_dev_by_type.restype = [ctypes.c_int], ctypes.c_void_p
        for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
            getattr(b, name).argtypes, getattr(b, name).restype = [ctypes.c_void_p], ctypes.c_char_p
        b.ggml_backend_dev_type.argtypes, b.ggml_backend_dev_type.restype = [ctypes.c_void_p], ctypes.c_int
        b.ggml_backend_dev_buffer_type.argtypes = [ctypes.c_void_p]
        b.ggml_backend_dev_buffer_type.restype = ctypes.c_void_p

    def read(self, address: int) -> tuple[str, np.ndarray]:
        """The name and data of a computed tensor, as numpy in ggml's order reversed: a tensor of
        ne [a, b, c, d] becomes an array [d, c, b, a] (views keep their strides)."""
        t = GGMLTensor.from_address(address)
        dtype = np.dtype(_NUMPY[t.type])
        size = self.base.ggml_nbytes(address)
        buffer = np.empty(size, dtype=np.uint8)
        self.base.ggml_backend_tensor_get(address, buffer.ctypes.data, 0, size)
        shape = tuple(int(n) for n in reversed(t.ne))
        strides = tuple(int(n) for n in reversed(t.nb))
        flat = buffer[: size - size % dtype.itemsize].view(dtype)
        array = np.lib.stride_tricks.as_strided(flat, shape=shape, strides=strides)
        return t.name.decode(), np.array(array)  # a compact copy

    def devices(self) -> list[tuple[str, str, str]]:
        """(name, description, kind) of every device ggml can run on."""
        g, b = self.ggml, self.base
        out = []
        for i in range(g.ggml_backend_dev_count()):
            dev = g.ggml_backend_dev_get(i)
            out.append((b.ggml_backend_dev_name(dev).decode(), b.ggml_backend_dev_description(dev).decode(),
                        _DEVICE_TYPES.get(b.ggml_backend_dev_type(dev), "other")))
        return out

    def cpu_buffer_type(self) -> int:
        """The buffer type llama.cpp compares overrides with (`ggml_backend_cpu_buffer_type()`)."""
        return self.cpu.ggml_backend_cpu_buffer_type()


def readable_type(address: int) -> bool:
    return GGMLTensor.from_address(address).type in _NUMPY


def _find(folder: Path, name: str) -> Path:
    for candidate in (f"lib{name}.so", f"lib{name}.dylib", f"{name}.dll"):
        if (folder / candidate).exists():
            return folder / candidate
    raise FileNotFoundError(f"lib{name} is not beside libllama in {folder}")


_ggml: GGML | None = None


def ggml() -> GGML:
    global _ggml
    if _ggml is None:
        _ggml = GGML()
    return _ggml
