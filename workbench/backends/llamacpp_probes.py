"""How the llama.cpp backend records: llama.cpp's eval callback shows every tensor of the graph by
name (`<name>-<layer>`) and first asks whether the data is wanted; the probe asks only for what its
plan needs, since each wanted tensor splits the graph there. The bookkeeping is the shared
`Recorder`'s, with numpy as its array framework.

Tensors read (llama.cpp's names, from `src/models/qwen35*.cpp` and `src/llama-graph.cpp`):
- routing: `ffn_moe_topk` (expert ids, by weight), `ffn_moe_weights_norm` (renormalised weights),
  `shared_expert_gate_sigmoid`, and `ffn_moe_probs` (the router softmax) when router_probs is asked;
- DeltaNet: `gate` (g = log decay), `beta_sigmoid`, `conv_output_silu` (q, k, v after the causal
  conv), `state_predelta` (the state the layer starts from) and `new_state` (where it ends). The
  states in between are replayed with the workbench's reference equations from those inputs.

llama.cpp's converter stores the value heads of Qwen3.5 in "tiled" order (so ggml can broadcast
key heads); records are put back into the checkpoint's order here.
"""
from __future__ import annotations

import ctypes
from collections import defaultdict

import numpy as np

from ..capture import ProbePlan
from ..errors import WorkbenchError
from ..reference import l2_normalize
from .llamacpp_ggml import GGMLTensor, ggml, readable_type
from .recorder import HookedProbe


def eval_callback(backend):
    """The C callback of the traced context: it hands each tensor to the probe hooked in now."""
    import llama_cpp

    @llama_cpp.ggml_backend_sched_eval_callback
    def callback(tensor, ask, user_data):
        probe = backend.probing
        if probe is None:
            return not ask  # nothing wanted; never abort the graph
        try:
            if ask:
                return probe.wants(tensor)
            probe.receive(tensor)
        except BaseException as exc:  # noqa: BLE001 - an exception must not cross into C
            probe.error = exc
        return True

    return callback


class NumpyOps:
    """The array operations the recorder needs, in numpy (llama.cpp hands tensors to the host)."""

    lazy = False

    def to_numpy(self, x):
        x = np.asarray(x)
        return x.astype(np.float32, copy=False) if x.dtype.kind == "f" else x

    def zeros(self, shape):
        return np.zeros(tuple(shape), dtype=np.float32)

    exp = staticmethod(np.exp)
    stack = staticmethod(np.stack)

    def einsum(self, spec, *arrays):
        return np.einsum(spec, *arrays, optimize=False)

    def repeat_heads(self, x, r):
        return np.repeat(x, r, axis=1) if r > 1 else x

    def frobenius(self, state):
        return np.sqrt((state.astype(np.float64) ** 2).sum(axis=(-2, -1))).astype(np.float32)

    def take(self, x, indices):
        return x[list(indices)]

    def flush(self, arrays) -> None:
        pass


