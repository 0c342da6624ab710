"""What a `DeltaNetTrace` says about the Gated DeltaNet layers: how fast each head forgets, how
hard it writes, how full its state gets, and which earlier tokens its readout draws on.

numpy only. Equations: `../shared/notes/gated-deltanet-math.md` in the repo's docs, and
`workbench.reference.gated_delta_rule`.
"""
from __future__ import annotations

import numpy as np

from ..errors import WorkbenchError
from ..records import DeltaNetTrace


def half_life(decay: np.ndarray) -> np.ndarray:
    """Tokens until a write has decayed to half: ln 0.5 / ln(decay), elementwise (decay in (0, 1))."""
    d = np.clip(np.asarray(decay, dtype=np.float64), 1e-30, 1 - 1e-12)
    return np.log(0.5) / np.log(d)


def head_half_lives(trace: DeltaNetTrace) -> np.ndarray:
    """[lin_layer, Hv] median half-life over the tokens (in tokens)."""
    return np.median(half_life(trace.decay), axis=1)


def longest_memory(trace: DeltaNetTrace) -> tuple[int, int]:
    """(model layer, value head) with the longest median half-life: the head whose state holds
    the most, the one to look at when teaching what the state keeps."""
    t = head_half_lives(trace)
    li, head = np.unravel_index(int(np.argmax(t)), t.shape)
    return int(trace.layers[li]), int(head)


def readable_tokens(t: np.ndarray) -> np.ndarray:
    """Half-lives (in tokens) as short text: '<0.1', '0.7', '12', '3.4k'."""
    t = np.asarray(t, dtype=np.float64)
    out = np.where(t < 0.1, "<0.1", np.where(t < 10, np.char.mod("%.1f", np.round(t, 1)),
                                             np.where(t < 1000, np.char.mod("%.0f", np.round(t)),
                                                      np.char.add(np.char.mod("%.1f", t / 1000), "k"))))
    return out


def effective_rank(states: np.ndarray) -> np.ndarray:
    """exp(entropy of the normalised singular values) of each `[..., Dk, Dv]` matrix: 1 for a
    rank-one state, min(Dk, Dv) when all directions are used equally. 0 for a zero state."""
    s = np.linalg.svd(np.asarray(states, dtype=np.float64), compute_uv=False)
    total = s.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(total > 0, s / total, 0.0)
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
    return np.where(total[..., 0] > 0, np.exp(h), 0.0)


def rank_over_tokens(trace: DeltaNetTrace, layer: int) -> np.ndarray:
    """[state_token, state_head] effective rank of the kept states of `layer`."""
    if trace.states is None:
        raise WorkbenchError("effective rank needs full states: capture with "
                             "DeltaNetCapture(states='all') (or a list of tokens).")
    return effective_rank(trace.states[trace.state_row(layer)])


def effective_attention(trace: DeltaNetTrace, layer: int, head: int) -> np.ndarray:
    """[T, T] exact weights a[t, s] with o_t = sum_s a[t, s] v_s (lower triangular).

    a[t, s] = beta_s * q_t^T A(t<-s) k_s, A(t<-s) = M_t ... M_{s+1}, M_r = alpha_r (I - beta_r k_r k_r^T),
    computed backwards from each t (M_r is symmetric): O(T^2 Dk). Needs the recurrence inputs
    (DeltaNetCapture(inputs=True)); assumes the run started from an empty state."""
    if trace.keys is None:
        raise WorkbenchError("effective attention needs the recurrence inputs: capture with "
                             "DeltaNetCapture(inputs=True) on a short prompt.")
    li, si = trace.row(layer), trace.state_row(layer)
    hv = trace.num_heads
    if not 0 <= head < hv:
        raise WorkbenchError(f"head {head} is out of range (0..{hv - 1}).")
    r = hv // trace.keys.shape[2]
    k = trace.keys[si, :, head // r].astype(np.float64)                     # [T, Dk]
    q = trace.queries[si, :, head // r].astype(np.float64) / np.sqrt(k.shape[-1])
    alpha = trace.decay[li, :, head].astype(np.float64)
    beta = trace.beta[li, :, head].astype(np.float64)
    n = len(k)
    out = np.zeros((n, n))
    for t in range(n):
        w = q[t].copy()
        for s in range(t, -1, -1):
            out[t, s] = beta[s] * (w @ k[s])
            w = alpha[s] * (w - beta[s] * k[s] * (k[s] @ w))   # w <- M_s w
    return out
