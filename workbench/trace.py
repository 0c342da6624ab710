"""What to record during a run (`Trace`, `DeltaNetCapture`), how to change routing
(`Intervention`), and the records themselves (`RoutingTrace`, `DeltaNetTrace`, `AttentionTrace`).

Records are numpy only, one row per token forwarded through the model (prompt, then generated
tokens in order), and save to / load from a portable `.npz` file.
Layouts: routing `[moe_layer, token, k]` (experts sorted by weight, weights renormalised over the
top-k); DeltaNet per-token summaries `[lin_layer, token, head]`; states `[Hv, Dk, Dv]` (torch order).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import WorkbenchError
from .model_spec import ModelSpec

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
    """

    routing: bool = False
    router_probs: bool = False
    deltanet: bool | DeltaNetCapture = False
    attention: bool = False

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
        if not spec.is_moe:
            raise WorkbenchError("this model is dense (no experts): routing interventions need a "
                                 "MoE checkpoint such as 'tiny' or 'Qwen/Qwen3.5-35B-A3B'.")
        n, k = spec.num_experts, spec.num_experts_per_tok
        for layer in list(self.disable) + list(self.force):
            if layer not in spec.moe_layers:
                raise WorkbenchError(f"layer {layer} is not a MoE layer of this model; MoE layers are "
                                     f"{_short(spec.moe_layers)}.")
        for layer, experts in self.disable.items():
            experts = list(experts)
            bad = [e for e in experts if not 0 <= int(e) < n]
            if bad:
                raise WorkbenchError(f"disable[{layer}] names experts {bad} outside 0..{n - 1}.")
            if n - len(set(experts)) < k:
                raise WorkbenchError(f"disable[{layer}] leaves {n - len(set(experts))} experts, fewer "
                                     f"than the {k} each token needs; disable at most {n - k}.")
        for layer, expert in self.force.items():
            if not 0 <= int(expert) < n:
                raise WorkbenchError(f"force[{layer}] = {expert} is outside 0..{n - 1}.")
            if int(expert) in set(map(int, self.disable.get(layer, ()))):
                raise WorkbenchError(f"force[{layer}] = {expert} is also disabled in that layer.")

    def masks(self, spec: ModelSpec) -> dict[int, tuple[np.ndarray, int]]:
        """{model layer: (disabled [num_experts] bool, forced expert or -1)} for the backends."""
        out = {}
        for layer in set(self.disable) | set(self.force):
            disabled = np.zeros(spec.num_experts, dtype=bool)
            disabled[list(map(int, self.disable.get(layer, ())))] = True
            out[layer] = (disabled, int(self.force.get(layer, -1)))
        return out


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
    def load(cls, path: str | Path):
        with np.load(Path(path), allow_pickle=False) as data:
            kind = str(data["__kind__"]) if "__kind__" in data else "?"
            if kind != cls.__name__:
                raise WorkbenchError(f"{path} holds a {kind}, not a {cls.__name__}; load it with "
                                     f"workbench.{kind}.load.")
            values = {}
            for f in fields(cls):
                if f.name in data:
                    v = data[f.name]
                    values[f.name] = v.item() if v.ndim == 0 else v
                else:
                    values[f.name] = None
        return cls(**values)

    @staticmethod
    def _find(layers: np.ndarray, layer: int, problem: str) -> int:
        """Row of model layer `layer` in `layers`; else a WorkbenchError saying `problem`."""
        hits = np.flatnonzero(layers == layer)
        if not len(hits):
            raise WorkbenchError(f"layer {layer} {problem}: {_short(layers.tolist())}.")
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
                                 f"{_short(self.state_tokens.tolist())}.")
        if not len(hi):
            raise WorkbenchError(f"head {head} was not kept; kept heads: {_short(self.state_heads.tolist())}.")
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

    def row(self, layer: int) -> int:
        return self._find(self.layers, layer, "is not a full-attention layer; they are")