class LlamaCppProbe(HookedProbe):
    def __init__(self, backend, plan: ProbePlan):
        if plan.intervention:
            raise WorkbenchError(
                "routing interventions are not supported on the llama.cpp backend (its graph picks experts "
                "inside one fused step); run them on torch or MLX. Tracing routing and DeltaNet works here.")
        if plan.attention:
            raise WorkbenchError(
                "attention maps are not available on the llama.cpp backend (its attention kernels never form "
                "the probabilities); trace attention on torch or MLX. Routing and DeltaNet traces work here.")
        super().__init__(backend, plan, NumpyOps())
        spec = self.spec
        wanted: dict[str, tuple[str, int]] = {}
        if plan.routing:
            names = ["ffn_moe_topk", "ffn_moe_weights_norm", "shared_expert_gate_sigmoid"]
            names += ["ffn_moe_probs"] if plan.router_probs else []
            wanted.update({f"{n}-{i}": (n, i) for i in spec.moe_layers for n in names})
        if plan.deltanet:
            names = ["gate", "beta_sigmoid", "conv_output_silu", "state_predelta", "new_state"]
            wanted.update({f"{n}-{i}": (n, i) for i in spec.linear_layers for n in names})
        self._wanted = {k.encode(): v for k, v in wanted.items()}
        self._got: dict[tuple[str, int], list[np.ndarray]] = defaultdict(list)
        self.error: BaseException | None = None
        hk, hv = spec.linear_num_key_heads, spec.linear_num_value_heads
        r = hv // hk
        tiled = backend.header.architecture in ("qwen35", "qwen35moe")
        # checkpoint head h = (key head g, copy i) sits at i * Hk + g in llama.cpp's tiled order.
        self._heads = np.array([(h % r) * hk + h // r for h in range(hv)]) if tiled else np.arange(hv)

    def hook_in(self, undo: list) -> None:
        self.backend.probing = self
        undo.append(self._record)   # undone first: turn this call's tensors into records
        undo.append(lambda: setattr(self.backend, "probing", None))

    # ---- the callback's side ---------------------------------------------------------------
    def wants(self, address: int) -> bool:
        return ctypes.string_at(address + _NAME_OFFSET) in self._wanted and readable_type(address)

    def receive(self, address: int) -> None:
        name, data = ggml().read(address)
        self._got[self._wanted[name.encode()]].append(data)

    def raise_pending(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise WorkbenchError(f"the llama.cpp probe failed while reading the graph: {error!r}") from error

    # ---- records ----------------------------------------------------------------------------
    def _record(self) -> None:
        """This forward call's tensors (one piece per micro-batch llama.cpp ran) -> the recorder."""
        got, self._got = self._got, defaultdict(list)
        spec, rec = self.spec, self.recorder
        for layer in spec.moe_layers if self.plan.routing else ():
            pieces = zip(got[("ffn_moe_topk", layer)], got[("ffn_moe_weights_norm", layer)],
                         got[("shared_expert_gate_sigmoid", layer)])
            probs = got.get(("ffn_moe_probs", layer)) or []
            for j, (topk, weights, gate) in enumerate(pieces):
                n = topk.shape[-2]
                rec.advance("routing", layer, n)
                rec.routing(layer, topk.reshape(n, -1).astype(np.int64), weights.reshape(n, -1),
                            gate.reshape(n), probs[j].reshape(n, -1) if probs else None)
        for layer in spec.linear_layers if self.plan.deltanet else ():
            for j, conv in enumerate(got[("conv_output_silu", layer)]):
                self._deltanet(layer, conv, got, j)

    def _deltanet(self, layer: int, conv: np.ndarray, got: dict, j: int) -> None:
        spec, heads = self.spec, self._heads
        hk, hv = spec.linear_num_key_heads, spec.linear_num_value_heads
        dk, dv = spec.linear_key_head_dim, spec.linear_value_head_dim
        conv = conv.reshape(-1, conv.shape[-1])                               # [T, conv channels]
        n = conv.shape[0]
        q = conv[:, :hk * dk].reshape(n, hk, dk)
        k = conv[:, hk * dk:2 * hk * dk].reshape(n, hk, dk)
        v = conv[:, 2 * hk * dk:].reshape(n, hv, dv)[:, heads]
        eps = spec.rms_norm_eps
        g = got[("gate", layer)][j].reshape(n, hv)[:, heads]
        beta = got[("beta_sigmoid", layer)][j].reshape(n, hv)[:, heads]
        initial = _state(got.get(("state_predelta", layer)), j, hv, dk, dv, heads)
        final = _state(got.get(("new_state", layer)), j, hv, dk, dv, heads)
        self.recorder.deltanet(layer, g, beta, l2_normalize(q, eps).astype(np.float32),
                               l2_normalize(k, eps).astype(np.float32), v, initial, final)


def _state(pieces, j: int, hv: int, dk: int, dv: int, heads) -> np.ndarray | None:
    """llama.cpp's state tensor (ne [Dk, Dv, Hv, 1], i.e. numpy [1, Hv, Dv, Dk]) as [Hv, Dk, Dv] in
    checkpoint head order."""
    if not pieces or j >= len(pieces):
        return None
    return np.ascontiguousarray(pieces[j].reshape(-1, hv, dv, dk)[0][heads].swapaxes(-1, -2))


_NAME_OFFSET = GGMLTensor.name.offset
