"""The contract every backend implements. A backend knows its framework and nothing else.

Device values (logits, sampled tokens, caches) stay opaque to the code above; everything that
crosses this boundary towards the user is numpy or a Python scalar.
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, ContextManager

import numpy as np

from ..capture import Captured, ProbePlan
from ..sampling import SamplingParams
from ..spec import ModelSpec

# A sampler maps the last position's logits (device array [vocab]) to a token (device scalar). On a
# backend that speculates it also has `verify(logits [k + 1, vocab], drafts [k]) -> list[int]`: the
# accepted drafts and one token more (`speculative_sampler.VerifyingSampler`).
Sampler = Callable[[Any], Any]


class Probe(ABC):
    """One run's recording (and routing changes) as a `ProbePlan` asks. It is hooked into the model
    only for the forward calls of its own run (`installed()`, which always restores the model), so
    it never touches another generation; `collect()` returns what it recorded, as numpy."""

    @abstractmethod
    def installed(self) -> ContextManager[None]:
        """Hook into the model for one forward call."""

    @abstractmethod
    def collect(self) -> Captured: ...

    def drain(self) -> list:
        """Device arrays to evaluate with the next queued step (lazy frameworks); default none."""
        return []

    def rollback(self, drop: int) -> None:
        """Forget the last `drop` tokens the last forward read (a speculative verify's rejected drafts)."""
        raise NotImplementedError(f"{type(self).__name__} cannot forget rejected drafts")


class Speculation(ABC):
    """One generation's speculative decoding on a backend: its cache, the draft layer's own cache and
    the hidden states that layer has not read yet. The decode loop calls, under the model's lock:
    `prefill` once, then per step `draft`, `verify` and `accept`, and `close` at the end. Device
    values stay opaque, as in `Backend.forward`. A probe, when given, is hooked into the text
    model's forwards (never the draft layer's) and told which tokens to forget."""

    backend: Any
    probe: Probe | None = None

    def probed(self) -> ContextManager[None]:
        """The probe hooked in around one forward of the text model (nothing when not tracing)."""
        return self.probe.installed() if self.probe is not None else nullcontext()

    def forget(self, drop: int, hidden: Any) -> None:
        """After a verify: the probe forgets the `drop` rejected drafts, and what it recorded is
        queued with `hidden` (lazy frameworks)."""
        if self.probe is not None:
            self.probe.rollback(drop)
            self.backend.queue(hidden, self.probe)

    @abstractmethod
    def prefill(self, tokens: np.ndarray) -> Any:
        """Read the prompt ids `[T]` -> the last position's logits `[vocab]`."""

    @abstractmethod
    def draft(self, token: int, k: int) -> Any:
        """`k` draft ids `[k]` (device) to follow `token`, the last token produced (not yet read)."""

    @abstractmethod
    def verify(self, token: int, drafts: Any) -> Any:
        """Read [token, drafts...] -> logits `[k + 1, vocab]`: row i says what follows position i."""

    @abstractmethod
    def accept(self, n: int) -> None:
        """Keep `token` and the first `n` drafts; the cache ends exactly there, as if only they were read."""

    def close(self) -> None:
        """Leave the cache as plain decoding would (the prompt cache may keep it)."""


class Backend(ABC):
    name: str        # "torch" | "mlx"
    device: str      # e.g. "cpu", "cuda:0", "gpu" (Metal)
    dtype: str       # compute dtype of the weights, e.g. "float32", "bfloat16"
    spec: ModelSpec

    @classmethod
    @abstractmethod
    def load(cls, path: Path, spec: ModelSpec, device: str | None, dtype: str | None) -> "Backend":
        """Load the text model of the checkpoint folder `path`."""

    @property
    @abstractmethod
    def kernels(self) -> dict[str, str]:
        """Which implementation runs each part: gated_delta_rule, causal_conv1d, attention, moe."""

    @abstractmethod
    def logits(self, token_ids: np.ndarray) -> np.ndarray:
        """Full forward without a cache: ids `[T]` -> logits `[T, vocab]` float32."""

    # A faster decode step exists and is on (the torch backend's static cache); users switch it
    # off with `Model.fast_decode = False`, and a probe always runs the reference path.
    fast_decode: bool = False
    fast_decode_available: bool = False
    # What a probe can do on this backend (llama.cpp: no attention maps, no routing interventions).
    traces_attention: bool = True
    intervenes: bool = True
    speculates: bool = False  # whether `speculation` is implemented (it still needs an MTP layer)
    # Where the checkpoint's multi-token-prediction layer lies (`checkpoint.mtp_tensors`; {}: none,
    # or the backend cannot run it), set by `locate_mtp` at load; the layer is read on first use.
    _mtp_where: dict = {}
    _mtp_layer: Any = None

    def locate_mtp(self, folder: Path) -> None:
        """Find (not read) the checkpoint's MTP tensors, on backends that can draft with them."""
        from ..checkpoint import mtp_tensors
        if self.speculates:
            self._mtp_folder, self._mtp_where = Path(folder), mtp_tensors(folder, self.spec.mtp_num_hidden_layers)

    @property
    def has_mtp(self) -> bool:
        """Whether there is an MTP layer to draft with (known without reading it)."""
        return bool(self._mtp_where)

    @property
    def speculation_pays(self) -> bool:
        """Whether a verify of k + 1 tokens plus k draft steps costs little enough next to a plain
        step here that speculation is the better default (`Model.speculative`); measured per
        backend and device in scripts/bench_speculative.py."""
        return False

    @property
    def mtp(self) -> Any:
        """The MTP layer (None: none), loaded on first use: in a 35B-A3B release it is ~1.6 GB of
        experts that plain decoding never reads. Under the model's lock, so two threads load it once."""
        if self._mtp_layer is None and self._mtp_where:
            with self.lock:
                if self._mtp_layer is None:
                    self._mtp_layer = self._load_mtp(self._mtp_folder, self._mtp_where)
        return self._mtp_layer

    def _load_mtp(self, folder: Path, where: dict) -> Any:
        """Read the MTP layer `where` locates; a WorkbenchError when its tensors are incomplete."""
        raise NotImplementedError(f"the {self.name} backend cannot run an MTP layer")

    @abstractmethod
    def new_cache(self, capacity: int | None = None, fast: bool = True) -> Any:
        """An empty cache: KV for full-attention layers, conv + recurrent state for DeltaNet.
        `capacity`: the most tokens it will hold, when known (a static cache needs it); `fast`:
        whether the fast decode step may serve it (False while probing)."""

    def speculation(self, cache: Any, probe: Probe | None = None) -> Speculation:
        """Speculative decoding over `cache` (made with `new_cache(fast=False)`) with the MTP layer;
        `probe` (when tracing) records the text model's forwards, the rejected drafts taken out."""
        raise NotImplementedError(f"the {self.name} backend cannot decode speculatively yet")

    def can_snapshot(self, cache: Any) -> bool:
        """Whether `snapshot` can keep this cache (the prompt cache keeps only those)."""
        return False

    def snapshot(self, cache: Any, last_use: bool = False) -> Any:
        """What the prompt cache stores of `cache`: an independent copy nothing extends. `last_use`:
        the caller is done with `cache`, so it may become the snapshot itself (no copy)."""
        raise NotImplementedError(f"the {self.name} backend cannot keep a cache")

    def restore(self, snapshot: Any, capacity: int | None = None) -> Any:
        """A new cache holding what `snapshot` holds, to extend (up to `capacity` tokens in all, when
        known); the snapshot itself is left as it was."""
        raise NotImplementedError(f"the {self.name} backend cannot restore a cache")

    def snapshot_bytes(self, snapshot: Any) -> int:
        """Bytes a snapshot holds (the prompt cache's budget)."""
        return 0

    def decode_path(self, cache: Any) -> str:
        """In words, what runs a decode step on `cache` (Stats and reports show it)."""
        return "cached forward"

    @abstractmethod
    def forward(self, tokens: Any, cache: Any) -> Any:
        """Run `tokens` (numpy ids `[T]`, or a token the sampler returned) through the model,
        extending `cache`; return the last position's logits as a device array `[vocab]`."""

    @property
    def lock(self) -> threading.RLock:
        """Held for every call into the model, so generations in several threads interleave step by
        step (each on its own cache) and never run the model at the same moment."""
        lock = self.__dict__.get("_lock")
        if lock is None:  # dict.setdefault is atomic: two threads asking first still share one lock
            lock = self.__dict__.setdefault("_lock", threading.RLock())
        return lock

    def step(self, tokens: Any, cache: Any, probe: Probe | None = None) -> Any:
        """`forward` under the model's lock, with `probe` hooked in for this call only."""
        with self.lock, (probe.installed() if probe is not None else nullcontext()):
            return self.forward(tokens, cache)

    @abstractmethod
    def probe(self, plan: ProbePlan) -> Probe:
        """A probe that records (and intervenes) as `plan` says while hooked in (`installed()`)."""

    @abstractmethod
    def make_sampler(self, params: SamplingParams) -> Sampler:
        """A stateful on-device sampler (its own seeded generator and presence mask)."""

    def warm_up(self) -> None:
        """One prefill and one cached step, so one-time costs (kernel compilation, lazy
        initialisation, first-call warnings) are paid at load, not in the first generation."""
        cache = self.new_cache()
        self.forward(np.zeros(2, dtype=np.int64), cache)
        self.to_numpy(self.forward(np.zeros(1, dtype=np.int64), cache))
        self.synchronize()

    def weight_bytes_per_token(self) -> float | None:
        """Bytes of stored weights one decoded token reads, where the backend knows them better than
        parameters x dtype (quantized files); None: computed from the spec."""
        return None

    def hardware_name(self) -> str:
        """What the device is called by its driver (for reports and bandwidth lookups)."""
        import platform
        return platform.processor() or platform.machine() or "cpu"

    def queue(self, value: Any, probe: Probe | None = None) -> None:
        """Start computing `value` (and what `probe` recorded with it) without waiting
        (asynchronous devices); default: nothing."""

    @abstractmethod
    def to_numpy(self, value: Any) -> np.ndarray:
        """A device array as numpy (float arrays as float32)."""

    @abstractmethod
    def to_int(self, token: Any) -> int:
        """Read a sampled token back to the host (waits for it)."""

    @abstractmethod
    def synchronize(self) -> None:
        """Wait until all queued device work is done (before every clock read in benchmarks)."""

    @abstractmethod
    def reset_peak_memory(self) -> None: ...

    @abstractmethod
    def peak_memory(self) -> int | None:
        """Peak device memory in bytes since the last reset; None where the device can't say."""


def leaves(value: Any, kind: type, depth: int = 0):
    """The `kind` arrays a cache object holds (its layers' keys, values, conv and recurrent states),
    found through lists, tuples and object attributes a few levels deep."""
    if isinstance(value, kind):
        yield value
    elif depth < 4 and isinstance(value, (list, tuple)):
        for v in value:
            yield from leaves(v, kind, depth + 1)
    elif depth < 4 and hasattr(value, "__dict__"):
        for v in vars(value).values():
            yield from leaves(v, kind, depth + 1)
