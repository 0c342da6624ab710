"""What to record during a run (`Trace`, `DeltaNetCapture`), how to change routing
(`Intervention`), and the records themselves (`RoutingTrace`, `DeltaNetTrace`, `AttentionTrace`).

Records are numpy only, one row per token forwarded through the model (prompt, then generated
tokens in order), and save to / load from a portable `.npz` file.
Layouts: routing `[moe_layer, token, k]` (experts sorted by weight, weights renormalised over the
top-k); DeltaNet per-token summaries `[lin_layer, token, head]`; states `[Hv, Dk, Dv]` (torch order).
"""
from __future__ import annotations

import zipfile
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import WorkbenchError
from .spec import ModelSpec

DEFAULT_BUDGET = 1 << 30  # bytes a DeltaNet / attention capture may keep unless told otherwise
LOAD_LIMIT = 4 << 30      # bytes a saved record may expand to when loaded unless told otherwise


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


# ---- records ----------------------------------------------------------------------------
class _Record:
    """Shared by the records: tokens, save/load, size."""

    token_ids: np.ndarray
    tokens: np.ndarray
    phase: np.ndarray

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def n_prompt(self) -> int:
        return int((self.phase == "prompt").sum())

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self._arrays().values())

    def _arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = np.asarray(value)
        return out

    def save(self, path: str | Path) -> Path:
        """Write a compressed `.npz` (portable: numpy arrays only, no pickles)."""
        path = Path(path)
        np.savez_compressed(path, __kind__=np.array(type(self).__name__), **self._arrays())
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | Path, max_bytes: int = LOAD_LIMIT):
        """Read a record written by `save`. Arrays are checked before they are read: a file whose
        arrays would expand past `max_bytes`, or whose shapes disagree with each other, is refused."""
        path = Path(path)
        shapes = _npz_headers(path, max_bytes)
        kind = "?"
        with np.load(path, allow_pickle=False) as data:
            if "__kind__" in shapes:
                kind = str(data["__kind__"])
            if kind != cls.__name__:
                raise WorkbenchError(f"{path} holds a {kind}, not a {cls.__name__}; load it with "
                                     f"workbench.{kind}.load.")
            values = {}
            for f in fields(cls):
                if f.name in shapes:
                    v = data[f.name]
                    values[f.name] = v.item() if v.ndim == 0 else v
                else:
                    values[f.name] = None
        record = cls(**values)
        try:
            problem = record._shape_problem()
        except (ValueError, TypeError, AttributeError, IndexError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            raise WorkbenchError(f"{path} is not a consistent {cls.__name__}: {problem}. The file is damaged "
                                 "or was not written by workbench; record it again.")
        return record

    def _shape_problem(self) -> str | None:
        """What disagrees between the arrays' shapes, or None."""
        missing = [f.name for f in fields(self) if f.default is MISSING and getattr(self, f.name) is None]
        if missing:
            return f"{', '.join(missing)} missing"
        n = len(self.token_ids)
        if self.tokens.shape != (n,) or self.phase.shape != (n,) or self.token_ids.ndim != 1:
            return "tokens, token_ids and phase differ in length"
        return None

    @staticmethod
    def _find(layers: np.ndarray, layer: int, problem: str) -> int:
        """Row of model layer `layer` in `layers`; else a WorkbenchError saying `problem`."""
        hits = np.flatnonzero(layers == layer)
        if not len(hits):
            raise WorkbenchError(f"layer {layer} {problem}: {short_list(layers.tolist())}.")
        return int(hits[0])

    def _check_position(self, t: int) -> int:
        if not -self.n_tokens <= t < self.n_tokens:
            raise WorkbenchError(f"token {t} is out of range: this trace has {self.n_tokens} tokens "
                                 f"(0..{self.n_tokens - 1}).")
        return t % self.n_tokens


@dataclass(eq=False)
class RoutingTrace(_Record):
    """Expert routing of every forwarded token.

    experts     [moe_layer, token, k] int32, sorted by weight (largest first)
    weights     [moe_layer, token, k] float32, renormalised over the top-k as the model uses them
    shared_gate [moe_layer, token] float32, sigmoid of the shared-expert gate
    layers      [moe_layer] model layer index of each MoE layer
    token_ids   [token] int64; tokens [token] str; phase [token] "prompt" | "decode"
    probs       [moe_layer, token, num_experts] float32 full router softmax, or None
    """

    experts: np.ndarray
    weights: np.ndarray
    shared_gate: np.ndarray
    layers: np.ndarray
    token_ids: np.ndarray
    tokens: np.ndarray
    phase: np.ndarray
    num_experts: int
    probs: np.ndarray | None = None

    @property
    def top_k(self) -> int:
        return self.experts.shape[2]

    def _shape_problem(self) -> str | None:
        problem = super()._shape_problem()
        if problem:
            return problem
        n, (nl,) = len(self.token_ids), self.layers.shape
        if self.experts.ndim != 3 or self.experts.shape[:2] != (nl, n) or self.weights.shape != self.experts.shape:
            return f"experts/weights are {self.experts.shape}/{self.weights.shape}, not [{nl}, {n}, k]"
        if self.shared_gate.shape != (nl, n):
            return f"shared_gate is {self.shared_gate.shape}, not [{nl}, {n}]"
        if self.experts.size and not 0 <= self.experts.min() <= self.experts.max() < int(self.num_experts):
            return f"expert ids fall outside 0..{int(self.num_experts) - 1}"
        if self.probs is not None and self.probs.shape != (nl, n, int(self.num_experts)):
            return f"probs are {self.probs.shape}, not [{nl}, {n}, {int(self.num_experts)}]"
        return None

    def row(self, layer: int) -> int:
        """Row of model layer `layer` in the `[moe_layer, ...]` arrays."""
        return self._find(self.layers, layer, "is not a MoE layer of this trace; its MoE layers are")

    def token(self, t: int) -> list[dict]:
        """Experts and weights of token `t` in every MoE layer, for a table or a click."""
        t = self._check_position(t)
        return [{"layer": int(layer), "experts": self.experts[i, t].tolist(),
                 "weights": [round(float(w), 4) for w in self.weights[i, t]],
                 "shared_gate": round(float(self.shared_gate[i, t]), 4)}
                for i, layer in enumerate(self.layers)]

    def __repr__(self) -> str:
        return (f"RoutingTrace({len(self.layers)} MoE layers x {self.n_tokens} tokens "
                f"({self.n_prompt} prompt), top-{self.top_k} of {self.num_experts} experts"
                f"{', with router probs' if self.probs is not None else ''})")


@dataclass(eq=False)
class DeltaNetTrace(_Record):
    """The Gated DeltaNet layers over every forwarded token.

    layers      [lin_layer] model layer index of each linear-attention layer
    decay       [lin_layer, token, Hv] float32: exp(g), the factor the state is multiplied by
    beta        [lin_layer, token, Hv] float32: write strength β = sigmoid(b)
    state_norm  [lin_layer, token, Hv] float32: Frobenius norm of the state after the token
    final_state [state_layer, Hv, Dk, Dv] float32 after the last forwarded token
    states      [state_layer, state_token, state_head, Dk, Dv] float32, or None
    state_layers [state_layer] model layer indices; state_tokens [state_token]; state_heads [state_head]
    queries, keys [state_layer, token, Hk, Dk] (L2-normalised; the readout also scales q by
    Dk^-0.5), values [state_layer, token, Hv, Dv]: the recurrence inputs, or None
    """

    layers: np.ndarray
    decay: np.ndarray
    beta: np.ndarray
    state_norm: np.ndarray
    final_state: np.ndarray
    state_layers: np.ndarray
    token_ids: np.ndarray
    tokens: np.ndarray
    phase: np.ndarray
    states: np.ndarray | None = None
    state_tokens: np.ndarray | None = None
    state_heads: np.ndarray | None = None
    queries: np.ndarray | None = None
    keys: np.ndarray | None = None
    values: np.ndarray | None = None

    @property
    def num_heads(self) -> int:
        return self.decay.shape[2]

    def _shape_problem(self) -> str | None:
        problem = super()._shape_problem()
        if problem:
            return problem
        n, (nl,), (ns,) = len(self.token_ids), self.layers.shape, self.state_layers.shape
        h = self.decay.shape[-1] if self.decay.ndim == 3 else -1
        for name in ("decay", "beta", "state_norm"):
            if getattr(self, name).shape != (nl, n, h):
                return f"{name} is {getattr(self, name).shape}, not [{nl}, {n}, {h}]"
        if self.final_state.ndim != 4 or self.final_state.shape[:2] != (ns, h):
            return f"final_state is {self.final_state.shape}, not [{ns}, {h}, Dk, Dv]"
        if self.states is not None:
            want = (ns, len(self.state_tokens), len(self.state_heads), *self.final_state.shape[2:])
            if self.states.shape != want:
                return f"states are {self.states.shape}, not {list(want)}"
        for name in ("queries", "keys", "values"):
            value = getattr(self, name)
            if value is not None and (value.ndim != 4 or value.shape[:2] != (ns, n)):
                return f"{name} are {value.shape}, not [{ns}, {n}, heads, dim]"
        return None

    def row(self, layer: int) -> int:
        return self._find(self.layers, layer, "is not a Gated DeltaNet layer of this trace; its "
                                              "linear-attention layers are")

    def state_row(self, layer: int) -> int:
        return self._find(self.state_layers, layer, "has no kept states (ask with DeltaNetCapture("
                                                    "layers=[...])); this trace kept layers")

    def state(self, layer: int, token: int, head: int) -> np.ndarray:
        """The state `[Dk, Dv]` of `head` in `layer` after token `token`."""
        if self.states is None:
            raise WorkbenchError("this trace kept no full states: capture with "
                                 "Trace(deltanet=DeltaNetCapture(states='all')) or a list of tokens.")
        li = self.state_row(layer)
        token = self._check_position(token)
        ti = np.flatnonzero(self.state_tokens == token)
        hi = np.flatnonzero(self.state_heads == head)
        if not len(ti):
            raise WorkbenchError(f"no state was kept after token {token}; kept tokens: "
                                 f"{short_list(self.state_tokens.tolist())}.")
        if not len(hi):
            raise WorkbenchError(f"head {head} was not kept; kept heads: {short_list(self.state_heads.tolist())}.")
        return self.states[li, ti[0], hi[0]]

    def __repr__(self) -> str:
        kept = "no full states" if self.states is None else \
            f"states at {len(self.state_tokens)} tokens x {len(self.state_heads)} heads"
        return (f"DeltaNetTrace({len(self.layers)} linear layers x {self.n_tokens} tokens x "
                f"{self.num_heads} heads, {kept}, {self.nbytes / 2**20:,.2f} MiB)")


@dataclass(eq=False)
class AttentionTrace(_Record):
    """Attention probabilities of the full-attention layers over the prompt.

    probs  [full_layer, head, query, key] float32 (rows sum to 1, causal)
    layers [full_layer] model layer indices
    """

    probs: np.ndarray
    layers: np.ndarray
    token_ids: np.ndarray
    tokens: np.ndarray
    phase: np.ndarray

    def _shape_problem(self) -> str | None:
        problem = super()._shape_problem()
        if problem:
            return problem
        n, (nl,) = len(self.token_ids), self.layers.shape
        if self.probs.ndim != 4 or self.probs.shape[0] != nl or self.probs.shape[2:] != (n, n):
            return f"probs are {self.probs.shape}, not [{nl}, heads, {n}, {n}]"
        return None

    def row(self, layer: int) -> int:
        return self._find(self.layers, layer, "is not a full-attention layer; they are")


def short_list(values: Sequence[int]) -> str:
    values = list(values)
    return ", ".join(map(str, values)) if len(values) <= 12 else \
        f"{', '.join(map(str, values[:6]))}, ... {values[-1]} ({len(values)} in all)"


def _npz_headers(path: Path, max_bytes: int) -> dict[str, tuple[int, ...]]:
    """{array name: shape} of an `.npz`, read from the headers alone (nothing is decompressed)."""
    if not path.is_file():
        raise WorkbenchError(f"{path} is not a file: give the path `save` returned (it ends in .npz).")
    shapes, total = {}, 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(member)
                if dtype.hasobject:
                    raise WorkbenchError(f"{path} holds Python objects ({info.filename}); records hold "
                                         "numbers and strings only.")
                shapes[info.filename.removesuffix(".npy")] = shape
                total += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise WorkbenchError(f"{path} is not a record saved by workbench ({exc}).") from None
    if total > max_bytes:
        raise WorkbenchError(f"{path} would expand to {total / 2**20:,.1f} MiB, over the limit of "
                             f"{max_bytes / 2**20:,.1f} MiB: pass max_bytes= to load it anyway if you trust it.")
    return shapes
