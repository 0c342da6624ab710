"""Probes for the MLX backend: routing, DeltaNet state and attention maps, read from mlx-lm's
Qwen3.5 / Qwen3-Next modules while a run goes on, and routing interventions.

MLX modules have no hooks, so for the duration of a probe each instrumented module's class is
swapped for a subclass that records (and swaps back on exit):
- MoE blocks run the same computation as mlx-lm's `Qwen3NextSparseMoeBlock` and keep the
  router's top-k indices, weights, softmax and shared-expert gate (device arrays already in the
  step's graph: recording adds no work). An intervention changes the top-k choice.
- GatedDeltaNet layers: `gated_delta_update` (which mlx-lm calls with L2-normalised q, k) is
  wrapped; prefill returns only the final state, so states after each prompt token are recomputed
  with the exact per-token recurrence; the state after the last token is the model's own. MLX
  keeps states as [Hv, Dv, Dk]; `collect` transposes them to torch's [Hv, Dk, Dv].
- Attention: `scaled_dot_product_attention` is wrapped and the probabilities recomputed from the
  same queries and keys (MLX's fused kernel does not return them).
Per-token summaries of decode steps are handed to the backend's `queue`, so they are evaluated
with the step and the states they came from are freed.
"""
from __future__ import annotations

import importlib
from collections import defaultdict

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..trace import ProbePlan
from .base import Probe

_MODULES = ("mlx_lm.models.qwen3_5", "mlx_lm.models.qwen3_next")


def route(probs: mx.array, k: int, disabled: mx.array | None, forced: int,
          scope: mx.array | None) -> tuple[mx.array, mx.array]:
    """Top-k with experts disabled / one forced; weights from `probs` [..., E] (not yet
    renormalised). Returns (weights [..., k], indices [..., k])."""
    score = probs
    if disabled is not None:
        score = mx.where(disabled, mx.array(-1.0, dtype=probs.dtype), score)
    if forced >= 0:
        score = mx.where(mx.arange(probs.shape[-1]) == forced, mx.array(2.0, dtype=probs.dtype), score)
    if scope is not None:
        score = mx.where(scope[..., None], score, probs)
    indices = mx.argpartition(score, kth=-k, axis=-1)[..., -k:]
    return mx.take_along_axis(probs, indices, axis=-1), indices


