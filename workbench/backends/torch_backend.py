"""PyTorch backend: transformers' Qwen3.5 / Qwen3.5-MoE / Qwen3-Next text models.

On CUDA, transformers binds flash-linear-attention (chunked and fused-recurrent gated delta rule)
and causal-conv1d when they are installed. Those are Triton/CUDA kernels: on any other device they
must never run (with triton installed on a CPU-only machine the first forward dies with "0 active
drivers"), so each bound function is wrapped to take the torch reference path off CUDA.
"""
from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import check_load_report, mlx_quantization
from ..errors import BackendNotInstalled, WorkbenchError
from ..sampling import SamplingParams
from ..spec import ModelSpec
from . import host_memory
from .base import Backend, Sampler, leaves
from .speculative_sampler import VerifyingSampler
from .torch_static import STATIC_ARCHITECTURES, StaticLease, StaticPool, StaticSnapshot

try:
    import torch
    import transformers  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise BackendNotInstalled(
        f"the torch backend needs PyTorch and transformers ({exc.name} is missing): "
        "pip install 'qwen-workbench[torch]' (on a CPU-only Linux machine install torch==2.13.0 "
        "first, or pip pulls a multi-GB CUDA build).") from None

_MODELING = {
    "qwen3_5_moe": "transformers.models.qwen3_5_moe.modeling_qwen3_5_moe",
    "qwen3_5": "transformers.models.qwen3_5.modeling_qwen3_5",
    "qwen3_next": "transformers.models.qwen3_next.modeling_qwen3_next",
}
# Module-level functions transformers binds to a fused kernel when its package is installed.
_FUSABLE = {
    "gated_delta_rule": ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule"),
    "causal_conv1d": ("causal_conv1d_fn", "causal_conv1d_update"),
}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _bound_implementation(fn) -> Any:
    """The implementation transformers chose for a `use_kernel_func_from_hub_with_fallback`
    function (kept in its closure), or the function itself."""
    cells = dict(zip(getattr(fn, "__code__", None) and fn.__code__.co_freevars or (),
                     fn.__closure__ or ()))
    cell = cells.get("implementation")
    return cell.cell_contents if cell is not None else fn


def _guard_fused_kernels(module) -> dict[str, Any]:
    """Make every fused-kernel binding in `module` fall back to torch off CUDA (once per module).

    Returns {function name: fused implementation or None}."""
    if hasattr(module, "_workbench_fused"):
        return module._workbench_fused
    fused: dict[str, Any] = {}
    for names in _FUSABLE.values():
        for name in names:
            wrapped = getattr(module, name, None)
            if wrapped is None:
                continue
            reference = getattr(wrapped, "__wrapped__", wrapped)
            impl = _bound_implementation(wrapped)
            if impl is reference or impl is wrapped:
                fused[name] = None
                continue
            fused[name] = impl

            def dispatch(x, *args, _fast=wrapped, _ref=reference, **kwargs):
                return (_fast if x.is_cuda else _ref)(x, *args, **kwargs)

            setattr(module, name, dispatch)
    module._workbench_fused = fused
    return fused


def _describe(fn) -> str:
    mod = getattr(fn, "__module__", "") or ""
    if mod.startswith("fla"):
        return f"flash-linear-attention Triton ({fn.__name__})"
    if mod.startswith("causal_conv1d"):
        return f"causal-conv1d CUDA ({fn.__name__})"
    return f"{mod}.{getattr(fn, '__name__', fn)}"


