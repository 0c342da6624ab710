"""How the next token is chosen: `SamplingParams`, validated on construction (a leaf module: the
backends import it)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import WorkbenchError


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. `temperature=0` is greedy; top_k=0, top_p=1, min_p=0 are off.

    Order on the device: presence penalty (on tokens generated so far, as vLLM does), temperature,
    top-k, top-p (nucleus), min-p, then a draw from a generator seeded with `seed`.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None

    def __post_init__(self):
        def bad(name, value, rule):
            raise WorkbenchError(f"{name}={value!r} is invalid: {rule}.")

        if not _finite(self.temperature) or self.temperature < 0:
            bad("temperature", self.temperature, "use 0 for greedy decoding or a positive number like 0.7")
        if not _finite(self.top_p) or not 0 < self.top_p <= 1:
            bad("top_p", self.top_p, "it must be in (0, 1]; 1 turns nucleus sampling off")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
            bad("top_k", self.top_k, "it must be a whole number >= 0; 0 turns it off")
        if not _finite(self.min_p) or not 0 <= self.min_p < 1:
            bad("min_p", self.min_p, "it must be in [0, 1); 0 turns it off")
        if not _finite(self.presence_penalty) or not -2 <= self.presence_penalty <= 2:
            bad("presence_penalty", self.presence_penalty, "it must be in [-2, 2] (1.5 is Qwen's advice)")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))
                                      or self.seed < 0):
            bad("seed", self.seed, "it must be a non-negative int or None")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _finite(x) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, bool) and math.isfinite(x)
