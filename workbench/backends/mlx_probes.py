"""How the MLX backend records: mlx-lm's Qwen3.5 / Qwen3-Next modules instrumented, and the MLX
maths of routing and of the decay. The bookkeeping is the shared `Recorder`'s.

MLX modules have no hooks, so while a probe is installed each instrumented module's class is
swapped for a subclass that records (and swapped back after the call):
- MoE blocks run `moe_forward`, the computation of mlx-lm's `Qwen3NextSparseMoeBlock` (a test
  checks it is bit-identical to upstream's), keeping the router's top-k indices, weights, softmax
  and shared-expert gate (device arrays already in the step's graph). An intervention changes the
  top-k choice.
- GatedDeltaNet layers: `gated_delta_update` (which mlx-lm calls with L2-normalised q, k) is
  wrapped. MLX keeps states as [Hv, Dv, Dk]; they are handed to the recorder transposed, in
  torch's [Hv, Dk, Dv].
- Attention: `scaled_dot_product_attention` is wrapped and the probabilities recomputed from the
  same queries and keys (MLX's fused kernel does not return them).
Per-token summaries are handed to the backend's `queue`, so they are evaluated with the step.
"""
from __future__ import annotations

import importlib

import mlx.core as mx
import mlx.nn as nn

from ..capture import ProbePlan
from .recorder import HookedProbe

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


def moe_forward(block, x: mx.array, choose=None) -> tuple[mx.array, tuple]:
    """mlx-lm's sparse MoE block (Qwen3.5 / Qwen3-Next), x [B, T, H] -> (y [B, T, H], routing).

    `choose(probs)` -> (weights, indices) replaces the top-k choice (an intervention); routing is
    (indices, weights as the experts use them, shared gate [B, T, 1], probs [B, T, E])."""
    probs = mx.softmax(block.gate(x), axis=-1, precise=True)
    k = block.top_k
    if choose is None:
        indices = mx.argpartition(probs, kth=-k, axis=-1)[..., -k:]
        weights = mx.take_along_axis(probs, indices, axis=-1)
    else:
        weights, indices = choose(probs)
    if block.norm_topk_prob:
        weights = weights / weights.sum(axis=-1, keepdims=True)
    y = block.switch_mlp(x, indices)
    y = (y * weights[..., None]).sum(axis=-2)
    shared_gate = mx.sigmoid(block.shared_expert_gate(x))
    y = y + shared_gate * block.shared_expert(x)
    return y, (indices, weights, shared_gate, probs)


class MLXOps:
    """The array operations the recorder needs, in MLX."""

    lazy = True

    def to_numpy(self, x):
        import numpy as np
        return np.array(x.astype(mx.float32) if mx.issubdtype(x.dtype, mx.floating) else x)

    def zeros(self, shape):
        return mx.zeros(tuple(shape), dtype=mx.float32)

    exp = staticmethod(mx.exp)
    einsum = staticmethod(mx.einsum)

    def stack(self, arrays):
        return mx.stack(arrays)

    def repeat_heads(self, x, r):
        return mx.repeat(x, r, axis=1) if r > 1 else x

    def frobenius(self, state):
        return mx.sqrt((state * state).sum(axis=(-2, -1)))

    def take(self, x, indices):
        return x[mx.array(list(indices))]

    def flush(self, arrays) -> None:
        mx.eval(arrays)


_SUBCLASSES: dict[tuple[type, str], type] = {}