class MLXProbe(Probe):
    def __init__(self, backend, plan: ProbePlan):
        self.backend, self.plan = backend, plan
        self.spec = backend.spec
        self._swapped: list = []
        self._patched: list = []
        self._offsets: dict[int, int] = defaultdict(int)
        self._dn_offsets: dict[int, int] = defaultdict(int)
        self._routing: dict[int, list] = defaultdict(list)
        self._dn: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        self._final: dict[int, mx.array] = {}
        self._attention: dict[int, list] = defaultdict(list)
        self._layer: int | None = None
        self.pending: list[mx.array] = []   # small arrays to evaluate with the next step

    # ---- install / remove ---------------------------------------------------------------
    def __enter__(self):
        layers = self.backend.model.layers
        plan = self.plan
        if plan.routing or plan.intervention:
            for i in self.spec.moe_layers:
                self._swap(layers[i].mlp, i, _moe_call)
        if plan.deltanet:
            for i in self.spec.linear_layers:
                self._swap(layers[i].linear_attn, i, _entering_call)
            self._patch("gated_delta_update", self._recurrence_wrapper)
        if plan.attention:
            for i in self.spec.full_attention_layers:
                self._swap(layers[i].self_attn, i, _entering_call)
            self._patch("scaled_dot_product_attention", self._attention_wrapper)
        self.backend._probe = self
        return self

    def __exit__(self, *exc):
        for module, cls in reversed(self._swapped):
            module.__class__ = cls
        for module, name, original in reversed(self._patched):
            setattr(module, name, original)
        self._swapped, self._patched = [], []
        self.backend._probe = None
        return False

    def _swap(self, module, layer: int, call) -> None:
        cls = type(module)
        module.__class__ = type(f"Probed{cls.__name__}", (cls,), {"__call__": call})
        module._wb_probe, module._wb_layer = self, layer
        self._swapped.append((module, cls))

    def _patch(self, name: str, make_wrapper) -> None:
        for mod_name in _MODULES:
            module = importlib.import_module(mod_name)
            original = getattr(module, name, None)
            if original is not None:
                setattr(module, name, make_wrapper(original))
                self._patched.append((module, name, original))

    # ---- routing ------------------------------------------------------------------------
    def moe(self, block, layer: int, x: mx.array) -> mx.array:
        """mlx-lm's sparse MoE block, recording the routing. x [B, T, H]."""
        plan, k = self.plan, block.top_k
        probs = mx.softmax(block.gate(x), axis=-1, precise=True)
        change = plan.intervention.get(layer)
        start = self._offsets[layer]
        n = x.shape[1]
        self._offsets[layer] = start + n
        if change is None:
            indices = mx.argpartition(probs, kth=-k, axis=-1)[..., -k:]
            weights = mx.take_along_axis(probs, indices, axis=-1)
        else:
            disabled = mx.array(change[0]) if change[0].any() else None
            scope = None
            if plan.positions is not None:
                scope = mx.array([[p in plan.positions for p in range(start, start + n)]])
            weights, indices = route(probs, k, disabled, change[1], scope)
        if block.norm_topk_prob:
            weights = weights / weights.sum(axis=-1, keepdims=True)
        y = block.switch_mlp(x, indices)
        y = (y * weights[..., None]).sum(axis=-2)
        shared_gate = mx.sigmoid(block.shared_expert_gate(x))
        y = y + shared_gate * block.shared_expert(x)
        if plan.routing:
            self._routing[layer].append((indices[0], weights[0], shared_gate[0, :, 0],
                                         probs[0] if plan.router_probs else None))
        return y

    # ---- DeltaNet -----------------------------------------------------------------------
    def _recurrence_wrapper(self, original):
        def wrapped(q, k, v, a, b, A_log, dt_bias, state=None, mask=None, **kwargs):
            out, final = original(q, k, v, a, b, A_log, dt_bias, state, mask, **kwargs)
            if self._layer is not None:
                self._record_deltanet(self._layer, q, k, v, a, b, A_log, dt_bias, state, final)
            return out, final
        return wrapped

    def _record_deltanet(self, layer, q, k, v, a, b, A_log, dt_bias, initial, final) -> None:
        """q [1, T, Hk, Dk] (unit norm, scaled by Dk^-0.5); k [1, T, Hk, Dk] (unit norm);
        v [1, T, Hv, Dv]; a, b [1, T, Hv]; states [1, Hv, Dv, Dk]."""
        plan = self.plan
        rec = self._dn[layer]
        t0 = self._dn_offsets[layer]
        n = q.shape[1]
        self._dn_offsets[layer] = t0 + n
        log_decay = -mx.exp(A_log.astype(mx.float32)) * nn.softplus(a[0].astype(mx.float32) + dt_bias)
        beta = mx.sigmoid(b[0]).astype(mx.float32)
        rec["log_decay"].append(log_decay)
        rec["beta"].append(beta)
        keep = layer in plan.state_layers
        k0 = k[0].astype(mx.float32)
        v0 = v[0].astype(mx.float32)
        if keep and plan.inputs:
            rec["queries"].append(q[0].astype(mx.float32) * (q.shape[-1] ** 0.5))
            rec["keys"].append(k0)
            rec["values"].append(v0)
        heads = mx.array(plan.state_heads) if keep else None
        wanted = plan.state_tokens or ()
        if n == 1:
            state = final[0]
            norms = mx.sqrt((state * state).sum(axis=(-2, -1)))[None]
            if keep and t0 in wanted:
                rec["states"].append(state[heads][None])
                rec["state_tokens"].append(t0)
        else:
            r = v.shape[2] // k.shape[2]
            k_v = mx.repeat(k0, r, axis=1)                         # [T, Hv, Dk]
            state = (mx.zeros((v.shape[2], v.shape[3], k.shape[3]), dtype=mx.float32)
                     if initial is None else initial[0].astype(mx.float32))
            decay = mx.exp(log_decay)
            rows = []
            for t in range(n):
                state = state * decay[t, :, None, None]
                kv = (state * k_v[t][:, None, :]).sum(axis=-1)    # [Hv, Dv]
                delta = (v0[t] - kv) * beta[t, :, None]
                state = state + delta[:, :, None] * k_v[t][:, None, :]
                if t == n - 1:
                    state = final[0]  # the model's own state enters the cache
                rows.append(mx.sqrt((state * state).sum(axis=(-2, -1))))
                if keep and t0 + t in wanted:
                    rec["states"].append(state[heads][None])
                    rec["state_tokens"].append(t0 + t)
                if t % 64 == 63:
                    mx.eval(rows, rec["states"])  # keep the graph short on long prompts
            norms = mx.stack(rows)
        rec["state_norm"].append(norms)
        self.pending += [log_decay, beta, norms]
        if keep:
            self._final[layer] = final[0]
            if rec["states"]:
                self.pending.append(rec["states"][-1])

    # ---- attention ----------------------------------------------------------------------
    def _attention_wrapper(self, original):
        def wrapped(queries, keys, values, cache, scale, mask, *args, **kwargs):
            out = original(queries, keys, values, cache, scale, mask, *args, **kwargs)
            t = queries.shape[2]
            if self._layer is not None and t > 1:
                rep = queries.shape[1] // keys.shape[1]
                kk = mx.repeat(keys, rep, axis=1) if rep > 1 else keys
                scores = (queries.astype(mx.float32) * scale) @ kk.astype(mx.float32).swapaxes(-1, -2)
                s = kk.shape[2]
                causal = mx.arange(s)[None, :] <= (mx.arange(t)[:, None] + s - t)
                scores = mx.where(causal, scores, mx.array(-float("inf"), dtype=mx.float32))
                self._attention[self._layer].append(mx.softmax(scores, axis=-1)[0])
            return out
        return wrapped

    # ---- results ------------------------------------------------------------------------
    def drain(self) -> list[mx.array]:
        pending, self.pending = self.pending, []
        return pending

    def collect(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        f32 = self.backend.to_numpy

        def cat(arrays):
            return f32(mx.concatenate(arrays, axis=0))

        if self.plan.routing and self._routing:
            layers = self.spec.moe_layers
            out["experts"] = np.stack([cat([c[0] for c in self._routing[i]]) for i in layers]).astype(np.int32)
            out["weights"] = np.stack([cat([c[1] for c in self._routing[i]]) for i in layers])
            out["shared_gate"] = np.stack([cat([c[2] for c in self._routing[i]]) for i in layers])
            if self.plan.router_probs:
                out["router_probs"] = np.stack([cat([c[3] for c in self._routing[i]]) for i in layers])
        if self.plan.deltanet and self._dn:
            lin, kept = self.spec.linear_layers, self.plan.state_layers
            for name in ("log_decay", "beta", "state_norm"):
                out[name] = np.stack([cat(self._dn[i][name]) for i in lin])
            out["final_state"] = np.stack([f32(self._final[i]) for i in kept]).swapaxes(-1, -2)
            if self.plan.inputs:
                for name in ("queries", "keys", "values"):
                    out[name] = np.stack([cat(self._dn[i][name]) for i in kept])
            if self.plan.state_tokens:
                out["states"] = np.stack([cat(self._dn[i]["states"]) for i in kept]).swapaxes(-1, -2)
                out["state_tokens"] = np.asarray(self._dn[kept[0]]["state_tokens"], dtype=np.int64)
        if self.plan.attention and self._attention:
            out["attention"] = np.stack([f32(self._attention[i][0]) for i in self.spec.full_attention_layers])
        return out


def _moe_call(self, x):
    return self._wb_probe.moe(self, self._wb_layer, x)


def _entering_call(self, *args, **kwargs):
    """Say which layer is running, then run the module as it is."""
    probe = self._wb_probe
    probe._layer = self._wb_layer
    try:
        return super(type(self), self).__call__(*args, **kwargs)
    finally:
        probe._layer = None
