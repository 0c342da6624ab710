"""The bookkeeping every backend's probe shares, framework-free.

A backend's probe knows how to hook into its framework's modules and computes what only its
framework can (the router softmax, an intervention's top-k, the decay from the layer's own
parameters); it hands the results, still device arrays, to a `Recorder`, which keeps them per layer,
knows which tokens and heads the plan keeps, replays prompt states token by token where a prefill
kernel returns only the last one, and converts everything to numpy once, at the end (`collect`).

`probe_scope` is how a probe is installed: for one forward call at a time, under one process-wide
lock, and always removed, so a probe is never seen by another generation (from this thread or any
other, paused or running) and never outlives the call that installed it.
"""
from __future__ import annotations

import threading
from abc import abstractmethod
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable, ContextManager, Iterator, Protocol, Sequence

import numpy as np

from ..capture import Captured, ProbePlan
from ..reference import delta_rule_step
from ..spec import ModelSpec
from .base import Probe

# Probes patch module-level functions shared by every model of an architecture: installing, running
# and removing one is serialised across all models, so two probes never nest their patches.
_PROBE_LOCK = threading.RLock()


@contextmanager
def probe_scope(install: Callable[[], list[Callable[[], None]]]) -> Iterator[None]:
    """Run `install` (which returns the undo actions of what it did) and undo it all on exit, in
    reverse order, whatever happens (an exception, an interrupt, a generator closed half-way)."""
    with _PROBE_LOCK:
        undo: list[Callable[[], None]] = []
        try:
            undo = install()
            yield
        finally:
            for action in reversed(undo):
                action()


class ArrayOps(Protocol):
    """What the recorder needs of a framework (the backend's probe module supplies it)."""

    def to_numpy(self, array: Any) -> np.ndarray: ...                 # floats as float32
    def zeros(self, shape: Sequence[int]) -> Any: ...                 # float32
    def exp(self, x: Any) -> Any: ...
    def einsum(self, spec: str, *arrays: Any) -> Any: ...
    def repeat_heads(self, x: Any, r: int) -> Any: ...                # [T, H, D] -> [T, H*r, D]
    def frobenius(self, state: Any) -> Any: ...                       # [..., Dk, Dv] -> [...]
    def stack(self, arrays: list) -> Any: ...
    def take(self, x: Any, indices: Sequence[int]) -> Any: ...        # rows of x
    def flush(self, arrays: list) -> None: ...                        # evaluate now (lazy frameworks)
    lazy: bool                                                        # computes only when asked (MLX)


# A call of at most this many tokens keeps its per-position states for `Recorder.rollback` (a
# speculative verify reads the last token and up to 4 drafts).
ROLLBACK_TOKENS = 8


