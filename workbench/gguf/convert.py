"""GGUF copies made with llama.cpp's own tools: its converter (`convert_hf_to_gguf.py`, from the
source of the pinned llama-cpp-python) and its quantizer (`llama_model_quantize`, from the built
library). Nothing here writes GGUF itself.

A copy is written under a temporary name and renamed when complete, so a failed or interrupted
conversion leaves nothing half-written behind.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..errors import BackendNotInstalled, WorkbenchError

LLAMA_CPP_PYTHON = "0.3.36"   # the pinned version of the `gguf` extra; its sdist vendors llama.cpp
# What `workbench.quantize` / llama-quantize call each type -> llama_ftype.
QUANT_TYPES = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q6_k": 18, "q5_k_m": 17, "q5_k_s": 16,
               "q5_0": 8, "q4_k_m": 15, "q4_k_s": 14, "q4_0": 2, "q3_k_m": 12, "q2_k": 10, "iq4_nl": 25}
# The converter does not know the bundled checkpoints' 8k-vocabulary hash; their pre-tokenizer is
# Qwen3.5's exactly, which this wrapper checks before it says so.
_CONVERTER = r'''
import json, sys
from pathlib import Path
source, folder = Path(sys.argv[1]), Path(sys.argv[2])
sys.path[:0] = [str(source), str(source / "gguf-py")]
sys.argv = [str(source / "convert_hf_to_gguf.py")] + sys.argv[2:]
import conversion.base as base
original = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return original(self, tokenizer)
    except NotImplementedError:
        pre = json.loads((folder / "tokenizer.json").read_text()).get("pre_tokenizer") or {}
        steps = pre.get("pretokenizers", [pre])
        regex = next((s["pattern"]["Regex"] for s in steps if s.get("type") == "Split"), None)
        if regex != QWEN35:
            raise
        return "qwen35"
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
import convert_hf_to_gguf
convert_hf_to_gguf.main()
'''


def cache_dir() -> Path:
    """Where made files live: $WORKBENCH_CACHE, else ~/.cache/qwen-workbench."""
    return Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "qwen-workbench")


def llama_cpp_source() -> Path:
    """The llama.cpp tree vendored in the pinned llama-cpp-python sdist (converter, gguf-py),
    fetched from PyPI once and kept in the cache ($WORKBENCH_LLAMA_CPP overrides)."""
    if os.environ.get("WORKBENCH_LLAMA_CPP"):
        return Path(os.environ["WORKBENCH_LLAMA_CPP"])
    root = cache_dir() / f"llama-cpp-python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
    if (root / "convert_hf_to_gguf.py").exists():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                              ":all:", "-d", tmp, f"llama-cpp-python=={LLAMA_CPP_PYTHON}"],
                             capture_output=True, text=True)
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if run.returncode or not archives:
            raise WorkbenchError(
                f"llama.cpp's converter comes from the llama-cpp-python {LLAMA_CPP_PYTHON} source on PyPI, "
                f"which could not be fetched ({run.stderr.strip()[-300:]}). Download it on a machine with "
                "network access and set WORKBENCH_LLAMA_CPP to its vendor/llama.cpp folder.")
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
        wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
        cache_dir().mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache_dir()))   # on the same disk, so the rename is atomic
        try:
            with tarfile.open(archives[0]) as tar:
                members = [m for m in tar.getmembers()
                           if m.name.startswith(prefix) and m.name[len(prefix):].startswith(wanted)]
                tar.extractall(staging, members=members, filter="data")
            target = root.parent.parent   # <cache>/llama-cpp-python-<version>
            if not target.exists():
                (staging / f"llama_cpp_python-{LLAMA_CPP_PYTHON}").rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root


def convert(folder: str | Path, out: str | Path, outtype: str = "f32") -> Path:
    """A Hugging Face checkpoint folder -> one GGUF file, by llama.cpp's converter."""
    from .metadata import PRE_TOKENIZERS

    folder, out = Path(folder), Path(out)
    source = llama_cpp_source()
    tmp = out.with_name(out.name + ".partial")
    code = _CONVERTER.replace("QWEN35", repr(PRE_TOKENIZERS["qwen35"]))
    run = subprocess.run([sys.executable, "-c", code, str(source), str(folder), "--outfile", str(tmp),
                          "--outtype", outtype], capture_output=True, text=True)
    if run.returncode or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise WorkbenchError(f"llama.cpp's converter failed on {folder}:\n{run.stderr.strip()[-2000:]}")
    tmp.replace(out)
    return out


def quantize(source: str | Path, out: str | Path, kind: str, threads: int = 0) -> Path:
    """A GGUF file -> a copy in `kind` ("q8_0", "q4_k_m", ...), by llama.cpp's quantizer."""
    key = kind.lower().removeprefix("gguf-")
    if key not in QUANT_TYPES:
        raise WorkbenchError(f"{kind!r} is not a GGUF type the workbench makes; use one of "
                             f"{', '.join(QUANT_TYPES)}.")
    try:
        import llama_cpp
    except ImportError:
        raise BackendNotInstalled("quantizing to GGUF needs llama-cpp-python: pip install "
                                  "'qwen-workbench[gguf]' (it compiles llama.cpp: several minutes).") from None
    from ..backends.llamacpp_backend import quiet_logs
    quiet_logs()  # llama.cpp logs a line per tensor while it quantizes
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = QUANT_TYPES[key], threads
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params)
    if status != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise WorkbenchError(f"llama.cpp's quantizer failed ({status}) making {kind} from {source}.")
    tmp.replace(out)
    return out


def gguf_copy(folder: str | Path, kind: str, out: str | Path) -> Path:
    """A checkpoint folder -> a GGUF file of type `kind`: converted to F32, then quantized."""
    out = Path(out)
    key = kind.lower().removeprefix("gguf-")
    if key in ("f32", "f16", "bf16"):
        return convert(folder, out, key)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        full = convert(folder, Path(tmp) / "f32.gguf", "f32")
        return quantize(full, out, key)


def bundled_copy(name: str, kind: str) -> Path:
    """The bundled checkpoint `name`'s GGUF copy `kind` ("F32", "Q8_0", "Q4_0") in the cache, made
    the first time it is asked for (F32 by the converter, the others quantized from it)."""
    from ..hub import CHECKPOINTS, bundled_gguf

    out = bundled_gguf(name, kind)
    if out.exists():
        return out
    full = bundled_gguf(name, "F32")
    full.parent.mkdir(parents=True, exist_ok=True)
    for old in full.parent.glob(f"{name}-*.gguf"):  # copies of weights the checkpoint no longer has
        if not old.name.startswith(full.name[:-len("F32.gguf")]):
            old.unlink(missing_ok=True)
    if not full.exists():
        convert(CHECKPOINTS / name, full, "f32")
    return out if kind == "F32" else quantize(full, out, kind)
