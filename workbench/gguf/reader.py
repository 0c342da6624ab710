"""Read a GGUF file's header: its metadata and tensor table, without loading any weights.

The layout (GGUF v2/v3, as ggml's `gguf.cpp` reads it): magic "GGUF", version u32, tensor count u64,
key-value count u64; then the key-values (a string key, a u32 type, a value; arrays are an element
type, a u64 count and the elements); then per tensor its name, dims, ggml type and data offset; the
data starts at the next multiple of `general.alignment` (32 by default). A file cut short is found
here, before llama.cpp maps it.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import WorkbenchError

# ggml type id -> (name, elements per block, bytes per block); gguf-py's GGML_QUANT_SIZES.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36), 10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8),
    28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
    42: ("Q2_0", 64, 18),
}
# llama_ftype (general.file_type) -> the name llama-quantize uses.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
          7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]   # ggml order: shape[0] is the row length (the innermost dimension)
    type: str                # "Q4_K", "F32", ...
    offset: int              # from the start of the data section
    nbytes: int


@dataclass
class GGUFHeader:
    """What a GGUF file says about itself. `metadata` values are Python scalars, strings, or lists
    (numeric arrays as numpy arrays)."""

    path: Path
    version: int
    metadata: dict
    tensors: list[TensorInfo] = field(repr=False)
    data_offset: int = 0

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def file_type(self) -> str:
        """The quantization the file was made as ("Q4_K_M", "F32", ...), or "unknown"."""
        code = self.metadata.get("general.file_type")
        return FILE_TYPES.get(int(code), f"type {code}") if code is not None else "unknown"

    def arch(self, key: str, default=None):
        """`<architecture>.<key>`, e.g. arch("block_count")."""
        return self.metadata.get(f"{self.architecture}.{key}", default)


class _Cursor:
    def __init__(self, buffer, path: Path):
        self.buffer, self.at, self.path = buffer, 0, path

    def take(self, n: int) -> memoryview:
        if self.at + n > len(self.buffer):
            raise WorkbenchError(
                f"{self.path} ends inside its header (at byte {self.at:,} of {len(self.buffer):,}): the file "
                "is truncated or not a GGUF file. Download or convert it again.")
        view = memoryview(self.buffer)[self.at:self.at + n]
        self.at += n
        return view

    def scalar(self, code: int):
        fmt = _SCALARS[code]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar(10)
        return bytes(self.take(n)).decode("utf-8", errors="replace")

    def value(self, code: int):
        if code == 8:
            return self.string()
        if code == 9:
            item, n = self.scalar(4), self.scalar(10)
            if item == 8:
                return [self.string() for _ in range(n)]
            if item in _NUMPY:
                dtype = np.dtype(_NUMPY[item])
                return np.frombuffer(self.take(n * dtype.itemsize), dtype=dtype).copy()
            raise self.bad(f"an array of value type {item}")
        if code in _SCALARS:
            return self.scalar(code)
        raise self.bad(f"value type {code}")

    def bad(self, what: str) -> WorkbenchError:
        return WorkbenchError(f"{self.path} has {what} at byte {self.at:,}, which GGUF does not define: the "
                              "file is damaged or not a GGUF file. Download or convert it again.")


def read_header(path: str | Path) -> GGUFHeader:
    """The metadata and tensor table of a GGUF file; a clear error if it is not one, is damaged,
    or is shorter than its tensor table says."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"{path} does not exist: pass the path of a .gguf file.")
    size = path.stat().st_size
    if size < 24:
        raise WorkbenchError(f"{path} is {size} bytes long, too short for a GGUF file: download or convert it again.")
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        cur = _Cursor(buffer, path)
        if bytes(cur.take(4)) != b"GGUF":
            raise WorkbenchError(f"{path} does not start with the GGUF magic: it is not a GGUF file "
                                 "(for a safetensors checkpoint, pass its folder).")
        version = cur.scalar(4)
        if version not in (2, 3):
            raise WorkbenchError(f"{path} is GGUF version {version}; this reader knows versions 2 and 3. "
                                 "Convert the model again with a current llama.cpp.")
        n_tensors, n_kv = cur.scalar(10), cur.scalar(10)
        metadata = {}
        for _ in range(n_kv):
            key = cur.string()
            metadata[key] = cur.value(cur.scalar(4))
        tensors = []
        for _ in range(n_tensors):
            name = cur.string()
            dims = tuple(int(cur.scalar(10)) for _ in range(cur.scalar(4)))
            code, offset = cur.scalar(4), cur.scalar(10)
            if code not in GGML_TYPES:
                raise cur.bad(f"tensor {name!r} of ggml type {code}")
            type_name, block, block_bytes = GGML_TYPES[code]
            nbytes = int(np.prod(dims, dtype=np.int64)) // block * block_bytes
            tensors.append(TensorInfo(name, dims, type_name, int(offset), nbytes))
        alignment = int(metadata.get("general.alignment", 32))
        data_offset = -(-cur.at // alignment) * alignment
    end = max((data_offset + t.offset + t.nbytes for t in tensors), default=data_offset)
    if end > size:
        short = next(t for t in tensors if data_offset + t.offset + t.nbytes > size)
        raise WorkbenchError(
            f"{path} is truncated: it is {size:,} bytes, but its tensor table needs {end:,} (tensor "
            f"{short.name!r} runs past the end). The download or conversion stopped early: fetch or "
            "convert the file again.")
    return GGUFHeader(path, version, metadata, tensors, data_offset)
