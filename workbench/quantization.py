"""`workbench.quantize` (defined here): quantized copies of a checkpoint, made with each ecosystem's own tools:
mlx-lm's converter for MLX (`mlx_lm.convert`, its Qwen3.5 recipe: routers and shared-expert gates
at 8 bits) and llama.cpp's converter and quantizer for GGUF (`workbench.gguf.convert`). Every copy
is written beside its destination under a temporary name and moved into place when complete, so a
failure leaves nothing half-written; the result loads with `workbench.load(out)`.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path

from .errors import BackendNotInstalled, WorkbenchError
from .gguf.convert import QUANT_TYPES

MLX_FORMATS = {"mlx-8bit": 8, "mlx-6bit": 6, "mlx-4bit": 4, "mlx-3bit": 3}
GGUF_FORMATS = tuple(f"gguf-{k}" for k in QUANT_TYPES)
FORMATS = (*MLX_FORMATS, *GGUF_FORMATS)


def quantize(model, fmt: str, out: str | Path, group_size: int = 64, overwrite: bool = False) -> Path:
    """Write a quantized copy of `model` (a loaded Model, a bundled name, a checkpoint folder or a
    Hub id; the full-precision safetensors checkpoint) in format `fmt` to `out` (a folder for MLX,
    a .gguf file for GGUF). Returns `out`."""
    from . import hub
    from .model import Model

    if fmt not in FORMATS:
        raise WorkbenchError(f"format {fmt!r} is not one the workbench makes; use one of {', '.join(FORMATS)}.")
    if isinstance(model, Model):
        if model.backend == "llamacpp" or model.spec.raw.get("quantization"):
            raise WorkbenchError(f"{model.path.name} is already quantized ({model.dtype}): quantize from the "
                                 "full-precision checkpoint (its folder or Hub id), not from a quantized copy.")
        source = model.path
    else:
        if hub.resolve_gguf(model) is not None:
            raise WorkbenchError("quantize reads a safetensors checkpoint; a GGUF file is already converted "
                                 "(requantizing it would stack two roundings).")
        source = hub.resolve(model)
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise WorkbenchError(f"{out} already exists: choose another out=, or pass overwrite=True.")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt in MLX_FORMATS:
        return _mlx(source, out, MLX_FORMATS[fmt], group_size)
    if out.suffix.lower() != ".gguf":
        raise WorkbenchError(f"out={str(out)!r}: a GGUF copy is one file; give a path ending in .gguf.")
    from .gguf.convert import gguf_copy
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise BackendNotInstalled(f"{fmt} needs llama.cpp's quantizer: pip install 'qwen-workbench[gguf]' "
                                  "(it compiles llama.cpp: several minutes).") from None
    return gguf_copy(source, fmt.removeprefix("gguf-"), out)


def _mlx(source: Path, out: Path, bits: int, group_size: int) -> Path:
    try:
        from mlx_lm import convert
    except ImportError:
        raise BackendNotInstalled("MLX formats need mlx-lm: pip install 'qwen-workbench[mlx]' "
                                  "(on Linux this installs the CPU build, mlx[cpu]).") from None
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    target = staging / "model"
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # mlx-lm prints its progress
            convert(str(source), str(target), quantize=True, q_bits=bits, q_group_size=group_size)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        target.rename(out)
    except Exception as exc:
        raise WorkbenchError(f"mlx-lm's converter failed making a {bits}-bit copy of {source}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
