"""Qwen Workbench: run, inspect and measure Qwen3.5 hybrid models on PyTorch, MLX or llama.cpp.

`import workbench` imports no framework; a backend's framework is imported by `load`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BackendNotInstalled, WorkbenchError
from .generation import Generation, Stats
from .hub import bundled_names
from .records import AttentionTrace, DeltaNetTrace, RoutingTrace
from .sampling import SamplingParams
from .spec import ModelSpec
from .trace import DeltaNetCapture, Intervention, Trace

__all__ = ["load", "Model", "ModelSpec", "Generation", "Stats", "SamplingParams",
           "WorkbenchError", "BackendNotInstalled", "bundled_names",
           "Trace", "DeltaNetCapture", "Intervention", "RoutingTrace", "DeltaNetTrace", "AttentionTrace",
           "spec", "plan", "bench", "drift", "quantize", "connect", "serve"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .model import Model


def load(model: str | Path = "tiny", backend: str = "auto", device: str | None = None,
         dtype: str | None = None, revision: str | None = None, *, file: str | None = None,
         context: int | None = None, offload_experts=None) -> "Model":
    """Load a Qwen3.5-family checkpoint.

    model:    a bundled name ("tiny": Qwen3.5-MoE, "tiny-dense": dense Qwen3.5), a local folder in
              the Hugging Face layout, a Hub id such as "Qwen/Qwen3.5-35B-A3B", a .gguf file, a
              bundled GGUF copy ("tiny:Q8_0", "tiny:Q4_0", "tiny:F32"), or a folder / Hub id of GGUF
              files with `file=` ("*Q4_K_M.gguf": only that file is downloaded).
    backend:  "auto" (GGUF: llama.cpp; else MLX on Apple Silicon when installed, else torch on CUDA,
              else torch on CPU; the WORKBENCH_BACKEND environment variable overrides), "torch",
              "mlx" or "llamacpp".
    device:   torch: "cpu", "cuda", "cuda:N"; MLX: "gpu" or "cpu"; llama.cpp: "gpu" or "cpu".
              None picks the best one.
    dtype:    "float32", "bfloat16" or "float16"; None keeps the checkpoint's dtype (MLX on a CPU:
              float32, the only dtype its MoE kernels support). A GGUF file keeps its own types.
    revision: a branch, tag or commit for Hub ids.
    context:  the most tokens a generation may hold (llama.cpp allocates its cache for it; default
              min(model's context, 32768)); on torch and MLX it caps prompts and generations.
    offload_experts: llama.cpp on a GPU: keep the routed experts of this many layers in system RAM
              (llama.cpp's --n-cpu-moe), or pass `workbench.plan(...).offload`.
    """
    from . import hub
    from .backends import backend_class, choose_backend
    from .model import Model

    gguf = hub.resolve_gguf(model, file, revision)
    if gguf is not None:
        return _load_gguf(gguf, backend, device, dtype, context, offload_experts)
    if offload_experts is not None:
        raise WorkbenchError("offload_experts applies to GGUF files on the llama.cpp backend; torch and MLX "
                             "keep every weight on one device.")
    name = choose_backend(backend)
    if name == "llamacpp":
        raise WorkbenchError(f"the llama.cpp backend runs GGUF files, and {model!r} is a safetensors checkpoint: "
                             "pass a .gguf file (e.g. 'tiny:Q8_0'), or make one with "
                             "workbench.gguf.convert.gguf_copy(folder, 'q8_0', out).")
    from .checkpoint import weight_files
    from .tokenizer import Tokenizer

    path = hub.resolve(model, revision)
    spec = ModelSpec.from_file(path)
    tokenizer = Tokenizer(path)
    weight_files(path)  # damaged or missing files named before a framework reads them
    engine = backend_class(name).load(path, spec, device, dtype)
    return Model(engine, tokenizer, path, spec, context=context)


def _load_gguf(path: Path, backend, device, dtype, context, offload_experts) -> "Model":
    from .backends import backend_class
    from .gguf.check import check_tokenizer
    from .gguf.metadata import spec_from_gguf, tokenizer_from_gguf
    from .gguf.reader import read_header
    from .model import Model

    if (backend or "auto").lower() not in ("auto", "llamacpp"):
        raise WorkbenchError(f"{path.name} is a GGUF file, which runs on the llama.cpp backend "
                             f"(backend='llamacpp' or 'auto'), not {backend!r}; torch and MLX load "
                             "safetensors checkpoints.")
    header = read_header(path)
    spec = spec_from_gguf(header)
    tokenizer = tokenizer_from_gguf(header)
    engine = backend_class("llamacpp").load(path, spec, device, dtype, header=header, context=context,
                                            offload_experts=offload_experts)
    check_tokenizer(tokenizer, engine, path)
    return Model(engine, tokenizer, path, spec, context=engine.context)


def connect(url: str, model: str | None = None, api_key: str | None = None, **kwargs):
    """A model served by vLLM, SGLang, llama.cpp's server or mlx_lm.server at `url`
    ("http://host:port/v1"), with the Model interface for what a server can do (generate, stream,
    chat with tools, stats, routing where the engine returns it); see `workbench.remote.connect`."""
    from .remote import connect as _connect
    return _connect(url, model=model, api_key=api_key, **kwargs)


def serve(model="tiny", engine: str = "auto", **kwargs):
    """Start mlx_lm.server or llama.cpp's server on loopback with `model` (for `connect`); see
    `workbench.remote.servers.serve`."""
    from .remote.servers import serve as _serve
    return _serve(model, engine, **kwargs)


def spec(model: str | Path) -> ModelSpec:
    """The ModelSpec of a model without loading weights: a released model's Hub id or name
    ("Qwen/Qwen3.5-35B-A3B"), a config.json or checkpoint folder, a bundled name, or a Hub id
    whose config.json is in the local cache. The same spec `load()` gives the loaded model."""
    from .spec import spec as _spec
    return _spec(model)


def plan(model, weights: str | None = None, context: int = 32_768, batch: int = 1, device=None, **kwargs):
    """Memory plan and decode ceiling of a model (a ModelSpec or anything `spec` accepts) in a
    weight format (None: a quantized checkpoint's own, else bf16), at a context length, on a device;
    see `workbench.planner.plan`."""
    from .planner.plan import plan as _plan
    return _plan(model, weights=weights, context=context, batch=batch, device=device, **kwargs)


def bench(model, prompt_tokens=512, new_tokens=128, repeats: int = 5, depth=0, **kwargs):
    """Measure a loaded model like llama-bench: a pandas DataFrame with one row per test (pp<N>,
    tg<N>, pp<N>+tg<M>, at depth d<D>); see `workbench.benchmark`."""
    from .benchmark import bench as _bench
    return _bench(model, prompt_tokens=prompt_tokens, new_tokens=new_tokens, repeats=repeats, depth=depth, **kwargs)


def drift(reference, candidates, texts, context: int = 512, **kwargs):
    """What quantization changes: the same token ids through `reference` and each candidate (any
    backends), llama-perplexity's KL-divergence statistics, expert-routing agreement per MoE layer and
    DeltaNet state error per linear layer, as pandas tables; see `workbench.drift`."""
    from .comparison import drift as _drift
    return _drift(reference, candidates, texts, context=context, **kwargs)


def quantize(model, fmt: str, out, **kwargs):
    """A quantized copy ("mlx-4bit", "gguf-q4_k_m", ...) made with mlx-lm's or llama.cpp's own tools;
    it loads with `workbench.load(out)`. See `workbench.quantize`."""
    from .quantization import quantize as _quantize
    return _quantize(model, fmt, out, **kwargs)


def __getattr__(name):  # Model without importing a backend at package import
    if name == "Model":
        from .model import Model
        return Model
    raise AttributeError(name)
