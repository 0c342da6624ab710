"""From a recording request to records: the checked plan a backend's probe follows (`ProbePlan`),
the typed arrays a probe hands back (`Captured`), and their assembly into the user-facing records.

Framework-free: the backends import this module (downwards); it imports the request and record
types from `trace` and `records`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Sequence

import numpy as np

from .errors import WorkbenchError
from .records import AttentionTrace, DeltaNetTrace, RoutingTrace
from .spec import ModelSpec
from .trace import DeltaNetCapture, Intervention, Trace, is_index, short_list

# Memory a capture may use at its peak, as a multiple of what it keeps: the recording holds framework
# arrays until the run ends (no host sync per token), then the numpy result is built beside them, and
# freed small pieces stay in the allocator. Measured 2.1x (torch CPU) and 2.8x (MLX CPU) on a 66 MiB
# capture, so 4 leaves room; tests/test_hostile_input.py::test_capture_peak_stays_within_its_budget
# checks the bound.
PEAK_FACTOR = 4


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


@dataclass
class Captured:
    """What a probe recorded, as numpy, one row per forwarded token (prompt first).

    experts, weights [moe_layer, token, k]; shared_gate [moe_layer, token]; router_probs
    [moe_layer, token, E]; log_decay, beta, state_norm [lin_layer, token, Hv]; final_state
    [state_layer, Hv, Dk, Dv]; states [state_layer, state_token, state_head, Dk, Dv] with
    state_tokens [state_token]; queries, keys [state_layer, token, Hk, Dk]; values
    [state_layer, token, Hv, Dv]; attention [full_layer, head, T, T]. States in torch order.
    """

    experts: np.ndarray | None = None
    weights: np.ndarray | None = None
    shared_gate: np.ndarray | None = None
    router_probs: np.ndarray | None = None
    log_decay: np.ndarray | None = None
    beta: np.ndarray | None = None
    state_norm: np.ndarray | None = None
    final_state: np.ndarray | None = None
    states: np.ndarray | None = None
    state_tokens: np.ndarray | None = None
    queries: np.ndarray | None = None
    keys: np.ndarray | None = None
    values: np.ndarray | None = None
    attention: np.ndarray | None = None

    @property
    def n_rows(self) -> int | None:
        """Tokens recorded per layer (the forwarded tokens), or None when nothing per token was."""
        for value in (self.experts, self.log_decay):
            if value is not None:
                return value.shape[1]
        return None

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self) if getattr(self, f.name) is not None)


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
    masks, positions = {}, None
    if intervention is not None:
        if not isinstance(intervention, Intervention):
            raise WorkbenchError("intervene= takes a workbench.Intervention(disable={layer: [experts]}, "
                                 "force={layer: expert}).")
        masks = intervention.masks(spec)
        positions = intervention.checked_positions(n_tokens)
    capture = trace.deltanet_capture
    kw: dict = {}
    if capture is not None:
        kw = _deltanet_plan(spec, capture, n_tokens)
    if trace.router_probs:
        need = PEAK_FACTOR * len(spec.moe_layers) * n_tokens * spec.num_experts * 4
        if need > trace.max_bytes:
            raise WorkbenchError(
                f"router probabilities for up to {n_tokens} tokens could use {_bytes(need)}, over the "
                f"budget of {_bytes(trace.max_bytes)}: trace fewer tokens, use routing=True alone "
                "(top-k only), or raise Trace(max_bytes=...).")
    if trace.attention:
        need = len(spec.full_attention_layers) * spec.num_attention_heads * n_tokens ** 2 * 4
        if need > trace.max_bytes:
            raise WorkbenchError(f"attention maps for {n_tokens} tokens would take {_bytes(need)}: "
                                 "capture them on a shorter prompt (a few hundred tokens).")
    return ProbePlan(routing=trace.routing or trace.router_probs, router_probs=trace.router_probs,
                     attention=trace.attention, intervention=masks, positions=positions, **kw)


def _deltanet_plan(spec: ModelSpec, capture: DeltaNetCapture, n_tokens: int) -> dict:
    if not isinstance(capture, DeltaNetCapture):
        raise WorkbenchError("Trace(deltanet=...) takes True or a workbench.DeltaNetCapture(...).")
    layers = _indices(spec.linear_layers if capture.layers is None else capture.layers, "layers")
    for layer in layers:
        if layer not in spec.linear_layers:
            raise WorkbenchError(f"layer {layer} is not a Gated DeltaNet layer; this model's linear-"
                                 f"attention layers are {short_list(spec.linear_layers)}.")
    hv = spec.linear_num_value_heads
    heads = _indices(range(hv) if capture.heads is None else capture.heads, "heads")
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
        tokens = frozenset(_indices(capture.states, "states"))
        outside = sorted(t for t in tokens if not 0 <= t < n_tokens)
        if outside:
            raise WorkbenchError(f"states= asks for token positions {short_list(outside)}, outside this run: "
                                 f"it forwards at most {n_tokens} tokens (0..{n_tokens - 1}; the prompt "
                                 "starts at 0).")
    keep = deltanet_bytes(spec, n_tokens, len(layers), len(heads), 0 if tokens is None else len(tokens),
                          capture.inputs)
    if PEAK_FACTOR * keep > capture.max_bytes:
        raise WorkbenchError(
            f"this DeltaNet capture could keep {_bytes(keep)} and use up to {_bytes(PEAK_FACTOR * keep)} while "
            f"it records (up to {n_tokens} tokens, {len(layers)} layers, {len(heads)} heads of "
            f"{spec.linear_key_head_dim}x{spec.linear_value_head_dim} float32 states), over its budget of "
            f"{_bytes(capture.max_bytes)}. Keep states at fewer tokens (states=[...]), layers (layers=[...]) "
            "or heads (heads=[...]), generate fewer tokens, or raise max_bytes.")
    return dict(deltanet=True, state_layers=layers, state_heads=heads, state_tokens=tokens,
                inputs=bool(capture.inputs))


def _indices(values, name: str) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise WorkbenchError(f"{name}={values!r}: give a list of whole numbers.")
    values = list(values)
    bad = [v for v in values if not is_index(v)]
    if bad:
        raise WorkbenchError(f"{name}= takes whole numbers; got {short_list(bad)}.")
    return tuple(dict.fromkeys(int(v) for v in values))


def deltanet_bytes(spec: ModelSpec, n_tokens: int, n_layers: int, n_heads: int, n_state_tokens: int,
                   inputs: bool) -> int:
    """Bytes a DeltaNet capture keeps (float32): the size of the resulting trace. The peak while
    recording is higher (PEAK_FACTOR)."""
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


def build_records(raw: Captured, plan: ProbePlan, spec: ModelSpec, token_ids: np.ndarray,
                  tokens: Sequence[str], n_prompt: int) -> dict:
    """Turn what a probe captured into records. `token_ids` [T] are the forwarded tokens (prompt
    first), `tokens` their text; rows of `raw` follow the same order. Arrays are taken over without
    copies where they already have the record's dtype."""
    n = len(token_ids)
    common = dict(token_ids=np.asarray(token_ids, dtype=np.int64), tokens=np.asarray(list(tokens), dtype=str),
                  phase=np.where(np.arange(n) < n_prompt, "prompt", "decode"))
    out: dict = {}
    if raw.experts is not None:
        experts, weights = raw.experts[:, :n], _f32(raw.weights[:, :n])
        order = np.argsort(-weights, axis=-1, kind="stable")  # largest weight first
        out["routing"] = RoutingTrace(
            experts=np.take_along_axis(experts, order, -1).astype(np.int32),
            weights=np.take_along_axis(weights, order, -1),
            shared_gate=_f32(raw.shared_gate[:, :n]),
            layers=np.asarray(spec.moe_layers, dtype=np.int64), num_experts=spec.num_experts,
            probs=None if raw.router_probs is None else _f32(raw.router_probs[:, :n]), **common)
    if raw.log_decay is not None:
        states, state_tokens = raw.states, raw.state_tokens
        heads = None
        if states is not None:
            keep = state_tokens < n
            if not keep.all():
                states, state_tokens = states[:, keep], state_tokens[keep]
            heads = np.asarray(plan.state_heads, dtype=np.int64)
        out["deltanet"] = DeltaNetTrace(
            layers=np.asarray(spec.linear_layers, dtype=np.int64),
            decay=np.exp(raw.log_decay[:, :n]).astype(np.float32, copy=False),
            beta=_f32(raw.beta[:, :n]), state_norm=_f32(raw.state_norm[:, :n]),
            final_state=_f32(raw.final_state),
            state_layers=np.asarray(plan.state_layers, dtype=np.int64),
            states=states, state_tokens=state_tokens, state_heads=heads,
            queries=_cut(raw.queries, n), keys=_cut(raw.keys, n), values=_cut(raw.values, n), **common)
    if raw.attention is not None:
        t = raw.attention.shape[-1]
        out["attention"] = AttentionTrace(
            probs=_f32(raw.attention), layers=np.asarray(spec.full_attention_layers, dtype=np.int64),
            **{k: v[:t] for k, v in common.items()})
    return out


def _f32(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32, copy=False)


def _cut(x: np.ndarray | None, n: int) -> np.ndarray | None:
    return None if x is None else _f32(x[:, :n])
