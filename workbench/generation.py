"""The decode loop shared by every backend, and its results.

The loop is the same on every backend: one prefill forward over the prompt, then one forward per
new token, each feeding the token just sampled. Sampling runs on the device (the backend's
`Sampler`); the host reads one int per step, which streaming and stop checks need anyway. The
next step is queued before that int is read, so an asynchronous device (CUDA, MLX) computes step
t+1 while the host decodes the text of step t, as mlx-lm's own loop does.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from .errors import WorkbenchError
from .sampling import SamplingParams

if TYPE_CHECKING:
    from .backends.base import Backend
    from .tokenizer import Tokenizer


@dataclass
class Stats:
    """Timings of one generation. Prefill time is to the first sampled token (TTFT)."""

    prompt_tokens: int
    new_tokens: int
    time_to_first_token_s: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float   # tokens after the first / their time; nan with < 2 tokens
    total_s: float
    peak_memory_bytes: int | None  # device peak during this generation; None where unknown
    decode_path: str = ""          # what ran the decode steps (e.g. the reference path while tracing)
    inter_token_s: Any = None      # [chunk - 1] seconds between streamed chunks (a server's stream); None in-process

    def __str__(self) -> str:
        mem = "n/a" if self.peak_memory_bytes is None else f"{self.peak_memory_bytes / 2**20:,.1f} MiB"
        return (f"prompt {self.prompt_tokens} tok, new {self.new_tokens} tok | TTFT "
                f"{self.time_to_first_token_s * 1e3:,.1f} ms | prefill {self.prefill_tokens_per_s:,.1f} tok/s"
                f" | decode {self.decode_tokens_per_s:,.1f} tok/s | peak {mem}")


@dataclass
class Generation:
    """What `Model.generate` returns. `text` is the answer; `thinking` the reasoning part, if any."""

    text: str
    token_ids: np.ndarray         # [new] int64, the generated ids (stop token included)
    prompt_ids: np.ndarray        # [prompt] int64
    finish_reason: str            # "stop" (EOS or a stop string) | "length" | "interrupted"
    stats: Stats
    thinking: str | None = None   # None when the prompt did not ask the model to think
    raw_text: str = ""            # the full decoded output, thinking markup included
    routing: Any = None           # RoutingTrace when asked for with trace=Trace(routing=True)
    deltanet: Any = None          # DeltaNetTrace when asked for with trace=Trace(deltanet=...)
    attention: Any = None         # AttentionTrace when asked for with trace=Trace(attention=True)
    tool_calls: Any = None        # [ToolCall] a server parsed itself (structured tool_calls); None in-process

    def __str__(self) -> str:
        return self.text


@dataclass
class StepEvent:
    """One new token as the loop produces it."""

    token_id: int
    text: str               # new text made complete by this token ('' while a character is split)


class DecodeLoop:
    """Runs prefill + decode on a backend and yields `StepEvent`s; when done, `text`,
    `token_ids`, `finish_reason` and `stats` hold the result.

    Stops on an EOS id, a stop string (the text is cut before it), `max_new_tokens`, or
    `interrupt()` (finish_reason "interrupted"; the model stays usable).
    """

    def __init__(self, backend: "Backend", tokenizer: "Tokenizer", prompt_ids: np.ndarray,
                 max_new_tokens: int, sampling: SamplingParams, stop: Sequence[str] = (),
                 eos_ids: Sequence[int] = (), probe: Any = None):
        self.backend, self.tokenizer = backend, tokenizer
        self.probe = probe  # hooked into the model for this loop's own forward calls only
        self.prompt_ids = prompt_ids
        self.max_new_tokens = max_new_tokens
        self.sampling = sampling
        self.stop = tuple(stop)
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        self.token_ids: list[int] = []
        self.text = ""
        self.finish_reason = "length"
        self.stats: Stats | None = None
        self._interrupted = False
        self._hit_stop_string = False
        self._started = False

    def interrupt(self) -> None:
        """End the run: before it starts, no token is made; during it, after the current token."""
        self._interrupted = True

    def __iter__(self) -> Iterator[StepEvent]:
        if self._started:
            raise WorkbenchError("this generation has already run: iterate a stream once (call "
                                 "model.stream again for a new run; stream.generation holds the result).")
        self._started = True
        return self._run()

    def _forward(self, tokens: Any, cache: Any, sampler) -> Any:
        """One forward and its sampled token, queued; under the model's lock (other threads'
        generations interleave between steps, never inside one)."""
        backend = self.backend
        with backend.lock:
            token = sampler(backend.step(tokens, cache, self.probe))
            backend.queue(token, self.probe)
        return token

    def _read(self, token: Any) -> int:
        with self.backend.lock:
            return self.backend.to_int(token)

    def _run(self) -> Iterator[StepEvent]:
        from .tokenizer import StreamDecoder

        backend = self.backend
        decoder = StreamDecoder(self.tokenizer)
        backend.reset_peak_memory()
        # A probe reads the model as the reference path runs it, so tracing takes that path.
        cache = backend.new_cache(capacity=len(self.prompt_ids) + self.max_new_tokens, fast=self.probe is None)
        self._decode_path = backend.decode_path(cache)
        start = time.perf_counter()
        if self._interrupted:  # stopped before it began: nothing runs
            self.finish_reason = "interrupted"
            self._finish(start, start, start)
            return
        sampler = backend.make_sampler(self.sampling)
        token = self._forward(self.prompt_ids, cache, sampler)
        first_id = self._read(token)  # read before queuing step 2, so TTFT is prefill alone
        first_at = last_at = time.perf_counter()
        held = ""  # decoded text that may be the start of a stop string
        for n in range(1, self.max_new_tokens + 1):
            # Queue step n+1 before reading token n: the device works while the host decodes.
            upcoming = None
            if n < self.max_new_tokens and not self._interrupted:
                upcoming = self._forward(token, cache, sampler)
            if n == 1:
                token_id = first_id
            else:
                token_id = self._read(token)
                last_at = time.perf_counter()
            self.token_ids.append(token_id)
            if token_id in self.eos_ids:
                self.finish_reason = "stop"
                break
            emit, held, hit = self._split_at_stop(held + decoder.push(token_id))
            if emit:
                self.text += emit
                yield StepEvent(token_id, emit)
            if hit:
                self.finish_reason = "stop"
                break
            if self._interrupted:
                self.finish_reason = "interrupted"
                break
            token = upcoming
        if not self._hit_stop_string:
            # What was held back as a possible stop string, and any split character, is output.
            tail = held + decoder.flush()
            if tail:
                self.text += tail
                yield StepEvent(self.token_ids[-1], tail)
        backend.synchronize()
        self._finish(start, first_at, last_at)

    def _split_at_stop(self, text: str) -> tuple[str, str, bool]:
        """(text to emit now, text to hold back, whether a stop string was found).

        A tail of `text` that could grow into a stop string is held back, so a stop string is
        never emitted in part; on a hit, the text is cut before it.
        """
        if not self.stop:
            return text, "", False
        hits = [at for at in (text.find(s) for s in self.stop) if at != -1]
        if hits:
            self._hit_stop_string = True
            return text[:min(hits)], "", True
        keep = max((k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        return text[:len(text) - keep], text[len(text) - keep:], False

    def _finish(self, start: float, first_at: float, last_at: float) -> None:
        n_new, n_prompt = len(self.token_ids), len(self.prompt_ids)
        ttft = first_at - start if n_new else float("nan")
        decode_s = last_at - first_at
        self.stats = Stats(
            prompt_tokens=n_prompt, new_tokens=n_new, time_to_first_token_s=ttft,
            prefill_tokens_per_s=n_prompt / ttft if ttft > 0 else float("nan"),  # nan > 0 is False
            decode_tokens_per_s=(n_new - 1) / decode_s if n_new > 1 and decode_s > 0 else float("nan"),
            total_s=last_at - start, peak_memory_bytes=self.backend.peak_memory(), decode_path=self._decode_path)
