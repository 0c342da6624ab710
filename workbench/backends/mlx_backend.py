"""MLX backend: mlx-lm's Qwen3.5 / Qwen3.5-MoE / Qwen3-Next models (Metal on Apple Silicon,
the CPU build elsewhere), loaded by the workbench's own loader.

The loader differs from `mlx_lm.load` in one place that matters for real checkpoints: Qwen3.5
stores decoder RMSNorm weights as offsets (the layer computes x * (1 + w)). mlx-lm adds the 1 in
the checkpoint dtype, which in bfloat16 rounds every norm weight and flips expert routing. Here the
offsets are lifted to float32 before the 1 is added, and the norms cast their output back to the
activation dtype, as transformers does.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import BackendNotInstalled, WorkbenchError
from ..sampling import SamplingParams
from ..spec import ModelSpec
from . import host_memory
from .base import Backend, Sampler, leaves
from .speculative_sampler import VerifyingSampler

try:
    import mlx.core as mx
    import mlx.nn as nn
    import mlx_lm  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise BackendNotInstalled(
        f"the MLX backend needs mlx and mlx-lm ({exc.name} is missing): "
        "pip install 'qwen-workbench[mlx]' (on Linux this installs the CPU build, mlx[cpu]).") from None

_DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
# Decoder norms stored as offsets (mlx-lm's list); linear_attn.norm is a plain scale.
_OFFSET_NORMS = (".input_layernorm.weight", ".post_attention_layernorm.weight", "model.norm.weight",
                 ".q_norm.weight", ".k_norm.weight")


def _model_classes(config: dict):
    """mlx-lm's classes for this config, with a sanitize that adds the norm offset in float32."""
    from mlx_lm.utils import _get_classes

    model_class, args_class = _get_classes(config)

    class Float32OffsetModel(model_class):
        def sanitize(self, weights):
            weights = {k: (v.astype(mx.float32) if v.ndim == 1 and k.endswith(_OFFSET_NORMS) else v)
                       for k, v in weights.items()}
            return super().sanitize(weights)

    Float32OffsetModel.__name__ = model_class.__name__
    return Float32OffsetModel, args_class


class _CastingRMSNorm(nn.RMSNorm):
    """RMSNorm with a float32 weight whose output keeps the activation dtype."""

    def __call__(self, x):
        return super().__call__(x).astype(x.dtype)


