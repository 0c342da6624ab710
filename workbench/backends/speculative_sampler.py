"""The acceptance rule of speculative decoding, shared by the backends' samplers.

A backend's sampler subclasses `VerifyingSampler` and supplies a few array operations in its own
framework; `verify` then judges a step's drafts the same way on every backend.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..sampling import SamplingParams


class VerifyingSampler(ABC):
    """A stateful sampler (its own seeded generator and presence mask) that also judges drafts."""

    params: SamplingParams

    @abstractmethod
    def __call__(self, logits: Any) -> Any:
        """logits `[vocab]` -> the next token (a device scalar)."""

    def verify(self, logits: Any, drafts: Any) -> list[int]:
        """logits `[k + 1, vocab]` of a verify forward, drafts `[k]` -> the tokens it yields `[n + 1]`:
        the n drafts accepted, then one more (the correction at the first rejection, or the token
        after the last draft). Greedy: a draft is accepted while it is the argmax. Sampling:
        speculative sampling with a draft that is the draft head's argmax (a one-hot proposal q):
        accept d with probability p(d), else draw from p with d removed, renormalised, which
        leaves every token's distribution exactly p (Leviathan et al. 2023; vLLM's rejection
        sampler with greedy drafts). p is the request's own distribution (temperature, top-k,
        top-p, min-p, presence penalty over the tokens before it)."""
        proposed = self._ids(drafts)
        if self.params.greedy and not self.params.presence_penalty:  # every row at once: one read
            best = self._row_argmaxes(logits)
            n = next((i for i, (b, d) in enumerate(zip(best, proposed)) if b != d), len(proposed))
            return best[:n + 1]
        out = []
        for i in range(len(proposed) + 1):
            row = self._adjusted(logits[i])
            d = proposed[i] if i < len(proposed) else None
            if self.params.greedy:
                token = self._argmax(row)
            else:
                p = self._distribution(row)
                if d is not None and self._uniform() < self._probability(p, d):
                    token = d
                else:
                    token = self._draw(p, without=d)
            self._mark(token)
            out.append(token)
            if token != d:
                break
        return out

    # ---- what a framework supplies ------------------------------------------------------
    @abstractmethod
    def _ids(self, drafts: Any) -> list[int]: ...

    @abstractmethod
    def _row_argmaxes(self, logits: Any) -> list[int]:
        """The argmax of each row of `[k + 1, vocab]` logits, read in one transfer."""

    @abstractmethod
    def _adjusted(self, row: Any) -> Any:
        """One row of logits as float32, less the presence penalty."""

    @abstractmethod
    def _argmax(self, row: Any) -> int: ...

    @abstractmethod
    def _distribution(self, row: Any) -> Any:
        """The request's distribution over the vocabulary (temperature, top-k, top-p, min-p)."""

    @abstractmethod
    def _probability(self, p: Any, token: int) -> float: ...

    @abstractmethod
    def _uniform(self) -> float:
        """One draw in [0, 1) from the sampler's own generator."""

    @abstractmethod
    def _draw(self, p: Any, without: int | None) -> int:
        """One draw from `p`, with `without` (when given) removed and the rest renormalised."""

    @abstractmethod
    def _mark(self, token: Any) -> None:
        """Note a produced token for the presence penalty."""
