"""What a GGUF file's metadata says, in the workbench's own terms: the same `ModelSpec` a
config.json gives, the tokenizer and chat template, and the weight type of each tensor group.

The keys are those llama.cpp's converter writes for `qwen35`, `qwen35moe` and `qwen3next`
(`<arch>.block_count`, `<arch>.ssm.*`, `<arch>.expert_*`, `tokenizer.ggml.*`, ...).
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np

from ..errors import WorkbenchError
from ..spec import ModelSpec
from .reader import GGUFHeader

# GGUF architecture -> Hugging Face model_type.
ARCHITECTURES = {"qwen35moe": "qwen3_5_moe", "qwen35": "qwen3_5", "qwen3next": "qwen3_next"}

# The pre-tokenizer regex of each `tokenizer.ggml.pre` we rebuild (llama.cpp keeps them in
# llama-vocab.cpp; these are the tokenizer.json patterns of the Qwen releases).
PRE_TOKENIZERS = {
    "qwen35": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
             r"\s+(?!\S)|\s+",
}
_CONTROL, _USER_DEFINED = 3, 4   # tokenizer.ggml.token_type values of added tokens
_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def unsupported(header: GGUFHeader) -> str | None:
    """Why the workbench cannot run this file, or None."""
    arch = header.architecture
    if arch not in ARCHITECTURES:
        return (f"its architecture is {arch or 'not stated'!r}; the workbench runs the Qwen3.5 family "
                f"({', '.join(ARCHITECTURES)} in GGUF terms). Use llama.cpp directly for other models.")
    return None


def config_from_gguf(header: GGUFHeader) -> dict:
    """A config.json-like dict (flat, Qwen3-Next style) from the GGUF metadata."""
    problem = unsupported(header)
    if problem:
        raise WorkbenchError(f"{header.path.name} cannot be loaded: {problem}")
    arch, a = header.architecture, header.arch

    def need(key):
        value = a(key)
        if value is None:
            raise WorkbenchError(f"{header.path.name} has no '{arch}.{key}' in its metadata: it was not written "
                                 "by llama.cpp's converter for this architecture. Convert the model again.")
        return value

    # block_count includes the MTP block(s) llama.cpp appends after the decoder layers.
    mtp = int(a("nextn_predict_layers", 0) or 0)
    n_layers = int(need("block_count")) - mtp
    interval = int(a("full_attention_interval", 4))
    recurrent = a("attention.recurrent_layers")
    if recurrent is not None and len(recurrent) >= n_layers:
        layer_types = ["linear_attention" if bool(r) else "full_attention" for r in list(recurrent)[:n_layers]]
    else:
        layer_types = ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n_layers)]
    head_dim = int(need("attention.key_length"))
    v_heads = int(need("ssm.time_step_rank"))
    n_experts = int(a("expert_count", 0) or 0)
    tokens = header.metadata.get("tokenizer.ggml.tokens") or []
    names = {t.name for t in header.tensors}
    config = {
        "model_type": ARCHITECTURES[arch],
        "num_hidden_layers": n_layers,
        "layer_types": layer_types,
        "full_attention_interval": interval,
        "hidden_size": int(need("embedding_length")),
        "vocab_size": len(tokens) or int(need("vocab_size")),
        "max_position_embeddings": int(a("context_length", 262144)),
        "rms_norm_eps": float(f"{a('attention.layer_norm_rms_epsilon', 1e-6):.7g}"),  # stored as float32
        "tie_word_embeddings": "output.weight" not in names,
        "num_attention_heads": int(need("attention.head_count")),
        "num_key_value_heads": int(need("attention.head_count_kv")),
        "head_dim": head_dim,
        "rope_theta": float(a("rope.freq_base", 10_000_000)),
        "partial_rotary_factor": int(a("rope.dimension_count", head_dim // 4)) / head_dim,
        "linear_num_key_heads": int(need("ssm.group_count")),
        "linear_num_value_heads": v_heads,
        "linear_key_head_dim": int(need("ssm.state_size")),
        "linear_value_head_dim": int(need("ssm.inner_size")) // v_heads,
        "linear_conv_kernel_dim": int(need("ssm.conv_kernel")),
        "intermediate_size": int(a("feed_forward_length", 0) or 0) if not n_experts else 0,
        "num_experts": n_experts,
        "num_experts_per_tok": int(a("expert_used_count", 0) or 0),
        "moe_intermediate_size": int(a("expert_feed_forward_length", 0) or 0),
        "shared_expert_intermediate_size": int(a("expert_shared_feed_forward_length", 0) or 0),
        "norm_topk_prob": True,
        "mtp_num_hidden_layers": mtp,
        # Quantized weights are dequantized into float32 activations; caches and states stay float32
        # (model.dtype names the file's type, e.g. "Q4_K_M").
        "dtype": _DTYPES.get(header.file_type, "float32"),
        "gguf_file_type": header.file_type,
    }
    if isinstance(config["max_position_embeddings"], np.ndarray):  # pragma: no cover - defensive
        config["max_position_embeddings"] = int(config["max_position_embeddings"][0])
    return config


def spec_from_gguf(header: GGUFHeader) -> ModelSpec:
    return ModelSpec.from_config(config_from_gguf(header))


def weight_types(header: GGUFHeader) -> dict[str, str]:
    """The ggml type of each tensor group, e.g. {"routed experts": "Q4_K", "attention": "Q8_0", ...};
    a group with several types lists them, most parameters first ("Q4_K 70%, Q5_0 30%")."""
    groups: dict[str, Counter] = defaultdict(Counter)
    n_layers = int(header.arch("block_count", 0)) - int(header.arch("nextn_predict_layers", 0) or 0)
    for t in header.tensors:
        if len(t.shape) < 2:
            continue  # norms, biases and scalars stay F32 in every quantization
        groups[_group(t.name, n_layers)][t.type] += int(np.prod(t.shape))
    out = {}
    for group, types in sorted(groups.items()):
        total = sum(types.values())
        if len(types) == 1:
            out[group] = next(iter(types))
        else:
            out[group] = ", ".join(f"{name} {n / total:.0%}" if n / total >= 0.005 else f"{name} <1%"
                                   for name, n in types.most_common())
    return out


def bytes_per_token(header: GGUFHeader) -> float:
    """Bytes of the file's weights one decoded token reads: the routed experts it is sent to (top-k
    of E), one embedding row, everything else whole (the lm_head is the embedding when tied).
    MTP blocks are not run by llama.cpp's decode and are left out."""
    spec = spec_from_gguf(header)
    share = spec.num_experts_per_tok / spec.num_experts if spec.num_experts else 1.0
    names = {t.name for t in header.tensors}
    total = 0.0
    for t in header.tensors:
        group = _group(t.name, spec.num_layers)
        if group == "MTP":
            continue
        if group == "embeddings":
            total += t.nbytes / spec.vocab_size + (t.nbytes if "output.weight" not in names else 0)
        else:
            total += t.nbytes * (share if group == "routed experts" else 1.0)
    return total


