"""The multi-token-prediction (MTP) layer of a Qwen3.5 / Qwen3-Next checkpoint, on MLX.

mlx-lm drops the checkpoint's `mtp.*` weights on load; this module reads them beside the text
model. The wiring is the torch backend's (`torch_mtp.py`, after vLLM's `qwen3_5_mtp.py`):

    x = fc([pre_fc_norm_embedding(embed(t[i+1])) ; pre_fc_norm_hidden(h[i])])   # [T, 2H] -> [T, H]
    x = decoder_layer(x)      # one full-attention layer of the text model's own class, own KV cache
    h_mtp[i] = norm(x);   draft for t[i+2] = argmax(lm_head(h_mtp[i]))

The decoder layer is mlx-lm's, built as the model's full-attention layers are, so it computes what
they compute. Its rotary positions count from the first pair it reads, not from the text model's
position 0: rotary attention depends only on the distance between positions, so the drafts are
the same (to rounding).
"""
from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from ..checkpoint import check_mtp_tensors, tensor_shapes


class MLXMTPHead(nn.Module):
    """One MTP layer over an mlx-lm Qwen3.5 / Qwen3-Next model; borrows its embeddings and lm_head."""

    def __init__(self, model):
        super().__init__()
        lm = text_lm(model)
        args = lm.args
        h, eps = args.hidden_size, args.rms_norm_eps
        full = next(i for i, layer in enumerate(model.layers) if not layer.is_linear)
        self.fc = nn.Linear(2 * h, h, bias=False)
        self.pre_fc_norm_embedding = nn.RMSNorm(h, eps=eps)
        self.pre_fc_norm_hidden = nn.RMSNorm(h, eps=eps)
        self.layers = [type(model.layers[full])(args, full)]
        self.norm = nn.RMSNorm(h, eps=eps)
        object.__setattr__(self, "_lm", lm)  # not a child module: its weights are not the head's

    def __call__(self, ids: mx.array, hidden: mx.array, cache) -> mx.array:
        """ids `[T]` (the tokens after the hidden states' positions), hidden `[T, H]` (the text model's
        normed hidden states, or the head's own output) -> the head's normed output `[T, H]`;
        extends `cache` (a KVCache of its own) by T."""
        from mlx_lm.models.base import create_attention_mask

        e = self.pre_fc_norm_embedding(self._lm.model.embed_tokens(ids[None]))
        x = self.fc(mx.concatenate([e, self.pre_fc_norm_hidden(hidden[None]).astype(e.dtype)], axis=-1))
        x = self.layers[0](x, mask=create_attention_mask(x, cache), cache=cache)
        return self.norm(x)[0]

    def logits(self, out: mx.array) -> mx.array:
        """The shared lm_head over `[T, H]` -> `[T, vocab]`."""
        return lm_head(self._lm, out)


def text_lm(model):
    """The part of an mlx-lm model that holds `args`, `model` (the decoder) and the lm_head."""
    return getattr(model, "language_model", model)


def lm_head(lm, hidden: mx.array) -> mx.array:
    """`lm`'s output projection (tied to the embeddings or its own) over normed hidden states."""
    if lm.args.tie_word_embeddings:
        return lm.model.embed_tokens.as_linear(hidden)
    return lm.lm_head(hidden)


def load_mlx_mtp(model, folder: Path, where: dict[str, tuple[Path, str]], dtype, ready) -> MLXMTPHead:
    """The MTP layer `where` (from `checkpoint.mtp_tensors`) locates, in `dtype` (norm weights in
    float32; `ready(head, dtype)` finishes it as the backend does its model). A WorkbenchError when
    some tensors are missing or misshapen."""
    from mlx.utils import tree_flatten

    files: dict[Path, dict] = {}
    found = {}
    for name, (f, key) in where.items():
        if f not in files:
            files[f] = mx.load(str(f))  # lazy: only the tensors taken here are ever read
        found[name] = files[f][key]
    head = MLXMTPHead(model)
    expected = {k: tuple(v.shape) for k, v in tree_flatten(head.parameters())}
    norms = {f"{name}.weight" for name, module in head.named_modules() if isinstance(module, nn.RMSNorm)}
    found = _mlx_layout(found, expected, norms, offsets=_stores_norm_offsets(folder))
    check_mtp_tensors(folder, expected, {k: tuple(v.shape) for k, v in found.items()})
    head.load_weights([(k, v if k in norms else v.astype(dtype)) for k, v in found.items() if k in expected])
    ready(head, dtype)
    return head


def _stores_norm_offsets(folder: Path) -> bool:
    """Whether the checkpoint is in the Hugging Face layout, whose RMSNorm weights are offsets from 1
    (mlx-lm's own test: its conv1d weights are not yet moved to [C, K, 1])."""
    from ..checkpoint import weight_files

    for f in weight_files(folder):
        for key, shape in tensor_shapes(f).items():
            if "conv1d.weight" in key:
                return shape[-1] != 1
    return True


def _mlx_layout(found: dict, expected: dict, norms: set[str], offsets: bool) -> dict:
    """Checkpoint tensors as the head's parameters: experts (fused [E, 2I, H] + [E, H, I], or one
    tensor per expert as the Hub releases store them) into SwitchGLU's gate/up/down [E, ., .], and
    norm offsets made weights (1 + w, in float32 so bfloat16 does not round them)."""
    out = {}
    base = "layers.0.mlp.experts."
    for k, v in found.items():
        if k.startswith(base):
            continue
        if k in norms:
            v = v.astype(mx.float32) + 1.0 if offsets else v.astype(mx.float32)
        out[k] = v
    switch = "layers.0.mlp.switch_mlp."
    if switch + "gate_proj.weight" not in expected:
        return out
    if base + "gate_up_proj" in found and base + "down_proj" in found:
        gate_up = found[base + "gate_up_proj"]
        mid = gate_up.shape[-2] // 2
        out[switch + "gate_proj.weight"], out[switch + "up_proj.weight"] = gate_up[..., :mid, :], gate_up[..., mid:, :]
        out[switch + "down_proj.weight"] = found[base + "down_proj"]
        return out
    n = expected[switch + "gate_proj.weight"][0]
    for p in ("gate_proj", "up_proj", "down_proj"):
        names = [f"{base}{e}.{p}.weight" for e in range(n)]
        if all(k in found for k in names):  # otherwise reported as missing
            out[f"{switch}{p}.weight"] = mx.stack([found[k] for k in names])
    return out
