"""Checks of a checkpoint folder's weight files, before and after a backend loads them.

Before: every safetensors file the folder (or its index) names exists and has a readable header
whose tensors lie inside the file, so a truncated download or a damaged file is named as such, not
left to a framework's error. After: what the framework reports of missing, unexpected and
mismatched tensors becomes one WorkbenchError (vision and multi-token-prediction weights aside: the
text model does not use them).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterable

from .errors import WorkbenchError

# Weights of the checkpoint that the text model does not load.
IGNORED_PREFIXES = ("mtp.", "model.visual.", "visual.", "vision_tower.", "model.mtp.")
MTP_PREFIXES = ("mtp.", "model.mtp.")


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of `folder`, each checked; a WorkbenchError naming the fix otherwise."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise WorkbenchError(f"{index} is not a safetensors index ({type(exc).__name__}: {exc}); "
                                 "download it again or delete it if the folder has one model.safetensors.") from None
        files = [folder / n for n in names]
        absent = [f.name for f in files if not f.exists()]
        if absent:
            raise WorkbenchError(f"{folder} is missing weight files its index names: {', '.join(absent[:5])}"
                                 f"{' ...' if len(absent) > 5 else ''}. The download is incomplete: fetch "
                                 "them again (hf download <repo>).")
    else:
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise WorkbenchError(f"{folder} has no *.safetensors weights: the workbench loads the safetensors "
                                 "files of Hugging Face releases (for a .gguf file use llama.cpp).")
    for f in files:
        _check_safetensors(f)
    return files


def mtp_tensors(folder: Path, layers: int) -> dict[str, tuple[Path, str]]:
    """Where the checkpoint's first multi-token-prediction layer lies: {name without the `mtp.`
    prefix: (file, key)}, from the safetensors headers alone (no tensor is read, no framework
    needed). Empty when config.json declares none (`layers` = mtp_num_hidden_layers) or the weight
    files hold none (many quantized re-uploads strip them)."""
    if layers < 1:
        return {}
    found: dict[str, tuple[Path, str]] = {}
    for f in weight_files(folder):
        for key in tensor_shapes(f):
            prefix = next((p for p in MTP_PREFIXES if key.startswith(p)), None)
            # Only the first MTP layer: every released Qwen3.5 has one, and drafts reuse it.
            if prefix and not (key.startswith(prefix + "layers.") and not key.startswith(prefix + "layers.0.")):
                found[key[len(prefix):]] = (f, key)
    return found


def check_mtp_tensors(folder: Path, expected: dict[str, tuple], found: dict[str, tuple]) -> None:
    """Raise when the MTP layer's tensors ({name without the prefix: shape}) are not all `found` at
    the shapes config.json gives (`expected`), naming what is wrong."""
    missing = sorted(set(expected) - set(found))
    bad = sorted(k for k in expected if k in found and tuple(found[k]) != tuple(expected[k]))
    if not (missing or bad):
        return
    parts = ([f"missing: {', '.join('mtp.' + k for k in missing[:6])}"] if missing else []) + \
            ([f"shapes that disagree with config.json: {', '.join('mtp.' + k for k in bad[:6])}"] if bad else [])
    raise WorkbenchError(f"the multi-token-prediction weights in {folder} are incomplete ({'; '.join(parts)}). "
                         "Download the checkpoint again; without them, generate without speculative=.")


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} of one safetensors file, from its header (nothing else is read)."""
    with Path(path).open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _check_safetensors(path: Path) -> None:
    size = path.stat().st_size
    damaged = (f"{path} is damaged or truncated ({{}}): download it again "
               "(hf download <repo> --force-download, or delete it from the cache).")
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise WorkbenchError(damaged.format(f"{size} bytes, shorter than a safetensors header"))
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise WorkbenchError(damaged.format(f"its header claims {n:,} bytes of a {size:,}-byte file"))
            header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorkbenchError(damaged.format(f"its header is not JSON: {exc}")) from None
    if not isinstance(header, dict):
        raise WorkbenchError(damaged.format("its header is not a table of tensors"))
    end = max((int(v["data_offsets"][1]) for k, v in header.items()
               if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v), default=0)
    if 8 + n + end > size:
        raise WorkbenchError(damaged.format(f"its tensors need {8 + n + end:,} bytes, the file has {size:,}"))


def check_load_report(folder: Path, missing: Iterable[str], unexpected: Iterable[str] = (),
                      mismatched: Iterable[str] = ()) -> None:
    """Raise when the text model did not get exactly the checkpoint's text weights."""
    missing = sorted(missing)
    unexpected = sorted(k for k in unexpected if not k.startswith(IGNORED_PREFIXES))
    mismatched = sorted(mismatched)
    if not (missing or unexpected or mismatched):
        return
    parts = []
    for what, names in (("missing", missing), ("with shapes that disagree with config.json", mismatched),
                        ("not in the model config.json describes", unexpected)):
        if names:
            shown = ", ".join(names[:6]) + (f" ... ({len(names)} in all)" if len(names) > 6 else "")
            parts.append(f"tensors {what}: {shown}")
    raise WorkbenchError(
        f"the weights in {folder} do not match its config.json; " + "; ".join(parts) + ". Nothing was "
        "loaded (the holes would be random values). Download the checkpoint again, or fix config.json "
        "(num_hidden_layers, vocab_size, ...) to match the weights.")


def mlx_quantization(config: dict) -> dict | None:
    """The MLX quantization block of a config (mlx-lm's `quantization`), or None."""
    block = config.get("quantization") or config.get("quantization_config")
    if isinstance(block, dict) and "bits" in block and "quant_method" not in block:
        return block
    return None