def _group(name: str, n_layers: int) -> str:
    layer = re.match(r"blk\.(\d+)\.", name)
    if layer and int(layer.group(1)) >= n_layers:
        return "MTP"
    if name in ("token_embd.weight",):
        return "embeddings"
    if name.startswith("output."):
        return "lm_head"
    if re.search(r"\.ffn_(gate|up|down|gate_up)_exps\.", name):
        return "routed experts"
    if "_shexp" in name:
        return "shared expert"
    if ".ffn_gate_inp." in name:
        return "router"
    if ".ssm_" in name or ".attn_gate." in name or (".attn_qkv." in name):
        return "DeltaNet"
    if ".attn_" in name:
        return "attention"
    if ".ffn_" in name:
        return "dense MLP"
    return "other"


def tokenizer_from_gguf(header: GGUFHeader):
    """The workbench Tokenizer (encode, decode, chat template, control-token escaping) rebuilt from
    the GGUF vocabulary: byte-level BPE with the pre-tokenizer `tokenizer.ggml.pre` names."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    from ..tokenizer import Tokenizer

    meta, name = header.metadata, header.path.name
    model, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre")
    tokens, merges = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.merges")
    if model != "gpt2" or not tokens or merges is None:
        raise WorkbenchError(f"{name} has no byte-level BPE vocabulary (tokenizer.ggml.model = {model!r}): "
                             "Qwen3.5 GGUFs carry one. Convert the model again with llama.cpp's converter.")
    if pre not in PRE_TOKENIZERS:
        raise WorkbenchError(f"{name}'s pre-tokenizer is {pre!r}; the workbench knows {sorted(PRE_TOKENIZERS)} "
                             "(the Qwen3.5 family's). Convert the model again with a current llama.cpp.")
    kinds = np.asarray(meta.get("tokenizer.ggml.token_type", np.ones(len(tokens), dtype=np.int32)))
    added = [int(i) for i in np.flatnonzero((kinds == _CONTROL) | (kinds == _USER_DEFINED))]
    # Every token in the BPE vocabulary under its GGUF id; the added ones are then marked as added
    # tokens, which keep the id they already have.
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise WorkbenchError(f"{name}'s vocabulary lists a token twice: the file is damaged. Convert it again.")
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = HFTokenizer(models.BPE(vocab, pairs, byte_fallback=False, ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRE_TOKENIZERS[pre]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in added
                            if kinds[i] == _CONTROL])
    tok.add_tokens([AddedToken(tokens[i], special=False, normalized=False) for i in added
                    if kinds[i] == _USER_DEFINED])
    eos = [int(meta[k]) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if k in meta]
    return Tokenizer.from_parts(tok, meta.get("tokenizer.chat_template"), eos)
