"""The weight tensors of a Qwen3.5-family model, from its spec: what each one is, its shape, and how
often a decoded token reads it. The one inventory: `ModelSpec`'s parameter counts (total, active,
MTP), the weight formats, the memory plan and the benchmark's bytes per token all add it up."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spec import ModelSpec


@dataclass(frozen=True)
class Tensor:
    """One weight (or a group of identical ones, e.g. all routed experts of a layer).

    kind: "embed" | "lm_head" | "linear" | "router" | "experts" | "small" (norms, conv, gates
    stored at high precision by every format). role: what llama.cpp-style recipes key on
    ("attn_v", "ffn_down", ... or ""). read_share: fraction of it a decoded token reads."""

    name: str
    layer: int | None
    numel: int
    kind: str
    role: str = ""
    in_features: int = 0
    read_share: float = 1.0


def text_tensors(spec: "ModelSpec") -> list[Tensor]:
    """The text model: embeddings, every decoder layer, the final norm and the lm_head."""
    h = spec.hidden_size
    # A tied table is also the lm_head, read whole every token; otherwise one row is looked up.
    out = [Tensor("embed_tokens", None, spec.vocab_size * h, "embed", in_features=h,
                  read_share=1.0 if spec.tie_word_embeddings else 1 / spec.vocab_size)]
    for i, kind in enumerate(spec.layer_types):
        out += decoder_layer(spec, i, kind, moe=i in spec.moe_layers)
    out.append(Tensor("norm", None, h, "small"))
    if not spec.tie_word_embeddings:
        out.append(Tensor("lm_head", None, spec.vocab_size * h, "lm_head", in_features=h))
    return out


def mtp_tensors(spec: "ModelSpec") -> list[Tensor]:
    """The multi-token-prediction layers (`mtp.*`): each an fc over [normed embedding ; normed
    hidden state], those two norms, its final norm, and one full-attention decoder layer with the
    model's MoE or dense MLP. Embeddings and lm_head are the text model's."""
    h, out = spec.hidden_size, []
    for j in range(spec.mtp_num_hidden_layers):
        out += [Tensor("mtp.fc", None, 2 * h * h, "linear", "", 2 * h),
                Tensor("mtp.norms", None, 3 * h, "small")]
        out += decoder_layer(spec, None, "full_attention", moe=spec.is_moe)
    return out


def decoder_layer(spec: "ModelSpec", i: int | None, kind: str, moe: bool) -> list[Tensor]:
    """One decoder layer: its mixer (gated attention or Gated DeltaNet), feed-forward and norms."""
    h = spec.hidden_size
    if kind == "full_attention":
        nq, nkv, hd = spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim
        q_out = nq * hd * (2 if spec.attn_output_gate else 1)
        out = [Tensor("q_proj", i, h * q_out, "linear", "attn_q", h),
               Tensor("k_proj", i, h * nkv * hd, "linear", "attn_k", h),
               Tensor("v_proj", i, h * nkv * hd, "linear", "attn_v", h),
               Tensor("o_proj", i, nq * hd * h, "linear", "attn_output", nq * hd),
               Tensor("q_norm+k_norm", i, 2 * hd, "small")]
    else:
        kd = spec.linear_num_key_heads * spec.linear_key_head_dim
        vd = spec.linear_num_value_heads * spec.linear_value_head_dim
        nv = spec.linear_num_value_heads
        out = [Tensor("in_proj_qkv", i, h * (2 * kd + vd), "linear", "attn_qkv", h),
               Tensor("in_proj_z", i, h * vd, "linear", "attn_gate", h),
               Tensor("in_proj_b+a", i, 2 * h * nv, "linear", "ssm_ba", h),
               Tensor("out_proj", i, vd * h, "linear", "ssm_out", vd),
               Tensor("conv1d", i, (2 * kd + vd) * spec.linear_conv_kernel_dim, "small"),
               Tensor("A_log", i, nv, "small"), Tensor("dt_bias", i, nv, "small"),
               Tensor("linear_attn.norm", i, spec.linear_value_head_dim, "small")]
    if moe:
        e, k, mi, si = spec.num_experts, spec.num_experts_per_tok, spec.moe_intermediate_size, \
            spec.shared_expert_intermediate_size
        out += [Tensor("router", i, e * h, "router", in_features=h),
                Tensor("experts.gate_up", i, e * 2 * mi * h, "experts", "ffn_gate_up_exps", h, k / e),
                Tensor("experts.down", i, e * h * mi, "experts", "ffn_down_exps", mi, k / e),
                Tensor("shared_expert.gate_up", i, 2 * si * h, "linear", "ffn_gate_up_shexp", h),
                Tensor("shared_expert.down", i, h * si, "linear", "ffn_down_shexp", si),
                Tensor("shared_expert_gate", i, h, "small")]
    else:
        out += [Tensor("mlp.gate_up", i, 2 * spec.intermediate_size * h, "linear", "ffn_gate_up", h),
                Tensor("mlp.down", i, h * spec.intermediate_size, "linear", "ffn_down", spec.intermediate_size)]
    out.append(Tensor("layernorms", i, 2 * h, "small"))
    return out


def count(tensors: list[Tensor], read: bool = False) -> int:
    """Parameters in `tensors`; with `read`, those a decoded token reads (top-k experts, one
    embedding row). Exact: each share is a whole number of rows or experts."""
    if not read:
        return sum(t.numel for t in tensors)
    return round(sum(t.numel * t.read_share for t in tensors))
