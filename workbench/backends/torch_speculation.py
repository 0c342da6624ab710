"""Speculative decoding on the torch backend: the MTP layer drafts, the text model verifies.

The hard part is the hybrid cache. Full-attention layers keep keys and values per token, so
dropping rejected drafts is a crop. A Gated DeltaNet layer keeps one recurrent state `[Hv, Dk, Dv]`
and a conv window of the last K inputs: after reading [token, d1..dk] they hold what follows dk,
and nothing in them can be subtracted back out. So the verify forward keeps what each position
leaves behind, and the rollback picks the one where the accepted tokens end (SGLang and vLLM keep
per-draft-position Mamba states for the same reason):

- recurrent state: during the verify forward the gated delta rule runs token by token (the
  workbench's reference step, `reference.delta_rule_step`, on the device) and every intermediate
  state `[T][1, Hv, Dk, Dv]` is kept; accepting n drafts copies state n back into the cache;
- conv window: the cache records its past (transformers' `activate_past_recording`), so the window
  grows by T during the verify and `crop(-(T - n - 1))` cuts it back to the K inputs that end at the
  last accepted token; the same crop drops the rejected keys and values of attention layers.

The MTP layer has its own KV cache. It reads each committed (hidden state, next token) pair once:
the prompt's at the first draft, then the accepted positions of each verify; the chained drafts
beyond them are cropped again at once, since the next verify replaces them with the text model's
own hidden states.
"""
from __future__ import annotations

import importlib
import threading
from contextlib import nullcontext

import numpy as np
import torch

from ..reference import delta_rule_step
from .base import Speculation
from .recorder import probe_scope
from .torch_probes import _l2norm


class TorchSpeculation(Speculation):
    """One generation's speculative state over `cache` (a transformers DynamicCache)."""

    def __init__(self, backend, cache, modeling: str, probe=None):
        from transformers import DynamicCache

        self.backend, self.cache, self.head, self.probe = backend, cache, backend.mtp, probe
        self.lm = backend.model
        self.text = self.lm.model
        self.module = importlib.import_module(modeling)
        types = self.lm.config.get_text_config().layer_types
        self.linear = [i for i, t in enumerate(types) if t == "linear_attention"]
        self.head_cache = DynamicCache()
        self.device = next(self.lm.parameters()).device
        self.hidden: torch.Tensor | None = None   # [n, H] text-model states the head has not read
        self.following = torch.zeros(0, dtype=torch.long, device=self.device)  # [n - 1] the tokens after them
        self.start = 0                             # position of hidden[0]
        self._fed = 0                              # tokens the last verify fed
        self._states: list[list[torch.Tensor]] = []
        self._drafts = self.following

    def _run_text(self, ids: torch.Tensor) -> torch.Tensor:
        """ids `[T]` through the text model, extending the cache -> final-normed hidden `[T, H]`."""
        out = self.text(input_ids=ids[None], use_cache=True, **{self.backend._cache_arg: self.cache})
        return out.last_hidden_state[0]

    def prefill(self, tokens: np.ndarray):
        with torch.inference_mode():
            self.start = self.cache.get_seq_length()
            ids = torch.as_tensor(tokens.astype(np.int64, copy=False), device=self.device)
            with self.probed():
                self.hidden = self._run_text(ids)
            self.following = ids[1:]
            return self.lm.lm_head(self.hidden[-1])

    def draft(self, token: int, k: int):
        head = self.head
        with torch.inference_mode():
            ids = torch.cat([self.following, torch.tensor([token], device=self.device)])
            n = len(ids)
            out = head(ids, self.hidden, torch.arange(self.start, self.start + n, device=self.device), self.head_cache)
            last, position = out[-1:], self.start + n - 1
            drafts = [torch.argmax(head.logits(last[0]))] if k else []
            for j in range(1, k):  # chain: the head reads its own output and its last draft
                last = head(drafts[-1].view(1), last, torch.tensor([position + j], device=self.device),
                            self.head_cache)
                drafts.append(torch.argmax(head.logits(last[0])))
            if k > 1:  # the chain's entries are replaced by the verified pairs next time
                self.head_cache.crop(-(k - 1))
            self.start += n
            self._drafts = torch.stack(drafts) if drafts else torch.zeros(0, dtype=torch.long, device=self.device)
            return self._drafts

    def verify(self, token: int, drafts):
        ids = torch.cat([torch.tensor([token], device=self.device), drafts])
        self._fed = len(ids)
        self._states = []
        with torch.inference_mode():
            self.cache.activate_past_recording()
            with _stepwise_delta_rule(self.module, self._states) if len(ids) > 1 else nullcontext(), self.probed():
                self.hidden = self._run_text(ids)
            return self.lm.lm_head(self.hidden)

    def accept(self, n: int) -> None:
        drop = self._fed - (n + 1)
        with torch.inference_mode():
            self.cache.crop(-drop)  # keys/values of the rejected drafts; conv windows back to K inputs
            if drop:
                for layer, states in zip(self.linear, self._states, strict=True):
                    self.cache.layers[layer].recurrent_states[0].copy_(states[n])
        self.hidden = self.hidden[:n + 1]
        self.following = self._drafts[:n]
        self._states = []
        self.forget(drop, self.hidden)

    def close(self) -> None:
        """The cache back to plain decoding (a kept prompt-cache entry continues without recording)."""
        with torch.inference_mode():
            if any(getattr(layer, "record_past", False) for layer in self.cache.layers):
                self.cache.crop(0)
                for layer in self.cache.layers:
                    if getattr(layer, "record_past", False):
                        layer.record_past = False
        self._states, self.hidden = [], None


