"""llama.cpp backend: GGUF files (F32 .. Q4 and below) through llama-cpp-python's C API, driven
by the workbench's own decode loop and sampler.

- One llama.cpp context holds the caches: each generation leases one of its sequences (KV of the
  full-attention layers, conv and recurrent state of the DeltaNet layers), released when the
  generation's cache is dropped.
- Traced runs use a second context, made on first use, whose eval callback shows the probe every
  graph tensor; the first context has no callback, so untraced decoding pays nothing for tracing.
- `offload_experts=N` keeps the routed experts of the first N layers in system RAM (the tensor
  buffer-type overrides llama.cpp's `--n-cpu-moe N` makes) and the rest on the GPU.
"""
from __future__ import annotations

import ctypes
import gc
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendNotInstalled, WorkbenchError
from ..gguf.reader import GGUFHeader
from ..sampling import SamplingParams
from ..spec import ModelSpec
from . import host_memory
from .base import Backend, Sampler
from .llamacpp_amx import cpu_has_amx, keep_repack_off

try:
    import llama_cpp
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise BackendNotInstalled(
        f"the llama.cpp backend needs llama-cpp-python ({exc.name} is missing): pip install "
        "'qwen-workbench[gguf]' (it compiles llama.cpp from source: several minutes; see the README "
        "for the CUDA and Metal switches).") from None

SEQUENCES = 4           # generations that can hold a cache at the same time (per context)
DEFAULT_CONTEXT = 32_768
_EXPERT_PATTERN = r"blk\.{}\.ffn_(up|down|gate|gate_up)_(ch|)exps"   # llama.cpp common's --n-cpu-moe


# llama_get_logits_ith returning the address as an int (the binding's version builds a ctypes pointer).
_logits_ith = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32)(
    ("llama_get_logits_ith", llama_cpp.llama_cpp._lib))


class _BuftOverride(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


# Tensors llama.cpp placed by a buffer-type override, from its own log of the last load.
_OVERRIDDEN: list[str] = []


def quiet_logs() -> None:
    """llama.cpp logs every load step to stderr; keep errors only (and note which tensors an
    override placed, which llama.cpp says at debug level)."""
    @llama_cpp.llama_log_callback
    def log(level, text, user_data):
        line = text.decode(errors="replace")
        if "buffer type overridden to" in line and len(_OVERRIDDEN) < 100_000:
            _OVERRIDDEN.append(line.split()[1])
        if level == 4:  # GGML_LOG_LEVEL_ERROR
            import sys
            sys.stderr.write(line)
    llama_cpp.llama_log_set(log, None)
    quiet_logs.callback = log  # kept alive: llama.cpp holds the pointer


@dataclass
class Offload:
    """What `offload_experts` asked for and what reached llama.cpp."""

    requested: int | None
    patterns: tuple[str, ...] = ()
    note: str = ""
    placed: tuple[str, ...] = ()   # the tensors llama.cpp says the overrides put in system RAM


class _Context:
    """One llama.cpp context and the sequences it lends out."""

    def __init__(self, backend: "LlamaCppBackend", traced: bool):
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = backend.context
        params.n_batch = min(backend.context, 2048)
        params.n_ubatch = min(backend.context, 512)
        params.n_seq_max = SEQUENCES
        params.kv_unified = True           # every sequence may use the whole context
        params.n_threads = params.n_threads_batch = backend.threads
        params.no_perf = True
        if backend.full_precision:
            # llama.cpp's defaults keep K and V in f16 and its CPU flash attention rounds Q to f16
            # (~1e-4 drift per attention layer); an F32/BF16 file is for exact comparisons, so it gets
            # a cache of its own precision and the plain attention path.
            params.type_k = params.type_v = backend.kv_type
            params.flash_attn_type = 0   # LLAMA_FLASH_ATTN_TYPE_DISABLED
        if traced:
            from .llamacpp_probes import eval_callback
            self.callback = eval_callback(backend)   # kept alive with the context
            params.cb_eval = self.callback
        self.ptr = llama_cpp.llama_init_from_model(backend.model_ptr, params)
        if not self.ptr:
            raise WorkbenchError(f"llama.cpp could not make a context of {backend.context} tokens (out of "
                                 "memory?): load with a smaller context=.")
        self.memory = llama_cpp.llama_get_memory(self.ptr)
        self.n_batch = params.n_batch
        self.free = list(range(SEQUENCES))
        self.dirty: list[int] = []          # released by a dropped cache; cleared before reuse
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.views: dict[int, np.ndarray] = {}   # numpy views of llama.cpp's logits rows, by address

    def lease(self) -> int:
        if not self.free and not self.dirty:
            gc.collect()  # an abandoned stream's cache may only be waiting for the collector
        if self.dirty:
            released = list(self.dirty)
            # Emptied in place: every cache's finalizer appends to this very list (a new list would
            # lose the sequences released after it, and with them their share of the context).
            del self.dirty[:len(released)]
            for seq in released:
                llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
            self.free += released
        if not self.free:
            raise WorkbenchError(
                f"the llama.cpp backend holds at most {SEQUENCES} generations at once and all are in use: "
                "finish or drop a running stream (stream.stop() and let it go) before starting another.")
        return self.free.pop(0)

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ptr)