# ---- resolving a request against a model ------------------------------------------------
@dataclass(frozen=True)
class ProbePlan:
    """A validated request, in the concrete terms a backend's probe needs."""

    routing: bool = False
    router_probs: bool = False
    deltanet: bool = False
    state_layers: tuple[int, ...] = ()     # model layers whose states / inputs / final are kept
    state_heads: tuple[int, ...] = ()
    state_tokens: frozenset[int] | None = None  # None: keep no per-token states
    inputs: bool = False
    attention: bool = False
    intervention: dict = field(default_factory=dict)  # Intervention.masks()
    positions: frozenset[int] | None = None

    @property
    def active(self) -> bool:
        return self.routing or self.deltanet or self.attention or bool(self.intervention)


def plan_probes(spec: ModelSpec, trace: Trace | None, intervention: Intervention | None,
                n_tokens: int) -> ProbePlan:
    """Check `trace` and `intervention` against the model, and the capture size against its budget
    for a run that forwards at most `n_tokens` tokens; raise a WorkbenchError saying how to fix it."""
    trace = trace or Trace()
    if not isinstance(trace, Trace):
        raise WorkbenchError(f"trace={trace!r} is not understood: pass workbench.Trace(routing=True, ...).")
    if (trace.routing or trace.router_probs) and not spec.is_moe:
        raise WorkbenchError("this model is dense: it has no experts to route to. Routing needs a MoE "
                             "checkpoint ('tiny', 'Qwen/Qwen3.5-35B-A3B', ...); DeltaNet tracing works "
                             "on dense models too.")
    if intervention is not None:
        if not isinstance(intervention, Intervention):
            raise WorkbenchError("intervene= takes a workbench.Intervention(disable={layer: [experts]}, "
                                 "force={layer: expert}).")
        intervention.validate(spec)
    capture = trace.deltanet_capture
    kw: dict = {}
    if capture is not None:
        if not isinstance(capture, DeltaNetCapture):
            raise WorkbenchError("Trace(deltanet=...) takes True or a workbench.DeltaNetCapture(...).")
        layers = tuple(spec.linear_layers if capture.layers is None else map(int, capture.layers))
        for layer in layers:
            if layer not in spec.linear_layers:
                raise WorkbenchError(f"layer {layer} is not a Gated DeltaNet layer; this model's linear-"
                                     f"attention layers are {_short(spec.linear_layers)}.")
        hv = spec.linear_num_value_heads
        heads = tuple(range(hv) if capture.heads is None else map(int, capture.heads))
        for h in heads:
            if not 0 <= h < hv:
                raise WorkbenchError(f"head {h} is out of range: the DeltaNet layers have {hv} value heads "
                                     f"(0..{hv - 1}).")
        if capture.states is None:
            tokens = None
        elif isinstance(capture.states, str):
            if capture.states != "all":
                raise WorkbenchError(f"states={capture.states!r}: use 'all', a list of token positions or None.")
            tokens = frozenset(range(n_tokens))
        else:
            tokens = frozenset(int(t) for t in capture.states)
            if any(t < 0 for t in tokens):
                raise WorkbenchError("states= takes token positions >= 0 (the prompt starts at 0).")
        kw = dict(deltanet=True, state_layers=layers, state_heads=heads, state_tokens=tokens,
                  inputs=capture.inputs)
        need = deltanet_bytes(spec, n_tokens, len(layers), len(heads),
                              0 if tokens is None else min(len(tokens), n_tokens), capture.inputs)
        if need > capture.max_bytes:
            raise WorkbenchError(
                f"this DeltaNet capture could keep {_bytes(need)} (up to {n_tokens} tokens, {len(layers)} "
                f"layers, {len(heads)} heads of {spec.linear_key_head_dim}x{spec.linear_value_head_dim} "
                f"float32 states), over its budget of {_bytes(capture.max_bytes)}. Keep states at fewer "
                "tokens (states=[...]), layers (layers=[...]) or heads (heads=[...]), generate fewer "
                "tokens, or raise max_bytes.")
    if trace.attention:
        need = len(spec.full_attention_layers) * spec.num_attention_heads * n_tokens ** 2 * 4
        if need > DEFAULT_BUDGET:
            raise WorkbenchError(f"attention maps for {n_tokens} tokens would take {_bytes(need)}: "
                                 "capture them on a shorter prompt (a few hundred tokens).")
    return ProbePlan(routing=trace.routing or trace.router_probs, router_probs=trace.router_probs,
                     attention=trace.attention,
                     intervention=intervention.masks(spec) if intervention else {},
                     positions=(frozenset(map(int, intervention.positions))
                                if intervention and intervention.positions is not None else None),
                     **kw)


