"""Speculative decoding on the MLX backend: the MTP layer drafts, the text model verifies.

The rollback is the torch backend's design (`torch_speculation.py`), in mlx-lm's cache:

- recurrent state (`ArraysCache[1]`, `[1, Hv, Dv, Dk]`): during the verify forward, mlx-lm's own
  `gated_delta_update` is called once per token (so each step is exactly plain decoding's) and the
  state after every position is kept; accepting n drafts puts state n back;
- conv window (`ArraysCache[0]`, the last K - 1 inputs): the layer's conv1d input
  (`[1, K - 1 + T, C]`: the window, then the T new inputs) is kept, and the window that ends at
  the last accepted token is cut from it;
- attention (`KVCache`): `trim` drops the rejected keys and values.

The MTP layer has its own KVCache and reads each committed (hidden state, next token) pair once.
"""
from __future__ import annotations

import importlib
import threading
from contextlib import nullcontext

import mlx.core as mx
import numpy as np

from .base import Speculation
from .mlx_mtp import lm_head, text_lm
from .recorder import probe_scope

_MODULES = ("mlx_lm.models.qwen3_5", "mlx_lm.models.qwen3_next")


class MLXSpeculation(Speculation):
    """One generation's speculative state over `cache` (mlx-lm's list of per-layer caches)."""

    def __init__(self, backend, cache, probe=None):
        from mlx_lm.models.cache import KVCache

        self.backend, self.cache, self.head, self.probe = backend, cache, backend.mtp, probe
        self.lm = text_lm(backend.model)
        self.device = backend._device
        layers = backend.model.layers
        self.linear = [i for i, layer in enumerate(layers) if layer.is_linear]
        self.convs = [layers[i].linear_attn.conv1d for i in self.linear]
        self.head_cache = KVCache()
        self.hidden: mx.array | None = None         # [n, H] text-model states the head has not read
        self.following = mx.zeros((0,), dtype=mx.int32)  # [n - 1] the tokens after them
        self._fed = 0
        self._states: list[list[mx.array]] = []     # [layer][position] recurrent states of a verify
        self._inputs: list[mx.array] = []           # [layer] conv1d inputs of a verify
        self._drafts = self.following

    def _run_text(self, ids: mx.array) -> mx.array:
        """ids `[T]` through the text model, extending the cache -> final-normed hidden `[T, H]`."""
        return self.lm.model(ids[None], cache=self.cache)[0]

    def prefill(self, tokens: np.ndarray):
        with mx.stream(self.device):
            ids = mx.array(tokens.astype(np.int32, copy=False))
            with self.probed():
                self.hidden = self._run_text(ids)
            self.following = ids[1:]
            return lm_head(self.lm, self.hidden[-1])

    def draft(self, token: int, k: int):
        head = self.head
        with mx.stream(self.device):
            ids = mx.concatenate([self.following, mx.array([token], dtype=mx.int32)])
            last = head(ids, self.hidden, self.head_cache)[-1:]
            drafts = [mx.argmax(head.logits(last[0]))] if k else []
            for _ in range(1, k):  # chain: the head reads its own output and its last draft
                last = head(drafts[-1].reshape(1).astype(mx.int32), last, self.head_cache)
                drafts.append(mx.argmax(head.logits(last[0])))
            if k > 1:  # the chain's entries are replaced by the verified pairs next time
                self.head_cache.trim(k - 1)
            self._drafts = mx.stack(drafts).astype(mx.int32) if drafts else mx.zeros((0,), dtype=mx.int32)
            return self._drafts

    def verify(self, token: int, drafts):
        with mx.stream(self.device):
            ids = mx.concatenate([mx.array([token], dtype=mx.int32), drafts.astype(mx.int32)])
            self._fed = ids.shape[0]
            self._states, self._inputs = [], []
            with (_recording(self.convs, self._inputs, self._states) if self._fed > 1 else nullcontext(),
                  self.probed()):
                self.hidden = self._run_text(ids)
            return lm_head(self.lm, self.hidden)

    def accept(self, n: int) -> None:
        drop = self._fed - (n + 1)
        if drop:
            for c in self.cache:
                if hasattr(c, "trim"):
                    c.trim(drop)
            for i, layer in enumerate(self.linear):
                window = self._inputs[i].shape[1] - self._fed  # K - 1
                self.cache[layer][0] = mx.contiguous(self._inputs[i][:, n + 1:n + 1 + window])
                self.cache[layer][1] = self._states[i][n]
        self.hidden = self.hidden[:n + 1]
        self.following = self._drafts[:n]
        self._states, self._inputs = [], []
        self.forget(drop, self.hidden)

    def close(self) -> None:
        self._states, self._inputs, self.hidden = [], [], None


_RECORDING: dict[type, type] = {}


def _recording_class(cls: type) -> type:
    """`cls` (a conv1d module class) that also keeps its input in `_wb_inputs` (a list)."""
    sub = _RECORDING.get(cls)
    if sub is None:
        def call(self, x):
            self._wb_inputs.append(x)
            return cls.__call__(self, x)
        sub = _RECORDING[cls] = type(f"Recording{cls.__name__}", (cls,), {"__call__": call})
    return sub


def _recording(convs: list, inputs: list, states: list):
    """While the block runs: `convs` keep their inputs in `inputs` (layer by layer), and this
    thread's gated delta rule goes token by token, appending each layer's states after every
    position (`[T]` of `[1, Hv, Dv, Dk]`) to `states`. The function is swapped on mlx-lm's modules,
    which every model of the architecture shares: inside `probe_scope`, and another thread's
    forward still takes the function it had."""
    def install() -> list:
        undo = []
        for conv in convs:
            cls = type(conv)
            conv.__class__ = _recording_class(cls)
            object.__setattr__(conv, "_wb_inputs", inputs)

            def restore(conv=conv, cls=cls):
                conv.__class__ = cls
                object.__delattr__(conv, "_wb_inputs")
            undo.append(restore)
        owner = threading.get_ident()
        for name in _MODULES:
            module = importlib.import_module(name)
            original = module.gated_delta_update
            module.gated_delta_update = _stepwise(original, owner, states)
            undo.append(lambda m=module, o=original: setattr(m, "gated_delta_update", o))
        return undo
    return probe_scope(install)


def _stepwise(original, owner: int, record: list):
    def stepwise(q, k, v, a, b, A_log, dt_bias, state=None, mask=None, **kwargs):
        if threading.get_ident() != owner or q.shape[1] == 1:
            return original(q, k, v, a, b, A_log, dt_bias, state, mask, **kwargs)
        outs, states = [], []
        for t in range(q.shape[1]):
            step = slice(t, t + 1)
            out, state = original(q[:, step], k[:, step], v[:, step], a[:, step], b[:, step], A_log, dt_bias,
                                  state, None if mask is None else mask[:, step], **kwargs)
            outs.append(out)
            states.append(state)
        record.append(states)
        return mx.concatenate(outs, axis=1), state
    return stepwise
