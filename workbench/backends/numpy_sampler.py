"""The workbench's sampler in numpy, for backends whose logits arrive on the host (llama.cpp).

Same order and rules as the torch and MLX samplers: presence penalty on tokens generated so far,
temperature, top-k, top-p (drop a token once the tokens ranked above it reach top_p), min-p, then
one draw from a generator seeded with `seed`.
"""
from __future__ import annotations

import os

import numpy as np

from ..sampling import SamplingParams


def make_sampler(params: SamplingParams, vocab: int):
    """A stateful sampler: logits [vocab] float32 numpy (read, never kept or changed) -> token id."""
    seen = np.zeros(vocab, dtype=np.float32) if params.presence_penalty else None
    rng = None if params.greedy else np.random.default_rng(
        params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little"))

    def sample(logits: np.ndarray) -> int:
        logits = logits[:vocab]
        if seen is not None:
            logits = logits - params.presence_penalty * seen
        token = int(logits.argmax()) if params.greedy else draw(logits, params, rng)
        if seen is not None:
            seen[token] = 1.0
        return token

    return sample


def draw(logits: np.ndarray, p: SamplingParams, rng: np.random.Generator) -> int:
    """Temperature, top-k, top-p, min-p, then one draw. logits: [vocab] float32."""
    logits = logits.astype(np.float64) / p.temperature
    if p.top_k:
        kth = np.partition(logits, -min(p.top_k, logits.size))[-min(p.top_k, logits.size)]
        logits = np.where(logits < kth, -np.inf, logits)
    if p.top_p < 1.0:
        order = np.argsort(-logits, kind="stable")
        probs = _softmax(logits[order])
        drop = (np.cumsum(probs) - probs) >= p.top_p
        logits[order[drop]] = -np.inf
    probs = _softmax(logits)
    if p.min_p:
        probs = np.where(probs < p.min_p * probs.max(), 0.0, probs)
    probs = probs / probs.sum()
    return int(rng.choice(probs.size, p=probs))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()
