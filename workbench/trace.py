"""What to record during a run (`Trace`, `DeltaNetCapture`) and how to change routing
(`Intervention`): the requests a user passes to `generate`. The records they produce live in
`records.py`; `capture.py` checks a request against a model and assembles the records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .errors import WorkbenchError
from .spec import ModelSpec

DEFAULT_BUDGET = 1 << 30  # bytes a DeltaNet / attention capture may keep unless told otherwise


# ---- requests ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DeltaNetCapture:
    """What to keep from the Gated DeltaNet layers beyond the always-kept per-token summaries
    (decay, write strength β, state norm, for every linear layer and head).

    states:  token positions (in the forwarded sequence: prompt first) whose full states are kept,
             "all", or None for none. The final state is always kept.
    layers:  model layer indices (linear-attention layers) for states, inputs and the final state;
             None = all of them.
    heads:   value heads for the kept states; None = all.
    inputs:  keep the recurrence inputs per token (L2-normalised q and k, v): what the numpy
             reference and the effective-attention view need.
    max_bytes: refuse up front a capture that could keep more than this.
    """

    states: Sequence[int] | str | None = None
    layers: Sequence[int] | None = None
    heads: Sequence[int] | None = None
    inputs: bool = False
    max_bytes: int = DEFAULT_BUDGET


@dataclass(frozen=True)
class Trace:
    """A scoped recording request: `model.generate(..., trace=Trace(routing=True))`.

    routing:      experts, weights and shared-expert gate per MoE layer and token.
    router_probs: also the full router softmax `[moe_layer, token, num_experts]`.
    deltanet:     True for per-token summaries, or a `DeltaNetCapture` for states and inputs.
    attention:    attention probabilities of the full-attention layers over the prompt
                  `[full_layer, head, query, key]` (prefill only; keep prompts short).
    max_bytes:    refuse up front router probabilities or attention maps that could take more
                  (DeltaNet captures have their own `DeltaNetCapture.max_bytes`).
    """

    routing: bool = False
    router_probs: bool = False
    deltanet: bool | DeltaNetCapture = False
    attention: bool = False
    max_bytes: int = DEFAULT_BUDGET

    @property
    def deltanet_capture(self) -> DeltaNetCapture | None:
        if self.deltanet is True:
            return DeltaNetCapture()
        return self.deltanet or None


@dataclass(frozen=True)
class Intervention:
    """Change the router's choice: `disable` removes experts from the choice of a MoE layer (the
    next best take their place); `force` puts one expert into every token's top-k (replacing its
    lowest-ranked choice). Weights are the router's own probabilities, renormalised over the new
    top-k. `positions` limits both to those token positions (None = every token).
    Layers are model layer indices: `Intervention(disable={3: [0, 5]}, force={7: 12})`.
    """

    disable: Mapping[int, Sequence[int]] = field(default_factory=dict)
    force: Mapping[int, int] = field(default_factory=dict)
    positions: Sequence[int] | None = None

    def validate(self, spec: ModelSpec) -> None:
        self.masks(spec)

    def masks(self, spec: ModelSpec) -> dict[int, tuple[np.ndarray, int]]:
        """Check against the model; {model layer: (disabled [num_experts] bool, forced expert or -1)}."""
        if not spec.is_moe:
            raise WorkbenchError("this model is dense (no experts): routing interventions need a "
                                 "MoE checkpoint such as 'tiny' or 'Qwen/Qwen3.5-35B-A3B'.")
        n, k = spec.num_experts, spec.num_experts_per_tok
        if not isinstance(self.disable, Mapping) or not isinstance(self.force, Mapping):
            raise WorkbenchError("Intervention takes disable={layer: [experts]} and force={layer: expert} "
                                 "as dicts keyed by model layer index.")
        for layer in list(self.disable) + list(self.force):
            if not is_index(layer) or int(layer) not in spec.moe_layers:
                raise WorkbenchError(f"layer {layer!r} is not a MoE layer of this model; MoE layers are "
                                     f"{short_list(spec.moe_layers)}.")
        out: dict[int, tuple[np.ndarray, int]] = {}
        for layer, experts in self.disable.items():
            if isinstance(experts, (str, bytes)) or not isinstance(experts, (Sequence, set, frozenset, np.ndarray)):
                raise WorkbenchError(f"disable[{layer}] = {experts!r}: give a list of expert indices, "
                                     f"e.g. disable={{{layer}: [0, 5]}}.")
            experts = list(experts)
            bad = [e for e in experts if not is_index(e) or not 0 <= int(e) < n]
            if bad:
                raise WorkbenchError(f"disable[{layer}] names {bad}: these are outside 0..{n - 1} or not whole "
                                     f"numbers (experts are numbered 0..{n - 1}).")
            if n - len(set(map(int, experts))) < k:
                raise WorkbenchError(f"disable[{layer}] leaves {n - len(set(map(int, experts)))} experts, fewer "
                                     f"than the {k} each token needs; disable at most {n - k}.")
            disabled = np.zeros(n, dtype=bool)
            disabled[[int(e) for e in experts]] = True
            out[int(layer)] = (disabled, -1)
        for layer, expert in self.force.items():
            if not is_index(expert) or not 0 <= int(expert) < n:
                raise WorkbenchError(f"force[{layer}] = {expert!r}: force one expert per layer, a whole "
                                     f"number in 0..{n - 1} (e.g. force={{{layer}: 3}}).")
            disabled = out.get(int(layer), (np.zeros(n, dtype=bool), -1))[0]
            if disabled[int(expert)]:
                raise WorkbenchError(f"force[{layer}] = {expert} is also disabled in that layer.")
            out[int(layer)] = (disabled, int(expert))
        return out

    def checked_positions(self, n_tokens: int) -> frozenset[int] | None:
        """`positions` as a set, checked against a run that forwards at most `n_tokens` tokens."""
        if self.positions is None:
            return None
        if isinstance(self.positions, (str, bytes)) or not isinstance(self.positions, (Sequence, set, frozenset,
                                                                                        np.ndarray, range)):
            raise WorkbenchError(f"positions={self.positions!r}: give a list of token positions (or None "
                                 "for every token).")
        positions = list(self.positions)
        bad = [p for p in positions if not is_index(p) or not 0 <= int(p) < n_tokens]
        if bad:
            raise WorkbenchError(f"positions {short_list(bad)} are outside this run: it forwards at most "
                                 f"{n_tokens} tokens (positions 0..{n_tokens - 1}; the prompt starts at 0).")
        return frozenset(map(int, positions))


def is_index(value) -> bool:
    """A whole number (int or numpy integer), not a bool, float or string."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def short_list(values: Sequence[int]) -> str:
    values = list(values)
    return ", ".join(map(str, values)) if len(values) <= 12 else \
        f"{', '.join(map(str, values[:6]))}, ... {values[-1]} ({len(values)} in all)"