@dataclass
class LlamaCache:
    """A generation's cache: one sequence of one context, and how many tokens it holds."""

    context: _Context
    seq: int
    pos: int = 0
    _release: Any = field(default=None, repr=False)


@dataclass
class _SequenceState:
    """A prompt-cache snapshot: one sequence's state as llama.cpp serialises it, and its length."""

    data: Any        # ctypes uint8 array
    size: int
    pos: int


class LlamaCppBackend(Backend):
    name = "llamacpp"
    traces_attention = False   # its attention kernels never form the probabilities
    intervenes = False         # expert choice happens inside llama.cpp's graph

    def __init__(self, model_ptr, spec: ModelSpec, header: GGUFHeader, context: int, threads: int,
                 gpu_layers: int, offload: Offload, keep_alive: list):
        self.model_ptr, self.spec, self.header = model_ptr, spec, header
        self.context, self.threads, self.gpu_layers, self.offload = context, threads, gpu_layers, offload
        self._keep_alive = keep_alive
        self.device = "gpu" if gpu_layers else "cpu"
        self.dtype = header.file_type
        self.full_precision = header.file_type in ("F32", "BF16")
        self.kv_type = {"F32": 0, "BF16": 30}.get(header.file_type, 1)   # ggml type ids; F16 otherwise
        self.vocab = llama_cpp.llama_model_get_vocab(model_ptr)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.probing = None          # the probe hooked in for the current forward (llamacpp_probes)
        self._plain = _Context(self, traced=False)
        self._traced: _Context | None = None
        self._contexts = [self._plain]   # freed, then the model, when the backend is collected
        weakref.finalize(self, _free, self._contexts, model_ptr)

    @classmethod
    def load(cls, path: Path, spec: ModelSpec, device: str | None, dtype: str | None, *,
             header: GGUFHeader, context: int | None = None, offload_experts=None,
             threads: int | None = None) -> "LlamaCppBackend":
        if dtype is not None and dtype.lower() not in (header.file_type.lower(), spec.dtype):
            raise WorkbenchError(
                f"dtype={dtype!r} does not apply to a GGUF file: its weights are stored as {header.file_type}. "
                "Load another GGUF file, or make one with workbench.quantize(..., 'gguf-q8_0', ...).")
        gpu = llama_cpp.llama_supports_gpu_offload()
        devices = {None: gpu, "auto": gpu, "cpu": False, "gpu": True, "cuda": True, "metal": True}
        key = device.split(":")[0].lower() if isinstance(device, str) else device
        if key not in devices:
            raise WorkbenchError(f"device={device!r} is not a llama.cpp device; use 'cpu' or 'gpu' "
                                 "(CUDA or Metal, whichever this llama.cpp was built with).")
        if devices[key] and not gpu:
            raise WorkbenchError("device='gpu': this llama-cpp-python was built without GPU support. "
                                 "Rebuild it with CMAKE_ARGS='-DGGML_CUDA=on' (or -DGGML_METAL=on), or "
                                 "use device='cpu'.")
        on_gpu = bool(devices[key])
        limit = spec.max_position_embeddings
        context = min(limit, DEFAULT_CONTEXT) if context is None else context
        if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or not 16 <= context <= limit:
            raise WorkbenchError(f"context={context!r} is invalid: give a number of tokens between 16 and "
                                 f"the model's {limit}.")
        threads = threads or max(1, os.cpu_count() or 1)
        offload, keep_alive = _offload(offload_experts, spec, on_gpu)
        llama_cpp.llama_backend_init()
        quiet_logs()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = -1 if on_gpu else 0
        if on_gpu and isinstance(device, str) and device.partition(":")[2].isdigit():
            params.main_gpu = int(device.partition(":")[2])   # "cuda:1": that GPU
        params.use_mmap = True
        if not on_gpu:
            keep_repack_off(params)  # llama.cpp's AMX matmul crashes (llamacpp_amx.py)
        if keep_alive:
            params.tensor_buft_overrides = ctypes.cast(keep_alive[0], ctypes.c_void_p)
        _OVERRIDDEN.clear()
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        offload.placed = tuple(_OVERRIDDEN)
        if not model:
            raise WorkbenchError(
                f"llama.cpp could not load {path.name} (its log above says why): the file may be damaged, "
                "from a newer llama.cpp than llama-cpp-python "
                f"{llama_cpp.__version__}, or too large for this machine's memory.")
        try:
            backend = cls(model, spec, header, int(context), threads, -1 if on_gpu else 0, offload, keep_alive)
        except BaseException:
            llama_cpp.llama_model_free(model)  # no context could be made: the weights go too
            raise
        backend.warm_up()
        return backend

    @property
    def kernels(self) -> dict[str, str]:
        from ..gguf.metadata import weight_types
        from .llamacpp_ggml import ggml

        devices = ggml().devices()
        where = ", ".join(f"{name} ({kind})" for name, _, kind in devices)
        weights = weight_types(self.header)
        return {
            "gated_delta_rule": "ggml gated_delta_net (llama.cpp)",
            "causal_conv1d": "ggml ssm_conv (llama.cpp)",
            "attention": (f"llama.cpp attention (ggml), KV cache {'F32' if self.kv_type == 0 else 'BF16'}"
                          if self.full_precision else "llama.cpp attention (flash attention where it helps), KV cache F16"),
            "moe": ("ggml mul_mat_id (llama.cpp)" if self.spec.is_moe else "dense MLP (ggml)"),
            "decode": self.decode_path(None),
            "ggml_backends": where,
            "weights": ", ".join(f"{group} {kind}" for group, kind in weights.items()),
            "offload": self.offload.note,
            **({"repack": "off: AMX CPU, plain CPU buffers (llama.cpp#20824)"}
               if self.gpu_layers == 0 and cpu_has_amx() else {}),
        }

    # ---- caches -----------------------------------------------------------------------------
    def new_cache(self, capacity: int | None = None, fast: bool = True) -> LlamaCache:
        with self.lock:
            context = self._plain if fast else self.traced_context()
            cache = LlamaCache(context, context.lease())
        cache._release = weakref.finalize(cache, context.dirty.append, cache.seq)
        return cache

    def traced_context(self) -> _Context:
        if self._traced is None:
            self._traced = _Context(self, traced=True)
            self._contexts.append(self._traced)
        return self._traced

    # ---- prompt-cache snapshots: a sequence's state (KV and recurrent) as bytes on the host --------
    def can_snapshot(self, cache) -> bool:
        return isinstance(cache, LlamaCache) and cache.context is self._plain

    def snapshot(self, cache: LlamaCache, last_use: bool = False) -> "_SequenceState":
        # llama.cpp's own save/restore of one sequence (what llama-server's slot save uses): bytes
        # on the host, so a kept snapshot holds none of the context's few sequences.
        with self.lock:
            ctx = cache.context
            size = llama_cpp.llama_state_seq_get_size(ctx.ptr, cache.seq)
            data = (ctypes.c_uint8 * size)()
            written = llama_cpp.llama_state_seq_get_data(ctx.ptr, data, size, cache.seq)
            if written == 0:
                raise WorkbenchError("llama.cpp could not save the sequence's state for the prompt cache.")
        if last_use:
            cache._release()  # the sequence goes back to the context now
        return _SequenceState(data, written, cache.pos)

    def restore(self, snapshot: "_SequenceState", capacity=None) -> LlamaCache:
        cache = self.new_cache()
        with self.lock:
            read = llama_cpp.llama_state_seq_set_data(cache.context.ptr, snapshot.data, snapshot.size, cache.seq)
        if read == 0:
            cache._release()
            raise WorkbenchError("llama.cpp could not restore a prompt-cache snapshot into a sequence.")
        cache.pos = snapshot.pos
        return cache

    def snapshot_bytes(self, snapshot: "_SequenceState") -> int:
        return snapshot.size

    def decode_path(self, cache) -> str:
        return "llama.cpp decode (one sequence of a shared context)"

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, tokens, cache: LlamaCache) -> np.ndarray:
        ctx = cache.context
        if isinstance(tokens, int):  # a decode step: the sampler's token (the common case, kept short)
            self._decode_one(ctx, tokens, cache)
            return self._logits(ctx, 0)
        ids = np.atleast_1d(np.asarray(tokens, dtype=np.int64))
        self._room(cache, len(ids))
        for start in range(0, len(ids), ctx.n_batch):
            chunk = ids[start:start + ctx.n_batch]
            self._decode(ctx, chunk, cache.seq, cache.pos, last_only=True)
            cache.pos += len(chunk)
        return self._logits(ctx, -1)

    def _room(self, cache: LlamaCache, n: int) -> None:
        if cache.pos + n > self.context:
            raise WorkbenchError(f"the llama.cpp context holds {self.context} tokens and this run needs "
                                 f"{cache.pos + n}: load with a larger context= (the model allows "
                                 f"{self.spec.max_position_embeddings}).")

    def _decode_one(self, ctx: _Context, token: int, cache: LlamaCache) -> None:
        self._room(cache, 1)
        batch = ctx.batch
        batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.logits[0] = token, cache.pos, 1, True
        batch.seq_id[0][0] = cache.seq
        batch.n_tokens = 1
        self._check(llama_cpp.llama_decode(ctx.ptr, batch))
        cache.pos += 1

    def logits(self, token_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(token_ids, dtype=np.int64)
        cache = self.new_cache(fast=self.probing is None)
        out = np.empty((len(ids), self.spec.vocab_size), dtype=np.float32)
        try:
            ctx = cache.context
            # Every row's logits come back: batches of 256 keep llama.cpp's output buffer at
            # 256 x vocab floats (a quarter GB for Qwen3.5's 248k vocabulary), not n_batch x vocab.
            step = min(ctx.n_batch, 256)
            for start in range(0, len(ids), step):
                chunk = ids[start:start + step]
                self._decode(ctx, chunk, cache.seq, cache.pos, last_only=False)
                for i in range(len(chunk)):
                    out[start + i] = self._logits(ctx, i)  # copied into `out`
                cache.pos += len(chunk)
        finally:
            cache._release()
        return out

    def _decode(self, ctx: _Context, ids: np.ndarray, seq: int, pos: int, last_only: bool) -> None:
        batch, n = ctx.batch, len(ids)
        for i, token in enumerate(ids.tolist()):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos + i, 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = (i == n - 1) or not last_only
        batch.n_tokens = n
        self._check(llama_cpp.llama_decode(ctx.ptr, batch))

    def _check(self, status: int) -> None:
        probe = self.probing
        if probe is not None:
            probe.raise_pending()
        if status != 0:
            raise WorkbenchError(f"llama.cpp's decode failed with status {status} "
                                 + ("(no room left in the context: load with a larger context=)." if status == 1
                                    else "(see its log above)."))

    def _logits(self, ctx: _Context, i: int) -> np.ndarray:
        """Row `i` of the last decode's logits (-1: the last row) as a numpy view of llama.cpp's own
        buffer: like a device array, valid until the next forward on this context (the sampler reads
        it at once; `logits()` copies)."""
        address = _logits_ith(ctx.ptr, i)
        view = ctx.views.get(address)
        if view is None:
            if len(ctx.views) > 8:  # a decode step reads one or two rows; a long logits() run is not kept
                ctx.views.clear()
            view = ctx.views[address] = np.frombuffer(
                (ctypes.c_float * self.n_vocab).from_address(address), dtype=np.float32)[: self.spec.vocab_size]
        return view

    # ---- probes and sampling ------------------------------------------------------------------
    def probe(self, plan):
        from .llamacpp_probes import LlamaCppProbe
        return LlamaCppProbe(self, plan)

    def make_sampler(self, params: SamplingParams) -> Sampler:
        from .numpy_sampler import make_sampler
        return make_sampler(params, self.spec.vocab_size)

    def tokenize(self, text: str, special: bool = True) -> np.ndarray:
        """llama.cpp's own tokenization of `text` (control tokens parsed when `special`)."""
        data = text.encode()
        room = len(data) + 16
        out = (llama_cpp.llama_token * room)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), out, room, False, special)
        return np.asarray(out[:n], dtype=np.int64)

    # ---- host side ----------------------------------------------------------------------------
    def warm_up(self) -> None:
        with self.lock:
            super().warm_up()

    def to_numpy(self, value) -> np.ndarray:
        value = np.array(value)  # a copy: logits are views of llama.cpp's buffer
        return value.astype(np.float32, copy=False) if value.dtype.kind == "f" else value

    def to_int(self, token) -> int:
        return int(token)

    def synchronize(self) -> None:
        pass  # llama_decode returns when its graph has run; logits are read on the host

    def reset_peak_memory(self) -> None:
        host_memory.reset_peak()

    def peak_memory(self) -> int | None:
        return None if self.gpu_layers else host_memory.peak_bytes()

    def weight_bytes_per_token(self) -> float:
        from ..gguf.metadata import bytes_per_token
        return bytes_per_token(self.header)

    def hardware_name(self) -> str:
        from .llamacpp_ggml import ggml
        gpus = [desc for _, desc, kind in ggml().devices() if kind != "CPU"]
        return gpus[0] if self.gpu_layers and gpus else super().hardware_name()


