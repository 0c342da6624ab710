"""Bytes of the per-sequence caches of a Qwen3.5 model, from its spec alone: the KV cache of the
full-attention layers grows with the context; the DeltaNet layers keep a fixed recurrent state
and a short conv state instead."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec import ModelSpec

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float8": 1, "fp8": 1, "int8": 1}


def _bytes_of(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        from ..errors import WorkbenchError
        raise WorkbenchError(f"dtype {dtype!r} is unknown; use one of {', '.join(DTYPE_BYTES)}.") from None


def kv_bytes_per_token(spec: ModelSpec, kv_dtype: str = "bfloat16") -> int:
    """KV cache bytes one token adds (keys + values of every full-attention layer)."""
    return (2 * len(spec.full_attention_layers) * spec.num_key_value_heads * spec.head_dim
            * _bytes_of(kv_dtype))


def deltanet_state_bytes(spec: ModelSpec, conv_dtype: str | None = None) -> int:
    """Fixed bytes per sequence of the DeltaNet layers: recurrent state [Hv, Dk, Dv] in the
    state dtype (float32 in the releases) + conv state (K-1 inputs of the q|k|v channels)."""
    n = len(spec.linear_layers)
    recurrent = spec.linear_num_value_heads * spec.linear_key_head_dim * spec.linear_value_head_dim
    conv_dim = (2 * spec.linear_num_key_heads * spec.linear_key_head_dim
                + spec.linear_num_value_heads * spec.linear_value_head_dim)
    conv = (spec.linear_conv_kernel_dim - 1) * conv_dim
    return n * (recurrent * _bytes_of(spec.state_dtype) + conv * _bytes_of(conv_dtype or spec.dtype))


@dataclass
class CacheGrowth:
    """Cache bytes per sequence against the context length."""

    name: str
    context: np.ndarray          # [n] tokens
    kv_bytes: np.ndarray         # [n] full-attention KV cache
    state_bytes: int             # DeltaNet recurrent + conv state (constant)
    crossover: float             # context at which the KV cache reaches the state's size
    kv_if_all_attention: np.ndarray  # [n] the KV cache had every layer been full attention


def cache_growth(spec: ModelSpec, context: np.ndarray | int = 262_144, name: str = "model",
                 kv_dtype: str = "bfloat16") -> CacheGrowth:
    context = np.asarray(context if np.ndim(context) else np.unique(
        np.geomspace(1, int(context), 200).astype(np.int64)))
    per_token = kv_bytes_per_token(spec, kv_dtype)
    state = deltanet_state_bytes(spec)
    all_attn = per_token * spec.num_layers / max(1, len(spec.full_attention_layers))
    return CacheGrowth(name=name, context=context, kv_bytes=context * per_token, state_bytes=state,
                       crossover=state / per_token if per_token else float("inf"),
                       kv_if_all_attention=context * all_attn)