class MLXBackend(Backend):
    name = "mlx"
    speculates = True

    @property
    def speculation_pays(self) -> bool:
        # On Metal a 3-token verify reads the weights about once, as a plain step does. On a CPU
        # MLX's plain loop builds step n+1's graph while step n computes, which a verify (whose
        # tokens must be read first) cannot: with `tiny` it broke even at best (1.01x at k=2).
        return self.device != "cpu"

    def __init__(self, model, spec: ModelSpec, device, dtype):
        self.model, self.spec = model, spec
        self._device = device
        self.device = "gpu" if device == mx.gpu else "cpu"
        self.compute_dtype = str(dtype).removeprefix("mlx.core.")
        # A quantized checkpoint is reported as what it stores ("mlx-4bit"), not its activations' dtype.
        self.dtype = spec.weight_format or self.compute_dtype
        self.quantized = _quantized_params(model)   # {"4-bit": n, "8-bit": n, "float32": n} or {}

    @classmethod
    def load(cls, path: Path, spec: ModelSpec, device: str | None, dtype: str | None) -> "MLXBackend":
        from mlx_lm.utils import load_model

        devices = {"cpu": mx.cpu, "gpu": mx.gpu, "metal": mx.gpu}
        if device is not None and device not in devices:
            raise WorkbenchError(f"device={device!r} is not an MLX device; use 'gpu' (Metal) or 'cpu'.")
        target = devices[device] if device else mx.default_device()
        if target == mx.gpu and not mx.metal.is_available():
            raise WorkbenchError("device='gpu' needs Metal (Apple Silicon); this MLX is the CPU build. "
                                 "Use device='cpu' or the torch backend.")
        on_cpu = target == mx.cpu
        name = dtype or ("float32" if on_cpu else spec.dtype)
        if name not in _DTYPES:
            raise WorkbenchError(f"dtype={name!r} is not supported; use one of {', '.join(_DTYPES)}.")
        if on_cpu and spec.is_moe and name != "float32":
            raise WorkbenchError(
                f"dtype={name!r}: MLX on the CPU runs mixture-of-experts layers in float32 only "
                "(its GatherMM has no other dtype). Use dtype='float32' (the default here), Metal, "
                "or the torch backend for bfloat16.")
        interval = spec.full_attention_interval
        if spec.layer_types != tuple("full_attention" if (i + 1) % interval == 0 else "linear_attention"
                                     for i in range(spec.num_layers)):
            raise WorkbenchError(
                "this checkpoint's layer_types do not follow its full_attention_interval "
                f"({interval}), which is all mlx-lm reads; load it with backend='torch'.")
        with mx.stream(target):
            try:
                model, _ = load_model(Path(path), get_model_classes=_model_classes,
                                      model_config=_flat_rope_keys(spec))
            except ValueError as exc:  # mlx-lm's strict load: missing, extra or misshapen tensors
                raise WorkbenchError(
                    f"the weights in {path} do not match its config.json: {str(exc).strip()} Nothing "
                    "was loaded. Download the checkpoint again, or fix config.json (num_hidden_layers, "
                    "vocab_size, ...) to match the weights.") from None
            compute = _DTYPES[name]
            _cast_weights(model, compute)
            _ready(model, compute)
        backend = cls(model, spec, target, compute)
        backend.locate_mtp(path)
        backend.warm_up()
        return backend

    @property
    def kernels(self) -> dict[str, str]:
        metal = self._device == mx.gpu
        return {
            "gated_delta_rule": ("MLX Metal kernel (mlx_lm gated_delta_kernel)" if metal
                                 else "MLX ops (token-by-token recurrence)"),
            "causal_conv1d": "MLX conv1d",
            "attention": "MLX fast.scaled_dot_product_attention",
            "moe": (f"MLX {self._expert_kernel()} (SwitchGLU)" if self.spec.is_moe else "dense MLP (MLX)"),
            "decode": self.decode_path(None),
            **({"weights": ", ".join(f"{kind} {n / 1e6:,.2f}M params" for kind, n in self.quantized.items())
                + f"; activations {self.compute_dtype}"} if self.quantized else {}),
        }

    def _expert_kernel(self) -> str:
        from mlx_lm.models.switch_layers import QuantizedSwitchLinear

        experts = [(name, m) for name, m in self.model.named_modules()
                   if ".switch_mlp." in f"{name}." and isinstance(m, dict) and "weight" in m]
        quant = [m for _, m in experts if isinstance(m, QuantizedSwitchLinear)]
        if not quant:
            return "gather_mm"
        kept = sorted({name.rsplit(".", 1)[-1] for name, m in experts if not isinstance(m, QuantizedSwitchLinear)})
        bits = "/".join(str(b) for b in sorted({m.bits for m in quant}))
        where = f"; {', '.join(kept)} kept in {self.compute_dtype} with gather_mm (rows not divisible into groups)" \
            if kept else ""
        return f"gather_qmm ({bits}-bit affine, group {quant[0].group_size}){where}"

    def weight_bytes_per_token(self) -> float | None:
        """A quantized copy's stored bytes read per token (packed weights, scales and biases): the
        routed experts a token is sent to, one embedding row, everything else whole."""
        if not self.quantized:
            return None
        from mlx.utils import tree_flatten

        spec = self.spec
        share = spec.num_experts_per_tok / spec.num_experts if spec.num_experts else 1.0
        params = dict(tree_flatten(self.model.parameters()))
        tied = not any("lm_head" in k for k in params)
        total = 0.0
        for name, array in params.items():
            if "embed_tokens" in name:
                total += array.nbytes / spec.vocab_size + (array.nbytes if tied else 0)
            else:
                total += array.nbytes * (share if "switch_mlp" in name else 1.0)
        return total

    # ---- forward ------------------------------------------------------------------------
    def logits(self, token_ids: np.ndarray) -> np.ndarray:
        with mx.stream(self._device):
            return self.to_numpy(self.model(mx.array(np.asarray(token_ids, dtype=np.int32))[None])[0])

    def new_cache(self, capacity: int | None = None, fast: bool = True):
        return self.model.make_cache()

    def can_snapshot(self, cache) -> bool:
        return True

    def snapshot(self, cache, last_use: bool = False):
        mx.eval(list(leaves(cache, mx.array)))  # computed values, not the lazy graph that makes them
        return cache if last_use else self.restore(cache)

    def restore(self, snapshot, capacity=None):
        import copy
        return copy.deepcopy(snapshot)

    def snapshot_bytes(self, snapshot) -> int:
        return sum(a.nbytes for a in leaves(snapshot, mx.array))

    def decode_path(self, cache) -> str:
        return "mlx-lm cache, one lazy graph per token"

    def forward(self, tokens, cache):
        with mx.stream(self._device):
            if isinstance(tokens, np.ndarray):
                ids = mx.array(tokens.astype(np.int32, copy=False))[None]
            else:
                ids = tokens.reshape(1, 1)
            return self.model(ids, cache=cache)[0, -1]

    def _load_mtp(self, folder, where):
        from .mlx_mtp import load_mlx_mtp
        with mx.stream(self._device):
            return load_mlx_mtp(self.model, folder, where, _DTYPES[self.compute_dtype], _ready)

    def speculation(self, cache, probe=None):
        from .mlx_speculation import MLXSpeculation
        if not self.has_mtp:
            return super().speculation(cache, probe)
        return MLXSpeculation(self, cache, probe)

    def probe(self, plan):
        from .mlx_probes import MLXProbe
        return MLXProbe(self, plan)

    def make_sampler(self, params: SamplingParams) -> Sampler:
        return _MLXSampler(params, self.spec.vocab_size, self._device)

    def hardware_name(self) -> str:
        if self._device == mx.gpu:
            return str(mx.device_info().get("device_name", "Apple GPU"))
        return super().hardware_name()

    def queue(self, value, probe=None) -> None:
        # A probe's per-token summaries are evaluated with the step, so the states they were
        # computed from need not be kept.
        mx.async_eval(value, *(probe.drain() if probe is not None else ()))

    def to_numpy(self, value) -> np.ndarray:
        return np.array(value.astype(mx.float32) if mx.issubdtype(value.dtype, mx.floating) else value)

    def to_int(self, token) -> int:
        return int(token.item())

    def synchronize(self) -> None:
        mx.synchronize()

    def reset_peak_memory(self) -> None:
        if self._device == mx.gpu:
            mx.reset_peak_memory()
        else:
            host_memory.reset_peak()

    def peak_memory(self) -> int | None:
        if self._device == mx.gpu:
            return int(mx.get_peak_memory())
        return host_memory.peak_bytes()


