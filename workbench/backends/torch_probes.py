"""How the torch backend records: hooks into transformers' Qwen3.5 modules, and the torch maths of
routing interventions. The bookkeeping is the shared `Recorder`'s.

- Routing: a forward hook on each MoE block's router (`mlp.gate`, which returns logits, top-k
  weights and indices) and on its `shared_expert_gate`. An intervention replaces the router's
  output from its own logits.
- DeltaNet: the recurrence functions transformers calls (`torch_chunk_gated_delta_rule` for
  prefill, `torch_recurrent_gated_delta_rule` for decode) are wrapped; a pre-hook on each
  GatedDeltaNet module says which layer is calling.
- Attention: the model runs with eager attention (which returns its probabilities) while recorded.

Everything is installed for one forward call at a time (`installed`), inside `probe_scope`.
"""
from __future__ import annotations

import importlib

import numpy as np
import torch
import torch.nn.functional as F

from ..capture import ProbePlan
from .recorder import HookedProbe


def route(probs: torch.Tensor, k: int, disabled: torch.Tensor | None, forced: int,
          scope: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k routing with experts disabled / one forced, weights renormalised from `probs`.

    probs [T, E] float32; scope [T] bool (tokens the change applies to) or None for all.
    Returns (weights [T, k] float32, indices [T, k])."""
    score = probs.clone()
    if disabled is not None:
        score[:, disabled] = -1.0
    if forced >= 0:
        score[:, forced] = 2.0  # above any probability: always chosen
    if scope is not None:
        score = torch.where(scope[:, None], score, probs)
    indices = torch.topk(score, k, dim=-1).indices
    weights = probs.gather(1, indices)
    return weights / weights.sum(dim=-1, keepdim=True), indices


class TorchOps:
    """The array operations the recorder needs, in torch."""

    lazy = False

    def __init__(self, device: torch.device):
        self.device = device

    def to_numpy(self, x):
        x = x.detach()
        return (x.float() if x.is_floating_point() else x).cpu().numpy()

    def zeros(self, shape):
        return torch.zeros(tuple(shape), dtype=torch.float32, device=self.device)

    exp = staticmethod(torch.exp)
    einsum = staticmethod(torch.einsum)
    stack = staticmethod(torch.stack)

    def repeat_heads(self, x, r):
        return x.repeat_interleave(r, dim=1) if r > 1 else x

    def frobenius(self, state):
        return torch.linalg.vector_norm(state, dim=(-2, -1))

    def take(self, x, indices):
        return x[list(indices)]

    def flush(self, arrays) -> None:
        pass


class TorchProbe(HookedProbe):
    def __init__(self, backend, plan: ProbePlan):
        super().__init__(backend, plan, TorchOps(backend._device))
        self._k = self.spec.num_experts_per_tok
        self._pending_routing = None
        self._changes = {}
        for layer, (disabled, forced) in plan.intervention.items():
            off = torch.as_tensor(np.flatnonzero(disabled), device=backend._device) if disabled.any() else None
            self._changes[layer] = (off, forced)

    def hook_in(self, undo: list) -> None:
        layers = self.backend.model.model.layers
        plan, spec = self.plan, self.spec

        def hook(handle):
            undo.append(handle.remove)

        if plan.routing or plan.intervention:
            for i in spec.moe_layers:
                mlp = layers[i].mlp
                hook(mlp.gate.register_forward_hook(self._router_hook(i)))
                if plan.routing:
                    hook(mlp.shared_expert_gate.register_forward_hook(self._shared_hook(i)))
        if plan.deltanet:
            for i in spec.linear_layers:
                hook(layers[i].linear_attn.register_forward_pre_hook(self._enter_layer(i)))
            module = importlib.import_module(type(layers[spec.linear_layers[0]].linear_attn).__module__)
            for name in ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule"):
                original = getattr(module, name)
                setattr(module, name, self._recurrence_wrapper(original))
                undo.append(lambda m=module, n=name, o=original: setattr(m, n, o))
        if plan.attention:
            model = self.backend.model
            before = model.config._attn_implementation
            model.set_attn_implementation("eager")
            undo.append(lambda: model.set_attn_implementation(before))
            for i in spec.full_attention_layers:
                hook(layers[i].self_attn.register_forward_hook(self._attention_hook(i)))

    # ---- routing ------------------------------------------------------------------------
    def _router_hook(self, layer: int):
        plan, rec, change = self.plan, self.recorder, self._changes.get(layer)

        def hook(module, args, output):
            logits, weights, indices = output
            start = rec.advance("routing", layer, logits.shape[0])
            probs = None
            if change is not None or plan.router_probs:
                probs = F.softmax(logits, dim=-1, dtype=torch.float32)
            if change is not None:
                scope = rec.scope(start, logits.shape[0])
                scope = None if scope is None else torch.as_tensor(scope, device=logits.device)
                w, indices = route(probs, self._k, change[0], change[1], scope)
                weights = w.to(logits.dtype)
                output = (logits, weights, indices)
            self._pending_routing = (indices, weights, probs)
            return output

        return hook

    def _shared_hook(self, layer: int):
        # The shared-expert gate runs after the router in the same block: record both together.
        def hook(module, args, output):
            indices, weights, probs = self._pending_routing
            self.recorder.routing(layer, indices, weights, torch.sigmoid(output.float())[:, 0], probs)
        return hook

    # ---- DeltaNet -----------------------------------------------------------------------
    def _enter_layer(self, layer: int):
        def hook(module, args):
            self.recorder.layer = layer
        return hook

    def _recurrence_wrapper(self, original):
        def wrapped(query, key, value, *args, g=None, beta=None, initial_state=None, **kwargs):
            out, final = original(query, key, value, *args, g=g, beta=beta, initial_state=initial_state, **kwargs)
            if self.mine():
                # query, key [1, T, Hk, Dk] raw; value [1, T, Hv, Dv]; g, beta [1, T, Hv]; states [1, Hv, Dk, Dv]
                self.recorder.deltanet(
                    self.recorder.layer, g[0].float(), beta[0].float(), _l2norm(query[0].float()),
                    _l2norm(key[0].float()), value[0].float(),
                    None if initial_state is None else initial_state[0].float(),
                    None if final is None else final[0].float())
            return out, final
        return wrapped

    # ---- attention ----------------------------------------------------------------------
    def _attention_hook(self, layer: int):
        def hook(module, args, output):
            weights = output[1]
            if weights is not None and weights.shape[-2] > 1:  # prefill only
                self.recorder.attention(layer, weights[0].float())
        return hook


def _l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """As transformers and fla normalise q and k: x / sqrt(sum(x^2) + eps)."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps)
