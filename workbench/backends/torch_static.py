"""The torch backend's fast decode step: a static cache, and on CUDA one CUDA-graph replay per token.

transformers' own decoder layers compute the step, so it computes what the reference path
(`DynamicCache`) computes; what changes is where things live. transformers' `StaticCache` keeps
every buffer at a fixed address: keys/values `[1, Hkv, capacity, D]` for full attention, the conv
state `[1, conv_dim, K]` and recurrent state `[1, Hv, Dk, Dv]` for Gated DeltaNet, and each layer's
fill level as a device tensor. The position, the attention mask over all `capacity` slots and
the token are device tensors too, so the step has no host synchronisation and no shape that
changes: on CUDA it is captured once per decoder and replayed for every token (gpt-fast's recipe
without torch.compile). Prefill runs the ordinary forward (chunked kernels) into the same cache.

A decoder is reused by later generations while no earlier one still holds it (see `StaticPool`);
its capacity is a power of two, so a graph serves many prompt lengths.
"""
from __future__ import annotations

import threading
import weakref

import numpy as np
import torch

MIN_CAPACITY = 256
# Architectures whose text model has the layout this step walks (embed, rotary, layers, norm).
STATIC_ARCHITECTURES = ("qwen3_5", "qwen3_5_moe")


def bucket(tokens: int, limit: int) -> int:
    """The capacity for `tokens`: the next power of two from MIN_CAPACITY, at most `limit`."""
    capacity = MIN_CAPACITY
    while capacity < tokens:
        capacity *= 2
    return max(tokens, min(capacity, limit))