class TorchBackend(Backend):
    name = "torch"
    speculates = True

    @property
    def speculation_pays(self) -> bool:
        # On this project's 2-core CPU two drafts decoded `tiny` 1.6-1.7x faster than plain steps in
        # every run of scripts/bench_speculative.py; on a GPU a 3-token verify reads the weights about
        # once, as a plain step does. Not against CUDA graphs (`fast_decode`), whose replay
        # speculation's reference cache cannot take yet: unmeasured side by side, so plain stays the
        # default there.
        return not self.fast_decode

    def __init__(self, model, spec: ModelSpec, device: torch.device, dtype: torch.dtype, fused: dict):
        self.model, self.spec = model, spec
        self._device = device
        self._fused = fused
        # transformers 5.24 renamed forward(past_key_values=) to forward(cache=).
        forward_args = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        self.device = str(device)
        self.dtype = str(dtype).removeprefix("torch.")
        self._static = None
        if spec.architecture in STATIC_ARCHITECTURES:
            self._static = StaticPool(model, device, spec.max_position_embeddings, self._cache_arg)
        self.fast_decode_available = self._static is not None
        # On by default where it pays: on CUDA one graph replay replaces hundreds of kernel launches;
        # an eager step on a CPU gains nothing beyond noise (bench_decode_loop.py: 0.92x, 1.08x).
        self.fast_decode = self.fast_decode_available and device.type == "cuda"

    @classmethod
    def load(cls, path: Path, spec: ModelSpec, device: str | None, dtype: str | None) -> "TorchBackend":
        from transformers import AutoModelForCausalLM

        torch_device, torch_dtype = cls._placement(spec, device, dtype)
        placement = {} if torch_device.type == "cpu" else {"device_map": str(torch_device)}
        quantized = mlx_quantization(spec.raw)
        if quantized is not None:
            raise WorkbenchError(
                f"{path} holds MLX-quantized weights ({quantized.get('bits')}-bit, group size "
                f"{quantized.get('group_size')}), which transformers cannot read: load it with "
                "backend='mlx', or load the original bf16 checkpoint on torch.")
        try:
            with _quiet_transformers():  # the dropped vision/MTP weights are expected
                # Weights go straight to the GPU (accelerate's device_map), not through host memory.
                # Mismatched shapes are reported, not raised, so one message can name them all.
                model, report = AutoModelForCausalLM.from_pretrained(
                    path, dtype=torch_dtype, attn_implementation="sdpa", output_loading_info=True,
                    ignore_mismatched_sizes=True, **placement)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise WorkbenchError(f"transformers could not load {path} ({type(exc).__name__}: {exc}). Check "
                                 "that config.json and the weights come from the same release.") from None
        check_load_report(path, report["missing_keys"], report["unexpected_keys"],
                          [k[0] if isinstance(k, tuple) else k for k in report["mismatched_keys"]])
        backend = cls.from_module(model, spec)
        backend.locate_mtp(path)
        return backend

    @classmethod
    def from_module(cls, model, spec: ModelSpec) -> "TorchBackend":
        """Wrap a transformers causal LM already in memory (e.g. random weights built at a real
        model's shapes, as scripts/device_check.py does)."""
        model.eval()
        param = next(model.parameters())
        fused = _guard_fused_kernels(importlib.import_module(_MODELING[spec.architecture]))
        backend = cls(model, spec, param.device, param.dtype, fused)
        # Quiet: transformers says "falling back to the reference implementation" once, on the
        # first call; off CUDA that is the intended path and `.kernels` reports it.
        with _quiet_transformers():
            backend.warm_up()
        return backend

    @staticmethod
    def _placement(spec: ModelSpec, device: str | None, dtype: str | None) -> tuple["torch.device", "torch.dtype"]:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            torch_device = torch.device(device)
        except RuntimeError:
            raise WorkbenchError(f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'.") from None
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise WorkbenchError("device='cuda' was asked for but this PyTorch sees no CUDA GPU; "
                                 "use device='cpu' (or install a CUDA build of torch).")
        name = dtype or spec.dtype
        if name not in _DTYPES:
            raise WorkbenchError(f"dtype={name!r} is not supported; use one of {', '.join(_DTYPES)}.")
        return torch_device, _DTYPES[name]

    @property
    def kernels(self) -> dict[str, str]:
        on_cuda = self._device.type == "cuda"

        def part(names, reference):
            fast = [self._fused.get(n) for n in names]
            if on_cuda and all(fast):
                return " + ".join(_describe(f) for f in fast)
            return reference

        experts = getattr(self.model.config, "_experts_implementation", None) or "eager"
        return {
            "gated_delta_rule": part(_FUSABLE["gated_delta_rule"],
                                     "torch reference (chunked prefill, recurrent decode)"),
            "causal_conv1d": part(_FUSABLE["causal_conv1d"], "torch F.conv1d"),
            "attention": f"torch {self.model.config._attn_implementation}",
            "moe": (f"transformers experts ({experts})" if self.spec.is_moe else "dense MLP (torch)"),
            "decode": self._decode_words(self.fast_decode),
        }

    # ---- forward ------------------------------------------------------------------------
    def logits(self, token_ids: np.ndarray) -> np.ndarray:
        ids = torch.as_tensor(np.asarray(token_ids, dtype=np.int64), device=self._device)[None]
        with torch.inference_mode():
            out = self.model(input_ids=ids, use_cache=False)
        return self.to_numpy(out.logits[0])

    def new_cache(self, capacity: int | None = None, fast: bool = True):
        if fast and capacity and self.fast_decode:
            return self._static.lease(capacity)
        from transformers import DynamicCache
        return DynamicCache(config=self.model.config)

    def _load_mtp(self, folder, where):
        from .torch_mtp import load_mtp
        return load_mtp(self.model, folder, where)

    def speculation(self, cache, probe=None):
        from transformers import DynamicCache

        from .torch_speculation import TorchSpeculation
        if not self.has_mtp:
            return super().speculation(cache, probe)
        if not isinstance(cache, DynamicCache):
            raise ValueError("speculative decoding runs on the reference cache: new_cache(fast=False)")
        return TorchSpeculation(self, cache, _MODELING[self.spec.architecture], probe)

    def can_snapshot(self, cache) -> bool:
        return True

    def snapshot(self, cache, last_use: bool = False):
        import copy
        if isinstance(cache, StaticLease):  # the buffers belong to the pool: always a copy
            decoder = cache.decoder
            with torch.inference_mode():
                return StaticSnapshot(copy.deepcopy(decoder.cache), decoder.length)
        return cache if last_use else self.restore(cache)

    def restore(self, snapshot, capacity=None):
        import copy
        with torch.inference_mode():
            if isinstance(snapshot, StaticSnapshot):
                # Back onto the fast path: a leased decoder's buffers take the saved values in place
                # (a captured CUDA graph keeps pointing at them).
                lease = self._static.lease(max(capacity or 0, snapshot.length + 1))
                lease.decoder.load(snapshot.cache, snapshot.length)
                return lease
            return copy.deepcopy(snapshot)

    def snapshot_bytes(self, snapshot) -> int:
        held = snapshot.cache if isinstance(snapshot, StaticSnapshot) else snapshot
        return sum(t.numel() * t.element_size() for t in leaves(held, torch.Tensor))

    def decode_path(self, cache) -> str:
        return self._decode_words(isinstance(cache, StaticLease))

    def _decode_words(self, static: bool) -> str:
        if not static:
            return "transformers DynamicCache (reference path)"
        if self._static.graphs:
            return "static cache, one CUDA graph replay per token"
        if self._static.capture_error:
            return f"static cache, eager step (CUDA graph capture failed: {self._static.capture_error})"
        return "static cache, eager step"

    def forward(self, tokens, cache):
        if isinstance(cache, StaticLease):
            if isinstance(tokens, np.ndarray):
                return cache.decoder.prefill(tokens)
            return cache.decoder.step(tokens)
        if isinstance(tokens, np.ndarray):
            ids = torch.as_tensor(tokens.astype(np.int64, copy=False), device=self._device)[None]
        else:
            ids = tokens.view(1, 1)
        with torch.inference_mode():
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_arg: cache})
        return out.logits[0, -1]

    def probe(self, plan):
        from .torch_probes import TorchProbe
        return TorchProbe(self, plan)

    def make_sampler(self, params: SamplingParams) -> Sampler:
        return _TorchSampler(params, self.model.config.get_text_config().vocab_size, self._device)

    def hardware_name(self) -> str:
        if self._device.type == "cuda":
            return torch.cuda.get_device_name(self._device)
        return super().hardware_name()

    def to_numpy(self, value) -> np.ndarray:
        value = value.detach()
        return (value.float() if value.is_floating_point() else value).cpu().numpy()

    def to_int(self, token) -> int:
        return int(token.item())

    def synchronize(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def reset_peak_memory(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self._device)
        else:
            host_memory.reset_peak()

    def peak_memory(self) -> int | None:
        if self._device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self._device))
        return host_memory.peak_bytes()