def _stepwise_delta_rule(module, record: list):
    """While the block runs, this thread's multi-token gated delta rule goes token by token
    (`reference.delta_rule_step`, on the device) and appends each layer's states after every
    position (`[T]` of `[1, Hv, Dk, Dv]`) to `record`, layer by layer in order. The function is
    swapped on the modeling module, which every model of the architecture shares: inside
    `probe_scope` (so no probe installs or removes its own wrapper meanwhile), and another thread's
    forward (another model's prefill) still takes the function it had."""
    return probe_scope(lambda: _install_stepwise(module, record))


def _install_stepwise(module, record: list) -> list:
    chunked = module.torch_chunk_gated_delta_rule
    owner = threading.get_ident()

    def stepwise(query, key, value, g, beta, initial_state=None, output_final_state=False,
                 use_qk_l2norm_in_kernel=False, **kwargs):
        if threading.get_ident() != owner:
            return chunked(query, key, value, g=g, beta=beta, initial_state=initial_state,
                           output_final_state=output_final_state, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                           **kwargs)
        # query, key [1, T, Hk, Dk]; value [1, T, Hv, Dv]; g, beta [1, T, Hv]; state [1, Hv, Dk, Dv]
        r = value.shape[2] // key.shape[2]
        q, k = query[0].float(), key[0].float()
        if use_qk_l2norm_in_kernel:
            q, k = _l2norm(q), _l2norm(k)
        q = q.repeat_interleave(r, dim=1) / q.shape[-1] ** 0.5
        k = k.repeat_interleave(r, dim=1)
        v, decay, b = value[0].float(), g[0].float().exp(), beta[0].float()
        state = (initial_state[0].float() if initial_state is not None
                 else v.new_zeros(v.shape[1], k.shape[-1], v.shape[-1]))
        outs, states = [], []
        for t in range(q.shape[0]):
            state = delta_rule_step(state, k[t], v[t], decay[t], b[t], torch.einsum)
            states.append(state[None])
            outs.append(torch.einsum("hkv,hk->hv", state, q[t]))
        record.append(states)
        return torch.stack(outs)[None].to(query.dtype), states[-1]

    module.torch_chunk_gated_delta_rule = stepwise
    return [lambda: setattr(module, "torch_chunk_gated_delta_rule", chunked)]