class StaticDecoder:
    """A static cache plus the one-token step over it (captured as a CUDA graph on CUDA).

    `prefill(ids)` appends a run of tokens through the ordinary forward; `step(token)` appends one
    token (a device scalar from the sampler) and returns the logits `[vocab]`, a buffer the next
    step overwrites (the sampler reads it first: the device runs work in order)."""

    def __init__(self, model, device: torch.device, capacity: int, graphs: bool, cache_arg: str = "cache"):
        from transformers import StaticCache

        self.model, self.device, self.capacity = model, device, capacity
        self.cache_arg = cache_arg  # transformers 5.24 renamed past_key_values= to cache=
        self.text = model.model
        self.full = [t == "full_attention" for t in model.config.layer_types]
        self.cache = StaticCache(config=model.config, max_cache_len=capacity)
        self.length = 0  # tokens in the cache, as the host knows it (prefill and step both count)
        self.position = torch.zeros((), dtype=torch.long, device=device)
        self.token = torch.zeros((1, 1), dtype=torch.long, device=device)
        self.slots = torch.arange(capacity, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.capture_error: str | None = None  # why a graph could not be captured (the step then runs eagerly)
        self.logits: torch.Tensor | None = None
        with torch.inference_mode():
            # A short prefill allocates every buffer (transformers allocates on first use), so the
            # addresses exist before a graph is captured over them.
            self.prefill(np.zeros(2, dtype=np.int64))
            if graphs:
                try:
                    self._capture()
                except Exception as exc:  # a kernel that syncs with the host cannot be captured
                    self.graph, self.capture_error = None, f"{type(exc).__name__}: {exc}"
        self.reset()

    # ---- the step ---------------------------------------------------------------------------
    def _forward_one(self) -> torch.Tensor:
        """One token through every layer: reads `self.token` and `self.position`, writes the cache."""
        h = self.text.embed_tokens(self.token)                          # [1, 1, hidden]
        rope = self.text.rotary_emb(h, self.position.view(1, 1))
        # Every slot up to the new one is visible; the rest of the buffer is masked out.
        mask = (self.slots <= self.position).view(1, 1, 1, -1)          # [1, 1, 1, capacity]
        for layer, full in zip(self.text.layers, self.full):
            h = layer(h, position_embeddings=rope, attention_mask=mask if full else None,
                      **{self.cache_arg: self.cache})
        self.position.add_(1)
        return self.model.lm_head(self.text.norm(h))[0, -1]

    def _capture(self) -> None:
        # Warm up on a side stream (cuBLAS and allocator set-up must not be captured), then record.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._forward_one()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._forward_one()

    # ---- what the backend calls -----------------------------------------------------------------
    def reset(self) -> None:
        """Empty the cache in place (the captured graph keeps pointing at the same buffers)."""
        with torch.inference_mode():
            self.cache.reset()
            self.position.zero_()
        self.length = 0

    def load(self, saved, length: int) -> None:
        """Take the state of another decoder's cache (`StaticSnapshot.cache`, holding `length`
        tokens), copied into this decoder's own buffers: full-attention keys and values up to
        `length` (the two buffers may differ in capacity), the DeltaNet states whole, and each
        layer's fill level and flags."""
        self.room(length)
        with torch.inference_mode():
            _copy_into(self.cache, saved, length)
            self.position.fill_(length)
        self.length = length

    def room(self, tokens: int) -> None:
        if self.length + tokens > self.capacity:
            raise RuntimeError(f"static cache of {self.capacity} tokens is full ({self.length} used, "
                               f"{tokens} more asked): make the cache with a larger capacity")

    def prefill(self, ids: np.ndarray) -> torch.Tensor:
        """Append `ids` `[T]` with the ordinary forward; the last position's logits `[vocab]`."""
        self.room(len(ids))
        tokens = torch.as_tensor(ids.astype(np.int64, copy=False), device=self.device)[None]
        with torch.inference_mode():
            out = self.model(input_ids=tokens, use_cache=True, logits_to_keep=1, **{self.cache_arg: self.cache})
            self.position.add_(len(ids))
        self.length += len(ids)
        return out.logits[0, -1]

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Append one token (a device scalar); the next logits `[vocab]`."""
        self.room(1)
        with torch.inference_mode():
            self.token.copy_(token.view(1, 1))
            if self.graph is not None:
                self.graph.replay()
                logits = self.logits
            else:
                logits = self._forward_one()
        self.length += 1
        return logits


class StaticPool:
    """The decoders of one backend. `lease(tokens)` hands out an emptied decoder with room for
    `tokens`; a decoder is handed out again only once nothing holds its previous lease (so two
    generations that overlap, e.g. from two threads, never share buffers)."""

    def __init__(self, model, device: torch.device, limit: int, cache_arg: str):
        self.model, self.device, self.limit, self.cache_arg = model, device, limit, cache_arg
        self.graphs = device.type == "cuda"
        self.capture_error: str | None = None
        self._decoders: list[StaticDecoder] = []
        self._leased: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def lease(self, tokens: int) -> "StaticLease":
        with self._lock:  # two threads asking at once must not be handed the same idle decoder
            return self._lease(tokens)

    def _lease(self, tokens: int) -> "StaticLease":
        idle = self._idle()
        fitting = [d for d in idle if d.capacity >= tokens]
        if fitting:
            decoder = fitting[0]
        else:
            decoder = StaticDecoder(self.model, self.device, bucket(tokens, self.limit), self.graphs,
                                    self.cache_arg)
            if decoder.capture_error:
                self.graphs, self.capture_error = False, decoder.capture_error
            # Idle decoders too small for this request are dropped (memory stays bounded);
            # decoders still in use stay, to be handed out again once free.
            self._decoders = [d for d in self._decoders if d not in idle] + [decoder]
        decoder.reset()
        lease = StaticLease(decoder)
        self._leased[lease] = decoder
        return lease

    def _idle(self) -> list[StaticDecoder]:
        """Decoders no live lease holds, smallest first."""
        held = {id(d) for d in self._leased.values()}
        return sorted((d for d in self._decoders if id(d) not in held), key=lambda d: d.capacity)


class StaticLease:
    """What `TorchBackend.new_cache` returns on the fast path: a handle on a decoder while in use."""

    def __init__(self, decoder: StaticDecoder):
        self.decoder = decoder


class StaticSnapshot:
    """A prompt-cache entry of the fast path: a copy of a decoder's `StaticCache` and its length."""

    def __init__(self, cache, length: int):
        self.cache, self.length = cache, length


_FIXED = ("max_cache_len", "device", "dtype", "batch_size", "num_heads", "k_head_dim", "v_head_dim",
          "conv_kernel_size", "max_batch_size", "layer_class_to_replicate")


def _copy_into(dst, src, length: int, depth: int = 0) -> None:
    """Copy `src`'s values into `dst`, an object of the same structure: tensors in place (a sequence
    axis of another capacity is copied up to `length`), simple values (flags, fill levels) as they are."""
    if depth > 4:
        return
    if isinstance(dst, torch.Tensor):
        if dst.shape == src.shape:
            dst.copy_(src)
        else:  # [batch, heads, capacity, dim]: the first `length` slots
            dst.zero_()
            dst[:, :, :length].copy_(src[:, :, :length])
        return
    if isinstance(dst, dict):
        for key in dst:
            if isinstance(dst[key], torch.Tensor) or hasattr(dst[key], "__dict__"):
                _copy_into(dst[key], src[key], length, depth + 1)
            else:
                dst[key] = src[key]
        return
    if isinstance(dst, (list, tuple)):
        for d, s in zip(dst, src):
            _copy_into(d, s, length, depth + 1)
        return
    for name, value in vars(dst).items():
        if name in _FIXED:
            continue
        other = getattr(src, name)
        if isinstance(value, (torch.Tensor, dict, list, tuple)) or hasattr(value, "__dict__"):
            _copy_into(value, other, length, depth + 1)
        else:
            setattr(dst, name, other)
