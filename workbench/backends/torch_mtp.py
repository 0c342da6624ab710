"""The multi-token-prediction (MTP) layer of a Qwen3.5 / Qwen3-Next checkpoint, on torch.

transformers drops the checkpoint's `mtp.*` weights; this module loads them beside the text model.
The wiring follows vLLM's `qwen3_5_mtp.py` (`Qwen3_5MultiTokenPredictor.forward`) and its MTP
proposer (`vllm/v1/spec_decode/eagle.py`, `propose`):

    x = fc([pre_fc_norm_embedding(embed(t[i+1])) ; pre_fc_norm_hidden(h[i])])   # [T, 2H] -> [T, H], no bias
    x = decoder_layer(x, rope at position i)       # one full-attention layer (gated q_proj; MoE MLP
                                                   # in MoE models) with its own KV cache
    h_mtp[i] = norm(x);   draft for t[i+2] = argmax(lm_head(h_mtp[i]))

`h[i]` is the text model's final-normed hidden state at position i, `embed` and `lm_head` are the
text model's own. Further drafts feed the MTP layer its own output: the pair (h_mtp[i], draft)
at position i + 1. The classes are transformers' own (its RMSNorm, whose weight is an offset from
1, and its decoder layer), so the layer computes what a layer of the text model computes.
"""
from __future__ import annotations

import copy
import inspect
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import check_mtp_tensors


class MTPHead(nn.Module):
    """One MTP layer over a text model `lm` (a transformers causal LM). Holds no embeddings or
    lm_head of its own: it borrows the text model's."""

    def __init__(self, lm):
        super().__init__()
        text = lm.model
        config = lm.config.get_text_config()
        h, eps = config.hidden_size, config.rms_norm_eps
        full = config.layer_types.index("full_attention")
        norm_cls, layer_cls = type(text.norm), type(text.layers[full])
        one = copy.deepcopy(config)
        one.layer_types, one.num_hidden_layers = ["full_attention"], 1
        self.fc = nn.Linear(2 * h, h, bias=False)
        self.pre_fc_norm_embedding = norm_cls(h, eps=eps)
        self.pre_fc_norm_hidden = norm_cls(h, eps=eps)
        self.layers = nn.ModuleList([layer_cls(one, 0)])
        self.norm = norm_cls(h, eps=eps)
        self._lm = [lm]  # a list: not registered as a submodule (its weights are not the head's)
        # transformers 5.24 renamed the layers' past_key_values= to cache=
        self._cache_arg = "cache" if "cache" in inspect.signature(layer_cls.forward).parameters else "past_key_values"

    def forward(self, ids: torch.Tensor, hidden: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """ids `[T]` (the tokens after the hidden states' positions), hidden `[T, H]` (the text model's
        normed hidden states, or the head's own output), positions `[T]` (those of `hidden`) ->
        the head's normed output `[T, H]`; extends `cache` (a DynamicCache of its own) by T."""
        text = self._lm[0].model
        e = self.pre_fc_norm_embedding(text.embed_tokens(ids[None]))
        x = self.fc(torch.cat([e, self.pre_fc_norm_hidden(hidden[None])], dim=-1))   # [1, T, H]
        rope = text.rotary_emb(x, positions.view(1, -1))
        past = cache.get_seq_length()
        # Causal over the head's own cache: query j sees every cached key and the new ones up to j.
        keys = torch.arange(past + len(ids), device=ids.device)
        mask = (keys[None, :] <= past + torch.arange(len(ids), device=ids.device)[:, None]).view(1, 1, len(ids), -1)
        x = self.layers[0](x, position_embeddings=rope, attention_mask=mask, **{self._cache_arg: cache})
        return self.norm(x)[0]

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """The shared lm_head over the head's output `[T, H]` -> `[T, vocab]`."""
        return self._lm[0].lm_head(out)


def load_mtp(lm, folder: Path, keys: dict[str, tuple[Path, str]]) -> MTPHead:
    """The MTP layer `keys` (from `checkpoint.mtp_tensors`) locates, on `lm`'s device and dtype.
    Loaded when first drafted with, not with the text model: in a 35B-A3B release it is ~1.6 GB of experts that plain
    decoding never reads. A WorkbenchError when some tensors are missing or misshapen."""
    from safetensors import safe_open

    found = {}
    for name, (f, key) in keys.items():
        with safe_open(str(f), framework="pt") as st:
            found[name] = st.get_tensor(key)
    param = next(lm.parameters())
    with torch.device("meta"):
        head = MTPHead(lm)
    expected = head.state_dict()
    found = _fused_experts(found, expected)
    check_mtp_tensors(folder, {k: tuple(v.shape) for k, v in expected.items()},
                      {k: tuple(v.shape) for k, v in found.items()})
    head = head.to_empty(device=param.device)
    head.load_state_dict({k: found[k].to(param.dtype) for k in expected}, strict=True)
    return head.to(param.dtype).eval()


def _fused_experts(found: dict, expected: dict) -> dict:
    """Per-expert tensors (`mlp.experts.E.gate_proj.weight`, as the Hub releases store them) stacked
    into transformers' fused `experts.gate_up_proj [E, 2I, H]` and `experts.down_proj [E, H, I]`."""
    base = "layers.0.mlp.experts."
    if base + "gate_up_proj" not in expected or base + "gate_up_proj" in found:
        return found
    n = expected[base + "gate_up_proj"].shape[0]
    names = [f"{base}{e}.{p}.weight" for e in range(n) for p in ("gate_proj", "up_proj", "down_proj")]
    if not all(k in found for k in names):
        return found  # reported as missing
    out = {k: v for k, v in found.items() if not k.startswith(base)}
    out[base + "gate_up_proj"] = torch.stack([torch.cat([found[f"{base}{e}.gate_proj.weight"],
                                                         found[f"{base}{e}.up_proj.weight"]]) for e in range(n)])
    out[base + "down_proj"] = torch.stack([found[f"{base}{e}.down_proj.weight"] for e in range(n)])
    return out
