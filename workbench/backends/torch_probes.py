"""Probes for the torch backend: routing, DeltaNet state and attention maps, read from
transformers' Qwen3.5 modules while a run goes on, and routing interventions.

Recording keeps references to device tensors (no host sync inside the decode loop); everything is
moved to numpy once, in `collect`.
- Routing: a forward hook on each MoE block's router (`mlp.gate`, which returns logits, top-k
  weights and indices) and on its `shared_expert_gate`. An intervention replaces the router's
  output from its own logits.
- DeltaNet: the recurrence functions transformers calls (`torch_chunk_gated_delta_rule` for
  prefill, `torch_recurrent_gated_delta_rule` for decode) are wrapped for the duration; a pre-hook on
  each GatedDeltaNet module says which layer is calling. Prefill kernels return only the final
  state, so the states after each prompt token are recomputed with the exact per-token recurrence
  from the same inputs; the state after the last token is the model's own.
- Attention: the model runs with eager attention (which returns its probabilities) while recorded.
"""
from __future__ import annotations

import importlib
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from ..trace import ProbePlan
from .base import Probe


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


class TorchProbe(Probe):
    def __init__(self, backend, plan: ProbePlan):
        self.backend, self.plan = backend, plan
        self.spec = backend.spec
        self._handles: list = []
        self._patched: list = []
        self._offsets: dict[int, int] = defaultdict(int)       # tokens seen per MoE layer
        self._dn_offsets: dict[int, int] = defaultdict(int)    # tokens seen per DeltaNet layer
        self._routing: dict[int, list] = defaultdict(list)     # layer -> [(idx, w, probs|None)]
        self._shared: dict[int, list] = defaultdict(list)
        self._dn: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        self._final: dict[int, torch.Tensor] = {}
        self._attention: dict[int, list] = defaultdict(list)
        self._layer: int | None = None
        self._attn_impl: str | None = None

    # ---- install / remove ---------------------------------------------------------------
    def __enter__(self):
        layers = self.backend.model.model.layers
        plan = self.plan
        if plan.routing or plan.intervention:
            for i in self.spec.moe_layers:
                mlp = layers[i].mlp
                self._handles.append(mlp.gate.register_forward_hook(self._router_hook(i)))
                if plan.routing:
                    self._handles.append(mlp.shared_expert_gate.register_forward_hook(self._shared_hook(i)))
        if plan.deltanet:
            for i in self.spec.linear_layers:
                self._handles.append(layers[i].linear_attn.register_forward_pre_hook(self._enter_layer(i)))
            module = importlib.import_module(type(layers[self.spec.linear_layers[0]].linear_attn).__module__)
            for name in ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule"):
                original = getattr(module, name)
                setattr(module, name, self._recurrence_wrapper(original))
                self._patched.append((module, name, original))
        if plan.attention:
            self._attn_impl = self.backend.model.config._attn_implementation
            self.backend.model.set_attn_implementation("eager")
            for i in self.spec.full_attention_layers:
                self._handles.append(layers[i].self_attn.register_forward_hook(self._attention_hook(i)))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        for module, name, original in reversed(self._patched):
            setattr(module, name, original)
        if self._attn_impl is not None:
            self.backend.model.set_attn_implementation(self._attn_impl)
        self._handles, self._patched, self._attn_impl = [], [], None
        return False

    # ---- routing ------------------------------------------------------------------------
    def _router_hook(self, layer: int):
        plan, k = self.plan, self.spec.num_experts_per_tok
        change = plan.intervention.get(layer)
        disabled = None
        if change is not None and change[0].any():
            disabled = torch.as_tensor(np.flatnonzero(change[0]), device=self.backend._device)

        def hook(module, args, output):
            logits, weights, indices = output
            start = self._offsets[layer]
            self._offsets[layer] = start + logits.shape[0]
            probs = None
            if change is not None or plan.router_probs:
                probs = F.softmax(logits, dim=-1, dtype=torch.float32)
            if change is not None:
                scope = None
                if plan.positions is not None:
                    pos = range(start, start + logits.shape[0])
                    scope = torch.tensor([p in plan.positions for p in pos], device=logits.device)
                w, indices = route(probs, k, disabled, change[1], scope)
                weights = w.to(logits.dtype)
                output = (logits, weights, indices)
            if plan.routing:
                self._routing[layer].append((indices, weights, probs if plan.router_probs else None))
            return output

        return hook

    def _shared_hook(self, layer: int):
        def hook(module, args, output):
            self._shared[layer].append(output)
        return hook

    # ---- DeltaNet -----------------------------------------------------------------------
    def _enter_layer(self, layer: int):
        def hook(module, args):
            self._layer = layer
        return hook

    def _recurrence_wrapper(self, original):
        def wrapped(query, key, value, *args, g=None, beta=None, initial_state=None, **kwargs):
            out, final = original(query, key, value, *args, g=g, beta=beta, initial_state=initial_state, **kwargs)
            if self._layer is not None:
                self._record_deltanet(self._layer, query, key, value, g, beta, initial_state, final)
            return out, final
        return wrapped

    def _record_deltanet(self, layer, query, key, value, g, beta, initial_state, final) -> None:
        """query, key [1, T, Hk, Dk] raw; value [1, T, Hv, Dv]; g, beta [1, T, Hv];
        states [1, Hv, Dk, Dv]."""
        plan = self.plan
        rec = self._dn[layer]
        t0 = self._dn_offsets[layer]
        n = query.shape[1]
        self._dn_offsets[layer] = t0 + n
        rec["log_decay"].append(g[0].float())
        rec["beta"].append(beta[0].float())
        keep = layer in plan.state_layers
        q = _l2norm(query[0].float())
        k = _l2norm(key[0].float())
        v = value[0].float()
        if keep and plan.inputs:
            rec["queries"].append(q)
            rec["keys"].append(k)
            rec["values"].append(v)
        wanted = [t for t in range(t0, t0 + n) if plan.state_tokens is not None and t in plan.state_tokens]
        heads = torch.as_tensor(plan.state_heads, device=query.device, dtype=torch.long) if keep else None
        if n == 1 and final is not None:
            state = final[0].float()
            rec["state_norm"].append(torch.linalg.vector_norm(state, dim=(-2, -1))[None])
            if keep and wanted:
                rec["states"].append(state[heads][None])
                rec["state_tokens"].extend(wanted)
        else:
            r = value.shape[2] // key.shape[2]
            k_v = k.repeat_interleave(r, dim=1)              # [T, Hv, Dk]
            state = (torch.zeros(value.shape[2], k.shape[-1], v.shape[-1], device=v.device)
                     if initial_state is None else initial_state[0].float())
            decay, b = g[0].float().exp(), beta[0].float()
            norms = []
            for t in range(n):
                state = state * decay[t, :, None, None]
                kv = torch.einsum("hkv,hk->hv", state, k_v[t])
                state = state + torch.einsum("hk,hv->hkv", k_v[t], (v[t] - kv) * b[t, :, None])
                if t == n - 1 and final is not None:
                    state = final[0].float()  # the model's own state enters the cache
                norms.append(torch.linalg.vector_norm(state, dim=(-2, -1)))
                if keep and t0 + t in (plan.state_tokens or ()):
                    rec["states"].append(state[heads][None])
                    rec["state_tokens"].append(t0 + t)
            rec["state_norm"].append(torch.stack(norms))
        if keep:
            self._final[layer] = state

    # ---- attention ----------------------------------------------------------------------
    def _attention_hook(self, layer: int):
        def hook(module, args, output):
            weights = output[1]
            if weights is not None and weights.shape[-2] > 1:  # prefill only
                self._attention[layer].append(weights[0].float())
        return hook

    # ---- results ------------------------------------------------------------------------
    def collect(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        np_ = self.backend.to_numpy
        if self.plan.routing and self._routing:
            layers = self.spec.moe_layers
            out["experts"] = np.stack([np_(torch.cat([c[0] for c in self._routing[i]])) for i in layers])
            out["weights"] = np.stack([np_(torch.cat([c[1] for c in self._routing[i]])) for i in layers])
            out["shared_gate"] = np.stack([np_(torch.sigmoid(torch.cat(self._shared[i]).float()))[:, 0]
                                           for i in layers])
            if self.plan.router_probs:
                out["router_probs"] = np.stack([np_(torch.cat([c[2] for c in self._routing[i]]))
                                                for i in layers])
        if self.plan.deltanet and self._dn:
            lin, kept = self.spec.linear_layers, self.plan.state_layers
            for name in ("log_decay", "beta", "state_norm"):
                out[name] = np.stack([np_(torch.cat(self._dn[i][name])) for i in lin])
            out["final_state"] = np.stack([np_(self._final[i]) for i in kept])
            if self.plan.inputs:
                for name in ("queries", "keys", "values"):
                    out[name] = np.stack([np_(torch.cat(self._dn[i][name])) for i in kept])
            if self.plan.state_tokens:
                out["states"] = np.stack([np_(torch.cat(self._dn[i]["states"])) for i in kept])
                out["state_tokens"] = np.asarray(self._dn[kept[0]]["state_tokens"], dtype=np.int64)
        if self.plan.attention and self._attention:
            out["attention"] = np.stack([np_(self._attention[i][0]) for i in self.spec.full_attention_layers])
        return out


def _l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """As transformers and fla normalise q and k: x / sqrt(sum(x^2) + eps)."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps)