def _offload(offload_experts, spec: ModelSpec, on_gpu: bool) -> tuple[Offload, list]:
    """The tensor buffer-type overrides that keep the routed experts of the first N layers in RAM."""
    from ..planner.plan import OffloadPlan

    if offload_experts is None:
        return Offload(None, note="none requested" if on_gpu else "CPU only: every weight is in system RAM"), []
    if isinstance(offload_experts, OffloadPlan):
        if offload_experts.problem:
            raise WorkbenchError(f"this offload plan cannot run: {offload_experts.problem}.")
        offload_experts = offload_experts.cpu_expert_layers
    n = offload_experts
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= spec.num_layers:
        raise WorkbenchError(f"offload_experts={offload_experts!r} is invalid: give how many layers keep their "
                             f"routed experts in system RAM, 0..{spec.num_layers}, or a workbench.plan(...).offload.")
    if not spec.is_moe:
        raise WorkbenchError("offload_experts applies to mixture-of-experts models; this one is dense (offload "
                             "whole layers by loading on device='cpu', or use a smaller quantization).")
    patterns = tuple(_EXPERT_PATTERN.format(i) for i in range(int(n)))
    if not n:
        return Offload(0, note="none requested"), []
    # Passed on a CPU too: there the override moves nothing (every weight is already in system RAM),
    # and llama.cpp's log still says which tensors it matched.
    from .llamacpp_ggml import ggml
    buft = ggml().cpu_buffer_type()
    encoded = [p.encode() for p in patterns]
    array = (_BuftOverride * (len(patterns) + 1))(*[_BuftOverride(p, buft) for p in encoded], _BuftOverride(None, None))
    note = (f"routed experts of layers 0..{n - 1} in system RAM, everything else on the GPU" if on_gpu else
            f"nothing to move: CPU only, the experts of layers 0..{n - 1} were already in system RAM")
    return Offload(int(n), patterns, note), [array, encoded]


def _free(contexts: list, model_ptr) -> None:
    for context in contexts:
        context.close()
    llama_cpp.llama_model_free(model_ptr)
