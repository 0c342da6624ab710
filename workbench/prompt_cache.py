"""Continuing from the caches of earlier generations, so a chat turn or a tool round prefills only
what is new.

A hybrid model's cache cannot be cut back like a transformer's KV cache: the Gated DeltaNet layers
keep one recurrent state (and conv state) for everything read so far, so a cache is reusable only
exactly at the point it was taken. The store therefore keeps caches at the points a chat loop
returns to, each with the token ids it holds:

- **turn start**: the prompt up to its last `<|im_start|>` (the header of the reply being written).
  The Qwen3.5 chat template renders an earlier reply differently once the conversation moves on
  (its thinking block, even the empty one of thinking-off, is dropped from history), so the next
  turn's prompt matches the last one only up to there. The prefill is split at that point and a
  copy taken; the next turn prefills the last reply and the new message only.
- **generation end**: the whole sequence the generation forwarded (prompt and reply). A tool round
  continues the same turn, where the template keeps the reply as written, so the next prompt
  usually starts with all of it.

A request looks for the longest entry whose ids begin its own (at least one token must still be
read to give the next token's logits), continues from a *copy* of it (an entry is never extended,
so two generations can start from the same one), and stores its own points afterwards. The store is
bounded (entries and bytes, oldest dropped first) and lives on the model (released with it).
Runs with a probe (traces, interventions) neither use nor fill it: they prefill everything, so a
trace records every token and an intervened cache never reaches another run.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import WorkbenchError

DEFAULT_ENTRIES = 8  # two per round: a turn of three tool rounds still finds its first turn start
DEFAULT_BYTES = 1 << 30


@dataclass
class _Entry:
    ids: np.ndarray     # [tokens] int64: what the cache holds
    cache: Any          # the backend's cache, never extended once stored
    nbytes: int
    kind: str           # "turn start" | "generation end"
    used: int           # a clock tick: the least recently used entry goes first


class PromptCache:
    """The caches a model keeps for later requests (see the module docstring).

    `enabled` switches reuse off and on; `max_entries` / `max_bytes` bound what is kept;
    `clear()` drops everything; `hits` and `reused_tokens` count what it saved."""

    def __init__(self, max_entries: int = DEFAULT_ENTRIES, max_bytes: int = DEFAULT_BYTES):
        for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise WorkbenchError(f"{name}={value!r} is invalid: give a whole number >= 0 (0 keeps nothing).")
        self.max_entries, self.max_bytes = int(max_entries), int(max_bytes)
        self.enabled = True
        self.hits = self.reused_tokens = 0
        self._entries: list[_Entry] = []
        self._clock = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries)

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return (f"PromptCache({state}: {len(self)} of {self.max_entries} entries, {self.nbytes / 2**20:,.1f} of "
                f"{self.max_bytes / 2**20:,.0f} MiB; {self.hits} hits, {self.reused_tokens} tokens reused)")

    def entries(self) -> list[tuple[str, int, int]]:
        """(kind, tokens, bytes) of each entry, most recently used first."""
        with self._lock:
            return [(e.kind, len(e.ids), e.nbytes) for e in sorted(self._entries, key=lambda e: -e.used)]

    def clear(self) -> None:
        with self._lock:
            self._entries = []

    def lookup(self, ids: np.ndarray) -> tuple[Any, int]:
        """(the stored cache holding the longest proper prefix of `ids`, its length), or (None, 0).
        The caller continues from a copy of the cache, never the cache itself."""
        if not self.enabled:
            return None, 0
        with self._lock:
            best = None
            for e in self._entries:
                n = len(e.ids)
                if n < len(ids) and (best is None or n > len(best.ids)) and np.array_equal(e.ids, ids[:n]):
                    best = e
            if best is None:
                return None, 0
            self._clock += 1
            best.used = self._clock
            self.hits += 1
            self.reused_tokens += len(best.ids)
            return best.cache, len(best.ids)

    def put(self, ids: np.ndarray, cache: Any, nbytes: int, kind: str) -> None:
        """Keep `cache` (holding exactly `ids`) unless it alone exceeds the budget; drop the least
        recently used entries past the bounds. An entry with the same ids is replaced."""
        if not self.enabled or not len(ids) or nbytes > self.max_bytes or not self.max_entries:
            return
        with self._lock:
            self._clock += 1
            self._entries = [e for e in self._entries if not np.array_equal(e.ids, ids)]
            self._entries.append(_Entry(np.array(ids, dtype=np.int64), cache, int(nbytes), kind, self._clock))
            self._entries.sort(key=lambda e: e.used)
            while len(self._entries) > self.max_entries or sum(e.nbytes for e in self._entries) > self.max_bytes:
                self._entries.pop(0)


def turn_start(ids: np.ndarray, im_start: int | None, reused: int) -> int | None:
    """Where the prompt's last `<|im_start|>` is (the reply's header), when it lies past what was
    reused and is not the very start: the point a turn-start entry is taken."""
    if im_start is None:
        return None
    at = np.flatnonzero(ids == im_start)
    if not len(at) or at[-1] <= reused:
        return None
    return int(at[-1])