class MLXProbe(HookedProbe):
    def __init__(self, backend, plan: ProbePlan):
        super().__init__(backend, plan, MLXOps())
        self._disabled = {layer: (mx.array(d) if d.any() else None, f)
                          for layer, (d, f) in plan.intervention.items()}

    def hook_in(self, undo: list) -> None:
        layers = self.backend.model.layers
        plan, spec = self.plan, self.spec
        if plan.routing or plan.intervention:
            for i in spec.moe_layers:
                self._swap(layers[i].mlp, i, "moe", undo)
        if plan.deltanet:
            for i in spec.linear_layers:
                self._swap(layers[i].linear_attn, i, "enter", undo)
            self._patch("gated_delta_update", self._recurrence_wrapper, undo)
        if plan.attention:
            for i in spec.full_attention_layers:
                self._swap(layers[i].self_attn, i, "enter", undo)
            self._patch("scaled_dot_product_attention", self._attention_wrapper, undo)

    def _swap(self, module, layer: int, kind: str, undo: list) -> None:
        cls = type(module)
        sub = _SUBCLASSES.get((cls, kind))
        if sub is None:
            sub = type(f"Probed{cls.__name__}", (cls,), {"__call__": _moe_call if kind == "moe" else _entering_call})
            _SUBCLASSES[cls, kind] = sub
        module.__class__ = sub
        # Plain attributes (not module children): found by __call__, invisible to parameters().
        object.__setattr__(module, "_wb_probe", (self, layer))

        def restore(module=module, cls=cls):
            module.__class__ = cls
            object.__delattr__(module, "_wb_probe")

        undo.append(restore)

    def _patch(self, name: str, make_wrapper, undo: list) -> None:
        for mod_name in _MODULES:
            module = importlib.import_module(mod_name)
            original = getattr(module, name, None)
            if original is not None:
                setattr(module, name, make_wrapper(original))
                undo.append(lambda m=module, n=name, o=original: setattr(m, n, o))

    # ---- routing ------------------------------------------------------------------------
    def moe(self, block, layer: int, x: mx.array) -> mx.array:
        """The MoE block with this probe's intervention and recording. x [B, T, H]."""
        rec, n = self.recorder, x.shape[1]
        start = rec.advance("routing", layer, n)
        choose = None
        change = self._disabled.get(layer)
        if change is not None:
            scope = rec.scope(start, n)
            scope = None if scope is None else mx.array(scope)[None]
            choose = lambda probs: route(probs, block.top_k, change[0], change[1], scope)  # noqa: E731
        y, (indices, weights, shared_gate, probs) = moe_forward(block, x, choose)
        rec.routing(layer, indices[0], weights[0], shared_gate[0, :, 0], probs[0])
        return y

    # ---- DeltaNet -----------------------------------------------------------------------
    def _recurrence_wrapper(self, original):
        def wrapped(q, k, v, a, b, A_log, dt_bias, state=None, mask=None, **kwargs):
            out, final = original(q, k, v, a, b, A_log, dt_bias, state, mask, **kwargs)
            if self.mine():
                # q [1, T, Hk, Dk] (unit norm, scaled by Dk^-0.5); k [1, T, Hk, Dk] (unit norm);
                # v [1, T, Hv, Dv]; a, b [1, T, Hv]; states [1, Hv, Dv, Dk]
                f32 = mx.float32
                log_decay = -mx.exp(A_log.astype(f32)) * nn.softplus(a[0].astype(f32) + dt_bias)
                self.recorder.deltanet(
                    self.recorder.layer, log_decay, mx.sigmoid(b[0]).astype(f32),
                    q[0].astype(f32) * (q.shape[-1] ** 0.5), k[0].astype(f32), v[0].astype(f32),
                    None if state is None else state[0].astype(f32).swapaxes(-1, -2),
                    final[0].astype(f32).swapaxes(-1, -2))
            return out, final
        return wrapped

    # ---- attention ----------------------------------------------------------------------
    def _attention_wrapper(self, original):
        def wrapped(queries, keys, values, cache, scale, mask, *args, **kwargs):
            out = original(queries, keys, values, cache, scale, mask, *args, **kwargs)
            t = queries.shape[2]
            if self.mine() and t > 1:
                rep = queries.shape[1] // keys.shape[1]
                kk = mx.repeat(keys, rep, axis=1) if rep > 1 else keys
                scores = (queries.astype(mx.float32) * scale) @ kk.astype(mx.float32).swapaxes(-1, -2)
                s = kk.shape[2]
                causal = mx.arange(s)[None, :] <= (mx.arange(t)[:, None] + s - t)
                scores = mx.where(causal, scores, mx.array(-float("inf"), dtype=mx.float32))
                self.recorder.attention(self.recorder.layer, mx.softmax(scores, axis=-1)[0])
            return out
        return wrapped


def _moe_call(self, x):
    probe, layer = self._wb_probe
    return probe.moe(self, layer, x)


def _entering_call(self, *args, **kwargs):
    """Say which layer is running, then run the module as it is."""
    probe, layer = self._wb_probe
    probe.recorder.layer = layer
    try:
        return super(type(self), self).__call__(*args, **kwargs)
    finally:
        probe.recorder.layer = None