class _quiet_transformers:
    """transformers' warnings and progress bars off inside the block."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging
        self._log = hf_logging
        self._verbosity, self._bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        self._log.set_verbosity(self._verbosity)
        if self._bars:
            self._log.enable_progress_bar()
        return False


class _TorchSampler(VerifyingSampler):
    """The on-device sampler: its own seeded generator and presence mask. Called with logits
    `[vocab]` it returns a token (device scalar); `verify` judges a speculative step's drafts."""

    def __init__(self, params: SamplingParams, vocab: int, device):
        self.params = params
        self.seen = torch.zeros(vocab, dtype=torch.float32, device=device) if params.presence_penalty else None
        self.generator = None
        if not params.greedy:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(params.seed if params.seed is not None
                                       else int.from_bytes(os.urandom(4), "little"))

    def __call__(self, logits):
        with torch.inference_mode():
            logits = self._adjusted(logits)
            if self.params.greedy:
                token = torch.argmax(logits)
            else:
                token = torch.multinomial(_probs(logits, self.params), 1, generator=self.generator)[0]
            self._mark(token)
            return token

    def verify(self, logits, drafts):
        with torch.inference_mode():
            return super().verify(logits, drafts)

    def _ids(self, drafts):
        return drafts.tolist()

    def _row_argmaxes(self, logits):
        return torch.argmax(logits.float(), dim=-1).tolist()

    def _adjusted(self, row):
        row = row.float()
        return row - self.params.presence_penalty * self.seen if self.seen is not None else row

    def _argmax(self, row):
        return int(torch.argmax(row))

    def _distribution(self, row):
        return _probs(row, self.params)

    def _probability(self, p, token):
        return float(p[token])

    def _uniform(self):
        return float(torch.rand((), generator=self.generator, device=self.generator.device))

    def _draw(self, p, without):
        if without is not None:
            p = p.clone()
            p[without] = 0.0
        return int(torch.multinomial(p, 1, generator=self.generator)[0])

    def _mark(self, token):
        if self.seen is not None:
            self.seen[token] = 1.0


def _probs(logits: "torch.Tensor", p: SamplingParams) -> "torch.Tensor":
    """Temperature, top-k, top-p, min-p -> the distribution to draw from. logits: [vocab] float32."""
    logits = logits / p.temperature
    if p.top_k:
        kth = torch.topk(logits, min(p.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p.
        drop = (torch.cumsum(probs, dim=-1) - probs) >= p.top_p
        logits = logits.scatter(0, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = torch.softmax(logits, dim=-1)
    if p.min_p:
        probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
    return probs
