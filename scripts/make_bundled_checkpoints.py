"""Build the bundled tiny checkpoints `tiny` (Qwen3.5-MoE) and `tiny-dense` (Qwen3.5) from a fixed seed.

They follow the layout of the Qwen3.5 releases exactly, so the code that loads them is the code
that loads a 35B model:
- `config.json` of a `Qwen3_5MoeForConditionalGeneration` / `Qwen3_5ForConditionalGeneration`
  with a nested `text_config` (explicit `layer_types`, `mtp_num_hidden_layers`, `mamba_ssm_dtype`)
  and a tiny `vision_config`;
- `model.safetensors` with `model.language_model.*`, `model.visual.*` and `mtp.*` keys, fused
  routed experts (`mlp.experts.gate_up_proj [E, 2I, H]`, `mlp.experts.down_proj [E, H, I]`),
  `A_log` and `linear_attn.norm.weight` in float32, every parameter moved off its initial value
  (norm offsets and `dt_bias` included, so the `1 + w` offsets are exercised);
- a byte-level BPE `tokenizer.json` (Qwen's pre-tokenizer regex) carrying the Qwen3.5 special
  tokens in their release order, `tokenizer_config.json`, `chat_template.jinja` and
  `generation_config.json`.

The weights are random (scripts/train_tiny/ trains a real one). Run:  python scripts/make_bundled_checkpoints.py
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "workbench" / "checkpoints"
TEMPLATE = ROOT / "workbench" / "templates" / "qwen3_5_chat.jinja"
SEED = 1234

# Release order of the Qwen3.5 special tokens (<|endoftext|> is 248044 in the real vocabulary).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]
# Markup the model writes as text: decoded even with skip_special_tokens (as in the release).
TEXT_MARKUP = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}
QWEN_PRETOKENIZE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
                    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
BPE_VOCAB = 3000  # merges + bytes; the specials come after, the embedding is padded to 64


def corpus() -> list[str]:
    """Text to learn merges from: stdlib source plus chat-formatted samples."""
    import sysconfig
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py"))[:120]
    texts = [p.read_text(errors="ignore") for p in files]
    texts += [
        "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n"
        "<think>\nThe user wants the weather.\n</think>\n\nIt is sunny in Paris today.<|im_end|>\n",
        "Hello! How can I help you today? Here is the answer: 42.\n",
    ] * 50
    return texts


def build_tokenizer(folder: Path, texts: list[str] | None = None, bpe_vocab: int = BPE_VOCAB) -> int:
    """Train and save the tokenizer files; returns the number of token ids in use."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus() if texts is None else texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=t not in TEXT_MARKUP, normalized=False)
                    for t in SPECIAL_TOKENS])
    tok.save(str(folder / "tokenizer.json"))
    n = tok.get_vocab_size(with_added_tokens=True)
    base = tok.token_to_id("<|endoftext|>")
    added = {str(base + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": t not in TEXT_MARKUP}
             for i, t in enumerate(SPECIAL_TOKENS)}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "added_tokens_decoder": added, "bos_token": None,
        "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>", "errors": "replace",
        "model_max_length": 2048, "pad_token": "<|endoftext|>", "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    }, indent=2) + "\n")
    shutil.copy(TEMPLATE, folder / "chat_template.jinja")
    return n


def text_config(vocab: int, moe: bool, tokens: dict, **overrides) -> dict:
    cfg = dict(
        hidden_size=64, num_hidden_layers=4, full_attention_interval=4,
        layer_types=["linear_attention"] * 3 + ["full_attention"],
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, attn_output_gate=True,
        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
        linear_value_head_dim=16, linear_conv_kernel_dim=4, vocab_size=vocab,
        max_position_embeddings=2048, rms_norm_eps=1e-6, hidden_act="silu",
        tie_word_embeddings=False, mtp_num_hidden_layers=1, mtp_use_dedicated_embeddings=False,
        mamba_ssm_dtype="float32", dtype="float32", eos_token_id=tokens["<|endoftext|>"],
        rope_parameters={"mrope_interleaved": True, "mrope_section": [2, 1, 1], "rope_type": "default",
                         "rope_theta": 10_000_000, "partial_rotary_factor": 0.5},
    )
    if moe:
        cfg.update(num_experts=16, num_experts_per_tok=4, moe_intermediate_size=32,
                   shared_expert_intermediate_size=64, router_aux_loss_coef=0.001, mlp_only_layers=[])
    else:
        cfg.update(intermediate_size=128)
    cfg.update(overrides)
    return cfg


VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
              patch_size=4, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
              num_position_embeddings=16, hidden_act="gelu_pytorch_tanh", deepstack_visual_indexes=[])


