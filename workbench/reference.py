"""Small numpy references of what the models compute, to check captures against (and to teach).

Kept deliberately plain: one token at a time, the equations of the Qwen3.5 Gated DeltaNet layer
and of its top-k router as written in the model cards and the transformers code.
"""
from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """x / sqrt(sum(x^2) + eps) over the last axis (as fla and transformers normalise q, k)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt((x * x).sum(-1, keepdims=True) + eps)


def delta_rule_step(state, key, value, decay, beta, einsum):
    """One token of the gated delta rule, for numpy, torch or MLX arrays alike (the probes replay
    prompt states with it on the device; `einsum` is the framework's).

    state [Hv, Dk, Dv]; key [Hv, Dk] (L2-normalised, repeated per value head); value [Hv, Dv];
    decay (exp g), beta [Hv]. Returns the state after the token, [Hv, Dk, Dv].
    """
    state = state * decay[:, None, None]
    read = einsum("hkv,hk->hv", state, key)                      # what the state returns for k_t
    return state + einsum("hk,hv->hkv", key, beta[:, None] * (value - read))


def gated_delta_rule(queries: np.ndarray, keys: np.ndarray, values: np.ndarray, decay: np.ndarray,
                     beta: np.ndarray, initial_state: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The gated delta rule, token by token, in float64.

    queries, keys [T, Hk, Dk] (L2-normalised), values [T, Hv, Dv], decay (exp g) and beta [T, Hv];
    each key head serves Hv/Hk consecutive value heads. initial_state [Hv, Dk, Dv] or None.
    S_t = a_t S_{t-1} + k_t (b_t (v_t - a_t S_{t-1}^T k_t))^T ;  o_t = S_t^T q_t / sqrt(Dk).
    Returns (states [T, Hv, Dk, Dv] after each token, outputs [T, Hv, Dv]).
    """
    t_len, hk, dk = keys.shape
    hv, dv = values.shape[1:]
    r = hv // hk
    q = np.repeat(np.asarray(queries, np.float64), r, axis=1) / np.sqrt(dk)
    k = np.repeat(np.asarray(keys, np.float64), r, axis=1)
    v = np.asarray(values, np.float64)
    state = np.zeros((hv, dk, dv)) if initial_state is None else np.asarray(initial_state, np.float64)
    states, outputs = np.empty((t_len, hv, dk, dv)), np.empty((t_len, hv, dv))
    for t in range(t_len):
        state = delta_rule_step(state, k[t], v[t], np.asarray(decay[t]), np.asarray(beta[t]), np.einsum)
        states[t] = state
        outputs[t] = np.einsum("hkv,hk->hv", state, q[t])
    return states, outputs


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def top_k_routing(router_logits: np.ndarray, k: int, normalize: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Qwen3.5's router: softmax over all experts, keep the k largest, renormalise them.

    router_logits [..., E] -> (experts [..., k] sorted by weight, weights [..., k])."""
    probs = softmax(router_logits)
    experts = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    weights = np.take_along_axis(probs, experts, -1)
    if normalize:
        weights = weights / weights.sum(-1, keepdims=True)
    return experts, weights