def deltanet_bytes(spec: ModelSpec, n_tokens: int, n_layers: int, n_heads: int, n_state_tokens: int,
                   inputs: bool) -> int:
    """Bytes a DeltaNet capture keeps (float32)."""
    nl, hv, hk = len(spec.linear_layers), spec.linear_num_value_heads, spec.linear_num_key_heads
    dk, dv = spec.linear_key_head_dim, spec.linear_value_head_dim
    summaries = 3 * nl * n_tokens * hv
    final = n_layers * hv * dk * dv
    states = n_layers * n_state_tokens * n_heads * dk * dv
    ins = n_layers * n_tokens * (2 * hk * dk + hv * dv) if inputs else 0
    return 4 * (summaries + final + states + ins)


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def _short(values: Sequence[int]) -> str:
    values = list(values)
    return ", ".join(map(str, values)) if len(values) <= 12 else \
        f"{', '.join(map(str, values[:6]))}, ... {values[-1]} ({len(values)} in all)"


# ---- from a probe's raw arrays to records -----------------------------------------------
def build_records(raw: dict[str, np.ndarray], plan: ProbePlan, spec: ModelSpec, token_ids: np.ndarray,
                  tokens: Sequence[str], n_prompt: int) -> dict[str, _Record]:
    """Turn a probe's `collect()` output into records. `token_ids` [T] are the forwarded tokens
    (prompt first), `tokens` their text; rows of `raw` follow the same order."""
    n = len(token_ids)
    common = dict(token_ids=np.asarray(token_ids, dtype=np.int64), tokens=np.asarray(list(tokens), dtype=str),
                  phase=np.where(np.arange(n) < n_prompt, "prompt", "decode"))
    out: dict[str, _Record] = {}
    if "experts" in raw:
        experts, weights = raw["experts"][:, :n], raw["weights"][:, :n].astype(np.float32)
        order = np.argsort(-weights, axis=-1, kind="stable")  # largest weight first
        probs = raw.get("router_probs")
        out["routing"] = RoutingTrace(
            experts=np.take_along_axis(experts, order, -1).astype(np.int32),
            weights=np.take_along_axis(weights, order, -1),
            shared_gate=raw["shared_gate"][:, :n].astype(np.float32),
            layers=np.asarray(spec.moe_layers, dtype=np.int64), num_experts=spec.num_experts,
            probs=None if probs is None else probs[:, :n].astype(np.float32), **common)
    if "log_decay" in raw:
        states, state_tokens = raw.get("states"), raw.get("state_tokens")
        if states is not None:
            keep = state_tokens < n
            states, state_tokens = states[:, keep], state_tokens[keep]
        heads = None
        if states is not None:
            heads = np.asarray(plan.state_heads, dtype=np.int64)
        out["deltanet"] = DeltaNetTrace(
            layers=np.asarray(spec.linear_layers, dtype=np.int64),
            decay=np.exp(raw["log_decay"][:, :n]).astype(np.float32),
            beta=raw["beta"][:, :n].astype(np.float32),
            state_norm=raw["state_norm"][:, :n].astype(np.float32),
            final_state=raw["final_state"].astype(np.float32),
            state_layers=np.asarray(plan.state_layers, dtype=np.int64),
            states=states, state_tokens=state_tokens, state_heads=heads,
            queries=_cut(raw.get("queries"), n), keys=_cut(raw.get("keys"), n),
            values=_cut(raw.get("values"), n), **common)
    if "attention" in raw:
        t = raw["attention"].shape[-1]
        out["attention"] = AttentionTrace(
            probs=raw["attention"].astype(np.float32),
            layers=np.asarray(spec.full_attention_layers, dtype=np.int64),
            **{k: v[:t] for k, v in common.items()})
    return out


def _cut(x: np.ndarray | None, n: int) -> np.ndarray | None:
    return None if x is None else x[:, :n].astype(np.float32)
