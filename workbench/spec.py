"""ModelSpec: what a Qwen3.5-family config.json says about the architecture, framework-free; and
`spec(...)`, the ModelSpec of a released model by Hub id or name, of a config.json or checkpoint
folder, or of a Hub id in the local cache, without loading any weights.

Accepts the three layouts the family ships in: `qwen3_5_moe` and `qwen3_5` (a multimodal wrapper
with a nested `text_config`) and `qwen3_next` (a flat config). Parameter counts are computed from
the config alone, for the text model (embeddings, decoder layers, final norm, lm_head).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from .errors import WorkbenchError
from .tensors import count, mtp_tensors, text_tensors

SUPPORTED_ARCHITECTURES = ("qwen3_5_moe", "qwen3_5", "qwen3_next")


@dataclass(frozen=True)
class ModelSpec:
    """The architecture of one checkpoint. Layer lists are model layer indices."""

    architecture: str                 # qwen3_5_moe | qwen3_5 | qwen3_next
    layer_types: tuple[str, ...]      # "linear_attention" | "full_attention", one per layer
    full_attention_interval: int      # every N-th layer is full attention (what mlx-lm reads)
    hidden_size: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    # gated full attention
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    attn_output_gate: bool
    rope_theta: float
    partial_rotary_factor: float
    # Gated DeltaNet
    linear_num_key_heads: int
    linear_num_value_heads: int
    linear_key_head_dim: int
    linear_value_head_dim: int
    linear_conv_kernel_dim: int
    # feed-forward
    intermediate_size: int            # dense MLP width (0 when every layer is MoE)
    num_experts: int                  # 0 for a dense model
    num_experts_per_tok: int
    moe_intermediate_size: int
    shared_expert_intermediate_size: int
    moe_layers: tuple[int, ...]
    norm_topk_prob: bool
    mtp_num_hidden_layers: int
    dtype: str                        # the checkpoint's stored dtype, e.g. "bfloat16"
    state_dtype: str                  # dtype of the DeltaNet recurrent state (mamba_ssm_dtype)
    raw: dict = field(repr=False, compare=False, hash=False, default_factory=dict)

    # ---- layers -------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layer_types)

    @property
    def linear_layers(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.layer_types) if t == "linear_attention")

    @property
    def full_attention_layers(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.layer_types) if t == "full_attention")

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0 and len(self.moe_layers) > 0

    # ---- parameter counts (all from the one tensor inventory, workbench/tensors.py) --------
    @property
    def params_text(self) -> int:
        """Parameters of the text model: embeddings, decoder layers, final norm, lm_head."""
        return count(text_tensors(self))

    @property
    def params_mtp(self) -> int:
        """Multi-token-prediction layers (speculative decoding head; transformers drops them):
        each an fc over [embedding; hidden], three norms and one full-attention decoder layer
        (with the model's MoE or dense MLP). Embeddings and lm_head are shared."""
        return count(mtp_tensors(self))

    @property
    def params_vision(self) -> int:
        """The vision tower (`model.visual.*`): patch embedding, position embedding, ViT blocks
        and the patch merger(s); 0 for text-only models."""
        v = self.raw.get("vision_config")
        if not v:
            return 0
        h, inter, out = v["hidden_size"], v["intermediate_size"], v["out_hidden_size"]
        merged = h * v.get("spatial_merge_size", 2) ** 2
        patch = v.get("in_channels", 3) * v.get("temporal_patch_size", 2) * v["patch_size"] ** 2 * h + h
        pos = v.get("num_position_embeddings", 0) * h
        block = 4 * h + (3 * h * h + 3 * h) + (h * h + h) + (h * inter + inter) + (inter * h + h)
        merger = merged * merged + merged + merged * out + out
        deepstack = len(v.get("deepstack_visual_indexes") or ()) * (2 * merged + merger)  # post-shuffle norm
        return patch + pos + v["depth"] * block + 2 * h + merger + deepstack

    @property
    def params_total(self) -> int:
        """Everything a release stores: text model + vision tower + MTP layers."""
        return self.params_text + self.params_vision + self.params_mtp

    @property
    def params_active(self) -> int:
        """Parameters read per decoded token: the top-k routed experts instead of all of them,
        and one embedding row instead of the table (the lm_head is read whole)."""
        return count(text_tensors(self), read=True)

    @property
    def weight_format(self) -> str | None:
        """How the checkpoint's weights are stored when quantized, as a planner format name
        ("mlx-4bit", "gguf-q4_k_m", ...; "gguf-<type>" for types the planner does not model), else None."""
        gguf = self.raw.get("gguf_file_type")
        if gguf:
            return None if gguf in ("F32", "F16", "BF16") else f"gguf-{gguf.lower()}"
        block = self.raw.get("quantization") or self.raw.get("quantization_config")
        if isinstance(block, dict) and "bits" in block and "quant_method" not in block:
            return f"mlx-{block['bits']}bit"
        return None

    def summary(self) -> str:
        kind = (f"MoE {self.num_experts} experts, top-{self.num_experts_per_tok} + shared"
                if self.is_moe else "dense")
        stored = f"; weights {self.weight_format}" if self.weight_format else ""
        return (f"{self.architecture}: {self.num_layers} layers "
                f"({len(self.linear_layers)} Gated DeltaNet, {len(self.full_attention_layers)} "
                f"full attention), hidden {self.hidden_size}, {kind}, "
                f"{self.params_text / 1e6:,.2f}M text params ({self.params_active / 1e6:,.2f}M active){stored}")

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ModelSpec":
        """Build from a parsed config.json (nested `text_config` or flat)."""
        if not isinstance(config, dict) or not isinstance(config.get("text_config") or {}, dict):
            raise WorkbenchError(
                f"config.json holds a {type(config).__name__}, not a JSON object with 'model_type' and the "
                "architecture's sizes: the file is damaged or not a Hugging Face config; restore it from "
                "the model's release.")
        model_type = config.get("model_type")
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise WorkbenchError(
                f"model_type {model_type!r} is not a Qwen3.5-family architecture; the workbench "
                f"supports {', '.join(SUPPORTED_ARCHITECTURES)}. Load a Qwen3.5 or Qwen3-Next "
                "checkpoint (e.g. 'Qwen/Qwen3.5-35B-A3B') or a bundled one ('tiny').")
        text = dict(config.get("text_config") or config)
        try:
            spec = cls._from_text_config(model_type, text, config)
        except KeyError as exc:
            raise WorkbenchError(
                f"config.json of this {model_type} model lacks the key {exc.args[0]!r}; the file "
                "is incomplete or not from a Qwen3.5 release.") from None
        except (TypeError, ValueError) as exc:
            raise WorkbenchError(f"config.json of this {model_type} model has a value of the wrong type "
                                 f"({exc}); restore the file from the model's release.") from None
        problem = spec._problem()
        if problem:
            raise WorkbenchError(f"config.json does not describe a model that can be built: {problem}. "
                                 "Restore the file from the model's release.")
        return spec

    def _problem(self) -> str | None:
        """What makes this architecture impossible, or None."""
        sizes = dict(hidden_size=self.hidden_size, vocab_size=self.vocab_size,
                     num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
                     head_dim=self.head_dim, linear_num_key_heads=self.linear_num_key_heads,
                     linear_num_value_heads=self.linear_num_value_heads, max_position_embeddings=
                     self.max_position_embeddings)
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return f"{name} = {value!r} (a whole number >= 1 is needed)"
        n_layers = self.raw.get("text_config", self.raw).get("num_hidden_layers")
        if n_layers != self.num_layers:
            return f"num_hidden_layers = {n_layers!r} but layer_types lists {self.num_layers} layers"
        unknown = sorted(set(self.layer_types) - {"linear_attention", "full_attention"})
        if unknown:
            return f"layer_types names {unknown} (only 'linear_attention' and 'full_attention' exist)"
        if self.num_experts and not 1 <= self.num_experts_per_tok <= self.num_experts:
            return (f"num_experts_per_tok = {self.num_experts_per_tok} with {self.num_experts} experts (each "
                    "token picks between 1 and num_experts of them)")
        if self.linear_num_value_heads % self.linear_num_key_heads or self.num_attention_heads % self.num_key_value_heads:
            return "the query/value head counts are not multiples of the key head counts"
        return None

    @classmethod
    def _from_text_config(cls, model_type: str, text: dict, config: dict) -> "ModelSpec":
        n_layers = text["num_hidden_layers"]
        interval = text.get("full_attention_interval", 4)
        layer_types = tuple(text.get("layer_types") or (
            "full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n_layers)))
        rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
        num_experts = int(text.get("num_experts") or 0)
        sparse_step = int(text.get("decoder_sparse_step", 1) or 1)
        mlp_only = set(text.get("mlp_only_layers") or ())
        moe_layers = tuple(i for i in range(n_layers) if num_experts > 0 and i not in mlp_only
                           and (i + 1) % sparse_step == 0)
        tie = config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
        dtype = text.get("dtype") or text.get("torch_dtype") or config.get("torch_dtype") or "bfloat16"
        mtp = text.get("mtp_num_hidden_layers", 1 if model_type == "qwen3_next" else 0)
        return cls(
            architecture=model_type,
            layer_types=layer_types,
            full_attention_interval=interval,
            hidden_size=text["hidden_size"],
            vocab_size=text["vocab_size"],
            max_position_embeddings=text.get("max_position_embeddings", 262144),
            rms_norm_eps=text.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=bool(tie),
            num_attention_heads=text["num_attention_heads"],
            num_key_value_heads=text["num_key_value_heads"],
            head_dim=text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"],
            # Qwen3-Next and Qwen3.5 both gate attention output (q_proj is twice as wide).
            attn_output_gate=bool(text.get("attn_output_gate", True)),
            rope_theta=float(rope.get("rope_theta", text.get("rope_theta", 10_000_000))),
            partial_rotary_factor=float(rope.get("partial_rotary_factor",
                                                 text.get("partial_rotary_factor", 0.25))),
            linear_num_key_heads=text["linear_num_key_heads"],
            linear_num_value_heads=text["linear_num_value_heads"],
            linear_key_head_dim=text["linear_key_head_dim"],
            linear_value_head_dim=text["linear_value_head_dim"],
            linear_conv_kernel_dim=text.get("linear_conv_kernel_dim", 4),
            intermediate_size=int(text.get("intermediate_size") or 0),
            num_experts=num_experts,
            num_experts_per_tok=int(text.get("num_experts_per_tok") or 0),
            moe_intermediate_size=int(text.get("moe_intermediate_size") or 0),
            shared_expert_intermediate_size=int(text.get("shared_expert_intermediate_size") or 0),
            moe_layers=moe_layers,
            norm_topk_prob=bool(text.get("norm_topk_prob", True)),
            mtp_num_hidden_layers=int(mtp or 0),
            dtype=str(dtype),
            state_dtype=str(text.get("mamba_ssm_dtype", "float32")),
            raw=config,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelSpec":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise WorkbenchError(
                f"{path} does not exist: a checkpoint folder needs the config.json of a Qwen3.5 "
                "release next to its *.safetensors and tokenizer.json.")
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise WorkbenchError(f"{path} is not valid JSON ({exc}).") from None
        return cls.from_config(config)


# ---- lookup by name -------------------------------------------------------------------
CONFIGS = files("workbench") / "configs"


def known() -> dict[str, str]:
    """{Hub id: shipped config file name} of the released models the package knows."""
    return {f"Qwen/{p.name[:-5]}": p.name for p in sorted(CONFIGS.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".json")}


def spec(model: str | Path) -> ModelSpec:
    """`"Qwen/Qwen3.5-35B-A3B"`, `"Qwen3.5-35B-A3B"`, a path to a config.json or a checkpoint
    folder, a bundled name ("tiny"), or a Hub id whose config.json is in the local HF cache."""
    from . import hub

    path = Path(str(model)).expanduser()
    if path.exists():
        return ModelSpec.from_file(path)
    name = str(model)
    table = known()
    by_name = {k.split("/", 1)[1].lower(): v for k, v in table.items()}
    base = name.split("/", 1)[-1].lower()
    for suffix in ("-fp8", "-gguf", "-instruct", "-base", "-mlx-4bit", "-4bit", "-8bit"):
        if base not in by_name and base.endswith(suffix):
            base = base[: -len(suffix)]
    if base in by_name:
        spec_ = ModelSpec.from_file(CONFIGS / by_name[base])
    elif name in hub.bundled_names():
        spec_ = ModelSpec.from_file(hub.resolve(name, None))
    else:
        spec_ = _from_cache(name, table)
    spec_.raw.setdefault("_name_or_path", name)
    return spec_


def _from_cache(repo_id: str, table: dict) -> ModelSpec:
    try:
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(repo_id, "config.json") if "/" in repo_id else None
    except Exception:  # noqa: BLE001 - a malformed id is reported below
        cached = None
    if isinstance(cached, str):
        return ModelSpec.from_file(cached)
    raise WorkbenchError(f"{repo_id!r} is not a model the workbench knows, a local config.json or a Hub id in the "
                         f"local cache. Known: {', '.join(table)}; or pass the path of any Qwen3.5-family config.json.")