def perturb_(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Move every parameter off its initial value, with scales a trained model could have."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith("A_log"):
                p.copy_(torch.log(torch.rand(p.shape, generator=generator) * 15 + 1))
            elif name.endswith("dt_bias"):
                p.copy_(noise * 0.5)
            elif p.ndim == 1:  # norm weights: offsets around 0 (decoder) or scales around 1 (gated)
                p.add_(noise * 0.1)
            else:
                p.copy_(noise * (1.0 / max(p.shape[-1], 1)) ** 0.5)


def mtp_tensors(state: dict[str, torch.Tensor], cfg: dict, gen: torch.Generator) -> dict:
    """One MTP layer as in the release: fc over [embedding; hidden], two pre-norms, a
    full-attention decoder layer, and a final norm."""
    h = cfg["hidden_size"]
    full = cfg["layer_types"].index("full_attention")
    prefix = f"model.language_model.layers.{full}."
    out = {f"mtp.layers.0.{k[len(prefix):]}": v + 0.01 * torch.randn(v.shape, generator=gen)
           for k, v in state.items() if k.startswith(prefix)}
    out["mtp.fc.weight"] = torch.randn(h, 2 * h, generator=gen) / (2 * h) ** 0.5
    for name in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm"):
        out[f"mtp.{name}.weight"] = 0.1 * torch.randn(h, generator=gen)
    return out


def build_model(folder: Path, moe: bool, vocab_in_use: int, tokens: dict) -> None:
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration, Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

    vocab = -(-vocab_in_use // 64) * 64  # padded like the release (248,320 rows for 248,070 ids)
    config_cls, model_cls = ((Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration) if moe
                             else (Qwen3_5Config, Qwen3_5ForConditionalGeneration))
    text = text_config(vocab, moe, tokens)
    config = config_cls(text_config=text, vision_config=dict(VISION, model_type="qwen3_5_moe" if moe else "qwen3_5"),
                        tie_word_embeddings=False, image_token_id=tokens["<|image_pad|>"],
                        video_token_id=tokens["<|video_pad|>"],
                        vision_start_token_id=tokens["<|vision_start|>"],
                        vision_end_token_id=tokens["<|vision_end|>"])
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + (1 if moe else 2))
    model = model_cls(config).float().eval()
    perturb_(model, gen)
    save_release(folder, model, text, tokens, gen)


def save_release(folder: Path, model, text: dict, tokens: dict, gen: torch.Generator) -> None:
    """Save a *ForConditionalGeneration model as the releases do: safetensors with MTP weights
    added, config.json with the keys transformers drops restored, generation_config.json."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(folder, save_original_format=False)
    weights = folder / "model.safetensors"
    state = load_file(weights)
    state.update(mtp_tensors(state, model.config.text_config.to_dict(), gen))
    save_file({k: v.contiguous() for k, v in sorted(state.items())}, weights, metadata={"format": "pt"})
    cfg = json.loads((folder / "config.json").read_text())
    cfg["text_config"].update({k: v for k, v in text.items()
                               if k in ("layer_types", "mtp_num_hidden_layers", "mamba_ssm_dtype",
                                        "mtp_use_dedicated_embeddings", "dtype", "eos_token_id")})
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (folder / "generation_config.json").write_text(json.dumps({
        "bos_token_id": tokens["<|endoftext|>"], "do_sample": True,
        "eos_token_id": [tokens["<|im_end|>"], tokens["<|endoftext|>"]],
        "pad_token_id": tokens["<|endoftext|>"], "temperature": 1.0, "top_k": 20, "top_p": 0.95,
    }, indent=2) + "\n")


def main() -> None:
    for name, moe in (("tiny-random", True), ("tiny-dense", False)):
        folder = OUT / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        n = build_tokenizer(folder)
        tokens = json.loads((folder / "tokenizer.json").read_text())
        ids = {t["content"]: t["id"] for t in tokens["added_tokens"]}
        build_model(folder, moe, n, ids)
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"{name}: {folder.relative_to(ROOT)}  {size / 1e6:.2f} MB", file=sys.stderr)


if __name__ == "__main__":
    np.random.seed(SEED)
    main()
