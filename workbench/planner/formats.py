"""Weight formats and what they really cost: bits per weight including scales / biases / block
headers, and which tensors each format leaves at high precision.

Sources of the rules (public docs and code): Qwen's FP8 releases (fine-grained fp8 e4m3, one
float32 scale per 128x128 block; embeddings, lm_head, routers, norms and small DeltaNet tensors
kept in bf16); mlx-lm's quantization (affine, group 64, bf16 scale + bias per group; Qwen3.5 MoE
routers and shared-expert gates at 8 bits; norms, conv and A_log not quantized); llama.cpp's GGUF
block formats (Q8_0 = 34 bytes / 32 weights; Q6_K = 210 bytes / 256; Q4_K = 144 bytes / 256) and
its Q4_K_M recipe (Q6_K for the output matrix and, in the layers `use_more_bits` picks, for attn_v
and ffn_down).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import WorkbenchError
from ..tensors import Tensor

Q8_0, Q6_K, Q4_K, Q4_0 = 8.5, 6.5625, 4.5, 4.5


def _use_more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp: the first and last eighth of the layers, and every third one between."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


@dataclass(frozen=True)
class WeightFormat:
    name: str
    description: str
    bits: Callable[..., float]              # (tensor, number of layers, kept=16) -> bits per weight;
                                            # kept: bits of the tensors the format leaves as they are
    backend: str                            # where it runs
    platforms: tuple[str, ...] = ("gpu", "apple", "cpu")   # Device.kind values that can run it


# Stored in float32 by the releases (and kept so by every converter).
FLOAT32 = ("A_log", "linear_attn.norm")


def _bf16(t: Tensor, n: int, kept: int = 16) -> float:
    return 32.0 if t.name in FLOAT32 else 16.0


def _as_is(t: Tensor, kept: int) -> float:
    """A tensor a quantized format does not touch keeps the checkpoint's precision (bf16 in the
    releases, float32 in the bundled models)."""
    return 32.0 if t.name in FLOAT32 else float(kept)


def _fp8(t: Tensor, n: int, kept: int = 16) -> float:
    if t.kind in ("linear", "experts") and t.role != "ssm_ba":
        return 8 + 32 / (128 * 128)
    return _as_is(t, kept)


def _int8(t: Tensor, n: int, kept: int = 16) -> float:
    if t.kind in ("linear", "experts") and t.role != "ssm_ba":
        return 8 + 32 / max(t.in_features, 1)   # one float32 scale per output row
    return _as_is(t, kept)


def _mlx(bits: int) -> Callable[..., float]:
    def rule(t: Tensor, n: int, kept: int = 16) -> float:
        if t.kind == "small" or (t.in_features and t.in_features % 64):
            return _as_is(t, kept)  # mlx-lm quantizes a matrix only when groups of 64 divide its rows
        if t.kind == "router":
            return 8 + 2 * kept / 64   # a scale and a bias per group, in the checkpoint dtype
        return bits + 2 * kept / 64
    return rule


def _gguf(base: float, output: float, more: float | None = None) -> Callable[..., float]:
    def rule(t: Tensor, n: int, kept: int = 16) -> float:
        if t.kind == "small":
            return 32.0
        if t.kind == "lm_head":
            return output
        if more is not None and t.role in ("attn_v", "ffn_down", "ffn_down_exps", "ffn_down_shexp") \
                and t.layer is not None and _use_more_bits(t.layer, n):
            return more
        return base
    return rule


FORMATS: dict[str, WeightFormat] = {f.name: f for f in [
    WeightFormat("bf16", "bfloat16, as released", _bf16, "torch / MLX"),
    WeightFormat("fp16", "float16", _bf16, "torch / MLX"),
    WeightFormat("fp8", "fp8 e4m3, 128x128 block scales (Qwen's -FP8 releases)", _fp8, "torch (vLLM, SGLang)",
                 ("gpu",)),
    WeightFormat("int8", "int8 weights, one scale per output row", _int8, "torch", ("gpu", "cpu")),
    WeightFormat("mlx-8bit", "MLX affine 8-bit, group 64", _mlx(8), "MLX", ("apple",)),
    WeightFormat("mlx-6bit", "MLX affine 6-bit, group 64", _mlx(6), "MLX", ("apple",)),
    WeightFormat("mlx-4bit", "MLX affine 4-bit, group 64 (routers at 8-bit)", _mlx(4), "MLX", ("apple",)),
    WeightFormat("gguf-q8_0", "GGUF Q8_0", _gguf(Q8_0, Q8_0), "llama.cpp"),
    WeightFormat("gguf-q6_k", "GGUF Q6_K", _gguf(Q6_K, Q6_K), "llama.cpp"),
    WeightFormat("gguf-q4_k_m", "GGUF Q4_K_M (Q4_K, Q6_K for output and some attn_v / ffn_down)",
                 _gguf(Q4_K, Q6_K, Q6_K), "llama.cpp"),
    WeightFormat("gguf-q4_0", "GGUF Q4_0 (blocks of 32; Q6_K for output)", _gguf(Q4_0, Q6_K), "llama.cpp"),
]}


def weight_format(name: str) -> WeightFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise WorkbenchError(f"weights={name!r} is not a known format; use one of {', '.join(FORMATS)}.") from None