def _flat_rope_keys(spec: ModelSpec) -> dict:
    """mlx-lm's Qwen3-Next reads rope_theta/partial_rotary_factor at the top level; configs
    re-saved by transformers 5 keep them only in rope_parameters."""
    if spec.architecture != "qwen3_next":
        return {}
    return {k: spec.raw.get(k, v) for k, v in
            (("rope_theta", spec.rope_theta), ("partial_rotary_factor", spec.partial_rotary_factor))}


def _quantized_params(model) -> dict[str, int]:
    """Parameters by how they are stored, for a quantized model ({} when nothing is quantized)."""
    counts: dict[str, int] = {}
    quantized = False
    for _, module in model.named_modules():
        bits = getattr(module, "bits", None)
        weight = module.get("weight") if isinstance(module, dict) else None  # an MLX Module is a dict
        if not isinstance(weight, mx.array) or weight.ndim < 2:
            continue
        if bits is not None and weight.dtype == mx.uint32:
            quantized = True
            kind, n = f"{bits}-bit", weight.size * 32 // bits
        else:
            kind, n = str(weight.dtype).removeprefix("mlx.core."), weight.size
        counts[kind] = counts.get(kind, 0) + n
    if not quantized:
        return {}
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _ready(module, dtype) -> None:
    """Make `module` ready to run in `dtype`: its norms (float32 weights) give activations of
    `dtype`; its weights computed (not a lazy graph); eval mode."""
    if dtype != mx.float32:
        for _, m in module.named_modules():
            if type(m) is nn.RMSNorm:
                m.__class__ = _CastingRMSNorm
    mx.eval(module.parameters())
    module.eval()