class Recorder:
    """One probed run's records, per layer, in torch layout ([Hv, Dk, Dv] states)."""

    def __init__(self, plan: ProbePlan, spec: ModelSpec, ops: ArrayOps):
        self.plan, self.spec, self.ops = plan, spec, ops
        self.layer: int | None = None       # the DeltaNet / attention layer running now (hooks set it)
        # Per-token summaries to evaluate with the next step; only a lazy framework needs them (an
        # eager one has computed them already, and the list would only grow).
        self.pending: list = []
        self._seen: dict[tuple[str, int], int] = defaultdict(int)
        self._rows: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
        self._final: dict[int, Any] = {}
        self._state_tokens: dict[int, list[int]] = defaultdict(list)
        # States after each position of the last short call (a speculative verify), per kept layer,
        # so that `rollback` can put back the one where the accepted tokens end.
        self._recent: dict[int, list] = {}

    # ---- positions ------------------------------------------------------------------------
    def advance(self, what: str, layer: int, n: int) -> int:
        """The position of the first of `n` tokens now running through `layer` (and count them)."""
        start = self._seen[what, layer]
        self._seen[what, layer] = start + n
        return start

    def scope(self, start: int, n: int) -> np.ndarray | None:
        """Which of positions start..start+n-1 an intervention applies to ([n] bool), None for all."""
        if self.plan.positions is None:
            return None
        return np.array([p in self.plan.positions for p in range(start, start + n)], dtype=bool)

    # ---- routing --------------------------------------------------------------------------
    def routing(self, layer: int, indices: Any, weights: Any, shared_gate: Any, probs: Any = None) -> None:
        """indices, weights [T, k]; shared_gate [T] (after the sigmoid); probs [T, E] or None."""
        if not self.plan.routing:
            return
        rows = self._rows
        rows["experts"][layer].append(indices)
        rows["weights"][layer].append(weights)
        rows["shared_gate"][layer].append(shared_gate)
        if self.plan.router_probs:
            rows["router_probs"][layer].append(probs)

    # ---- Gated DeltaNet -------------------------------------------------------------------
    def deltanet(self, layer: int, log_decay: Any, beta: Any, query: Any, key: Any, value: Any,
                 initial: Any, final: Any) -> None:
        """One call of a layer's recurrence, all float32 device arrays.

        log_decay, beta [T, Hv]; query, key [T, Hk, Dk] L2-normalised (no 1/sqrt(Dk)); value
        [T, Hv, Dv]; initial, final [Hv, Dk, Dv] (or None: zeros / not returned by the kernel).
        A one-token call reads the model's own state; a longer one (prefill) replays the states
        token by token from the same inputs, and the model's own state replaces the last one."""
        plan, ops, rows = self.plan, self.ops, self._rows
        n = log_decay.shape[0]
        t0 = self.advance("deltanet", layer, n)
        rows["log_decay"][layer].append(log_decay)
        rows["beta"][layer].append(beta)
        keep = layer in plan.state_layers
        if keep and plan.inputs:
            rows["queries"][layer].append(query)
            rows["keys"][layer].append(key)
            rows["values"][layer].append(value)
        wanted = plan.state_tokens or ()
        norms: list = []
        recent = self._recent[layer] = [] if keep and n <= ROLLBACK_TOKENS else None

        def visit(t: int, state: Any) -> None:
            # Only what is kept is referenced: a prefill's full states are dropped as it goes.
            norms.append(ops.frobenius(state))                           # [Hv]
            if recent is not None:
                recent.append(state)
            if keep and t0 + t in wanted:
                kept = ops.take(state, plan.state_heads)
                rows["states"][layer].append(kept[None])
                self._state_tokens[layer].append(t0 + t)
                if ops.lazy:
                    self.pending.append(kept)

        if n == 1 and final is not None:
            state = final
            visit(0, state)
        else:
            k = ops.repeat_heads(key, value.shape[1] // key.shape[1])      # [T, Hv, Dk]
            state = ops.zeros((value.shape[1], key.shape[2], value.shape[2])) if initial is None else initial
            decay = ops.exp(log_decay)
            for t in range(n):
                state = delta_rule_step(state, k[t], value[t], decay[t], beta[t], ops.einsum)
                if t == n - 1 and final is not None:
                    state = final  # the model's own state enters its cache
                visit(t, state)
                if t % 64 == 63:
                    ops.flush(norms + [state])  # keeps a lazy framework's graph short on long prompts
        norms = ops.stack(norms)                                          # [T, Hv]
        rows["state_norm"][layer].append(norms)
        if ops.lazy:
            self.pending += [log_decay, beta, norms]
        if keep:
            self._final[layer] = state

    # ---- speculative decoding -------------------------------------------------------------
    def rollback(self, drop: int) -> None:
        """Forget the last `drop` tokens of the forward just recorded (drafts a speculative verify
        read and rejected): their rows, their kept states, and the positions they took; each kept
        layer's final state becomes the one where the remaining tokens end."""
        if not drop:
            return
        for key in self._seen:
            self._seen[key] -= drop
        for name, per_layer in self._rows.items():
            if name in ("attention", "states"):
                continue  # attention: the prompt's only; states: by token, below
            for pieces in per_layer.values():
                if pieces[-1].shape[0] < drop:
                    raise ValueError(f"cannot roll back {drop} tokens: the last forward recorded fewer")
                pieces[-1] = pieces[-1][:pieces[-1].shape[0] - drop]
        for layer, tokens in self._state_tokens.items():
            end = self._seen["deltanet", layer]
            while tokens and tokens[-1] >= end:
                tokens.pop()
                self._rows["states"][layer].pop()
        for layer, states in self._recent.items():
            if states and layer in self._final:
                self._final[layer] = states[len(states) - 1 - drop]
        self._recent = {}

    # ---- attention ------------------------------------------------------------------------
    def attention(self, layer: int, probs: Any) -> None:
        """Prefill attention probabilities [head, T, T] of a full-attention layer (first call only)."""
        if not self._rows["attention"][layer]:
            self._rows["attention"][layer].append(probs)

    # ---- results --------------------------------------------------------------------------
    def drain(self) -> list:
        pending, self.pending = self.pending, []
        return pending

    def collect(self) -> Captured:
        """Everything as numpy. Each layer's pieces are converted one at a time into one array
        allocated up front, and each is dropped once copied (see capture.PEAK_FACTOR)."""
        out = Captured()
        spec, plan = self.spec, self.plan
        self.pending = []  # references to pieces that are about to be freed
        if self._rows.get("experts"):
            out.experts = self._gather("experts", spec.moe_layers)
            out.weights = self._gather("weights", spec.moe_layers)
            out.shared_gate = self._gather("shared_gate", spec.moe_layers)
            if plan.router_probs:
                out.router_probs = self._gather("router_probs", spec.moe_layers)
        if self._rows.get("log_decay"):
            for name in ("log_decay", "beta", "state_norm"):
                setattr(out, name, self._gather(name, spec.linear_layers))
            kept = plan.state_layers
            out.final_state = np.stack([self.ops.to_numpy(self._final.pop(i)) for i in kept])
            if plan.inputs:
                for name in ("queries", "keys", "values"):
                    setattr(out, name, self._gather(name, kept))
            if plan.state_tokens:
                out.states = self._gather("states", kept)
                out.state_tokens = np.asarray(self._state_tokens[kept[0]], dtype=np.int64)
        if self._rows.get("attention"):
            out.attention = self._gather("attention", spec.full_attention_layers)
        return out

    def _gather(self, name: str, layers: Sequence[int]) -> np.ndarray:
        """[layer, row, ...] from each layer's list of [rows, ...] pieces, freeing them as it goes."""
        per_layer = self._rows.pop(name)
        total = sum(piece.shape[0] for piece in per_layer[layers[0]])
        out = None
        for li, layer in enumerate(layers):
            pieces, row = per_layer.pop(layer, []), 0
            for j in range(len(pieces)):
                part = self.ops.to_numpy(pieces[j])
                pieces[j] = None
                if out is None:
                    out = np.empty((len(layers), total, *part.shape[1:]), dtype=part.dtype)
                out[li, row:row + len(part)] = part
                row += len(part)
        return out



class HookedProbe(Probe):
    """A backend's probe: `hook_in` puts its hooks into the model (appending how to take each one
    out to `undo`); the recorder keeps what they see. Hooked in for one forward call at a time."""

    def __init__(self, backend, plan: ProbePlan, ops: ArrayOps):
        self.backend, self.plan, self.spec = backend, plan, backend.spec
        self.recorder = Recorder(plan, self.spec, ops)
        self._owner: int | None = None   # the thread running the forward the probe is hooked into

    @abstractmethod
    def hook_in(self, undo: list) -> None: ...

    def installed(self) -> ContextManager[None]:
        return probe_scope(self._install)

    def _install(self) -> list:
        undo: list = [self._release]
        self._owner = threading.get_ident()
        self.hook_in(undo)
        return undo

    def _release(self) -> None:
        self._owner, self.recorder.layer = None, None

    def mine(self) -> bool:
        """Whether a call of a patched module-level function comes from the forward this probe is
        hooked into (another model of the same architecture may run in another thread)."""
        return self._owner == threading.get_ident() and self.recorder.layer is not None

    def drain(self) -> list:
        return self.recorder.drain()

    def rollback(self, drop: int) -> None:
        self.recorder.rollback(drop)

    def collect(self) -> Captured:
        return self.recorder.collect()
