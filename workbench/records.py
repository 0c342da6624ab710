"""The records a traced run returns (`RoutingTrace`, `DeltaNetTrace`, `AttentionTrace`): numpy only,
one row per token forwarded through the model (prompt, then generated tokens in order), saved to and
loaded from a portable `.npz` file (headers checked before any array is read).
Layouts: routing `[moe_layer, token, k]` (experts sorted by weight, weights renormalised over the
top-k); DeltaNet per-token summaries `[lin_layer, token, head]`; states `[Hv, Dk, Dv]` (torch order).
"""
from __future__ import annotations

import zipfile
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import numpy as np

from .errors import WorkbenchError
from .trace import short_list

LOAD_LIMIT = 4 << 30  # bytes a saved record may expand to when loaded unless told otherwise


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
    positions   [token] int64 place of each row in the request's token sequence, or None (0..n-1);
                set when a serving engine left some tokens out (vLLM's prefix-cache hits)

    A trace from a serving engine (`workbench.connect`) holds expert ids only, in the engine's
    order: its weights and shared gates are NaN (unknown).
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
    positions: np.ndarray | None = None

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
        if self.positions is not None and self.positions.shape != (n,):
            return f"positions are {self.positions.shape}, not [{n}]"
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