def _cast_weights(model, dtype) -> None:
    """Cast floating weights to `dtype`, except those kept in float32 on purpose: A_log (mlx-lm's
    cast predicate) and the norm weights whose offset was added in float32."""
    from mlx.utils import tree_map_with_path

    may_cast = getattr(model, "cast_predicate", lambda _path: True)

    def cast(path, w):
        if not mx.issubdtype(w.dtype, mx.floating) or path.endswith(_OFFSET_NORMS) or not may_cast(path):
            return w
        return w.astype(dtype)

    model.update(tree_map_with_path(cast, model.parameters()))


class _MLXSampler(VerifyingSampler):
    """The on-device sampler: its own seeded key and presence mask. Called with logits `[vocab]` it
    returns a token (a lazy scalar); `verify` judges a speculative step's drafts."""

    def __init__(self, params: SamplingParams, vocab: int, device):
        self.params, self.vocab, self.device = params, vocab, device
        self.seen = mx.zeros((vocab,), dtype=mx.float32) if params.presence_penalty else None
        self.key = None if params.greedy else mx.random.key(
            params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little"))

    def __call__(self, logits):
        with mx.stream(self.device):
            logits = self._adjusted(logits)
            if self.params.greedy:
                token = mx.argmax(logits)
            else:
                token = _draw(logits, self.params, self._next_key())
            self._mark(token)
            return token

    def verify(self, logits, drafts):
        with mx.stream(self.device):
            return super().verify(logits, drafts)

    def _next_key(self):
        self.key, key = mx.random.split(self.key)
        return key

    def _ids(self, drafts):
        return drafts.tolist()

    def _row_argmaxes(self, logits):
        return mx.argmax(logits, axis=-1).tolist()

    def _adjusted(self, row):
        row = row.astype(mx.float32)
        return row - self.params.presence_penalty * self.seen if self.seen is not None else row

    def _argmax(self, row):
        return int(mx.argmax(row).item())

    def _distribution(self, row):
        return mx.softmax(_filtered(row, self.params))

    def _probability(self, p, token):
        return float(p[token].item())

    def _uniform(self):
        return float(mx.random.uniform(key=self._next_key()).item())

    def _draw(self, p, without):
        if without is not None:
            p = mx.where(mx.arange(p.shape[-1]) == without, 0.0, p)
        return int(mx.random.categorical(mx.log(p), key=self._next_key()).item())

    def _mark(self, token):
        if self.seen is not None:
            self.seen = mx.maximum(self.seen, (mx.arange(self.vocab) == token).astype(mx.float32))


def _draw(logits, p: SamplingParams, key):
    """Temperature, top-k, top-p, min-p, then one draw. logits: [vocab] float32."""
    return mx.random.categorical(_filtered(logits, p), key=key)


def _filtered(logits, p: SamplingParams):
    """Temperature, top-k, top-p, min-p -> the logits to draw from (-inf where a token is cut)."""
    logits = logits / p.temperature
    neg_inf = mx.array(-float("inf"), dtype=logits.dtype)
    if p.top_k:
        k = min(p.top_k, logits.shape[-1])
        kth = mx.topk(logits, k)  # k largest, order not guaranteed
        logits = mx.where(logits < kth.min(), neg_inf, logits)
    if p.top_p < 1.0:
        order = mx.argsort(-logits)
        sorted_logits = logits[order]
        probs = mx.softmax(sorted_logits)
        drop = (mx.cumsum(probs) - probs) >= p.top_p
        kept = mx.where(drop, neg_inf, sorted_logits)
        logits = mx.zeros_like(logits).at[order].add(kept)
    if p.min_p:
        probs = mx.softmax(logits)
        logits = mx.where(probs < p.min_p * probs.max(), neg_inf, logits)
    return logits
