"""The decode loop shared by every backend, and its results.

The loop is the same on every backend: one prefill forward over the prompt, then one forward per
new token, each feeding the token just sampled. Sampling runs on the device (the backend's
`Sampler`); the host reads one int per step, which streaming and stop checks need anyway. The
next step is queued before that int is read, so an asynchronous device (CUDA, MLX) computes step
t+1 while the host decodes the text of step t, as mlx-lm's own loop does.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from .errors import WorkbenchError
from .sampling import SamplingParams

if TYPE_CHECKING:
    from .backends.base import Backend
    from .prompt_cache import PromptCache
    from .tokenizer import Tokenizer


def checked_limits(max_new_tokens, stop) -> list[str]:
    """The request's length limit and stop strings, checked (in-process and served models alike):
    the stop strings as a list."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise WorkbenchError(f"max_new_tokens={max_new_tokens!r} is invalid: it must be an int >= 1.")
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    if any(not isinstance(s, str) or not s for s in stops):
        raise WorkbenchError(f"stop={stop!r} is invalid: give a non-empty string or a list of them.")
    return stops


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
    reused_prompt_tokens: int = 0  # prompt tokens continued from the prompt cache, not prefilled again
    # Speculative decoding (0 draft tokens when off): each verify step proposes up to k drafts.
    verify_steps: int = 0
    draft_tokens: int = 0          # drafts proposed
    accepted_tokens: int = 0       # drafts accepted
    proposed_by_position: Any = None   # [k] int: drafts proposed at draft position 1..k
    accepted_by_position: Any = None   # [k] int: of those, accepted
    drafted: Any = None                # [new] bool: which tokens were accepted drafts (the others: sampled)
    backed_off_at: int | None = None   # new tokens made when the default speculation gave way to plain steps

    @property
    def acceptance_by_position(self) -> np.ndarray:
        """[k] the share of drafts accepted at each draft position (nan where none was proposed)."""
        if self.proposed_by_position is None:
            return np.zeros(0)
        proposed = np.asarray(self.proposed_by_position, dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(self.accepted_by_position, dtype=float) / proposed

    @property
    def mean_accepted_length(self) -> float:
        """Tokens each verify forward yields: the accepted drafts plus the one it samples (1.0 =
        no gain); nan without speculation."""
        return (self.accepted_tokens + self.verify_steps) / self.verify_steps if self.verify_steps else float("nan")

    def __str__(self) -> str:
        mem = "n/a" if self.peak_memory_bytes is None else f"{self.peak_memory_bytes / 2**20:,.1f} MiB"
        reused = f" ({self.reused_prompt_tokens} from the prompt cache)" if self.reused_prompt_tokens else ""
        spec = (f" | drafts {self.accepted_tokens}/{self.draft_tokens} accepted, "
                f"{self.mean_accepted_length:.2f} tok/verify" if self.verify_steps else "")
        if self.backed_off_at is not None:
            spec += f", plain steps after token {self.backed_off_at}"
        return (f"prompt {self.prompt_tokens} tok{reused}, new {self.new_tokens} tok | TTFT "
                f"{self.time_to_first_token_s * 1e3:,.1f} ms | prefill {self.prefill_tokens_per_s:,.1f} tok/s"
                f" | decode {self.decode_tokens_per_s:,.1f} tok/s{spec} | peak {mem}")


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


# The default speculation (`Model.speculative` never set) gives way to plain steps for the rest of
# a generation once its drafts stop paying: fewer than BACKOFF_MIN_ACCEPTED accepted drafts per
# verify over the last BACKOFF_WINDOW verifies. A k=2 step cost 1.37 plain steps on this project's
# CPU (break-even at 0.37 accepted per verify) and about 1 on a GPU; an untrained or mismatched
# MTP layer (tiny-random's, a quantized copy's) accepts almost nothing. The rule reads only the
# tokens, so a seeded run makes the same choice every time.
BACKOFF_WINDOW = 8
BACKOFF_MIN_ACCEPTED = 0.5


def draft_and_verify(speculation, sampler, last: int, k: int) -> list[int]:
    """k drafts after `last` (the newest token, not yet read) and one verify forward -> the accepted
    drafts and one token more; the cache keeps nothing of it until `speculation.accept`."""
    drafts = speculation.draft(last, k)
    return sampler.verify(speculation.verify(last, drafts), drafts)


def speculative_step(speculation, sampler, last: int, k: int) -> list[int]:
    """`draft_and_verify`, the cache cut back to what was kept. k = 0 is a plain step (a verify of
    `last` alone)."""
    ready = draft_and_verify(speculation, sampler, last, k)
    speculation.accept(len(ready) - 1)
    return ready


@dataclass
class StepEvent:
    """One new token as the loop produces it."""

    token_id: int
    text: str               # new text made complete by this token ('' while a character is split)
    tokens: int             # tokens generated so far, this one included (a token repeats; this never does)


class DecodeLoop:
    """Runs prefill + decode on a backend and yields `StepEvent`s; when done, `text`,
    `token_ids`, `finish_reason` and `stats` hold the result.

    Stops on an EOS id, a stop string (the text is cut before it), `max_new_tokens`, or
    `interrupt()` (finish_reason "interrupted"; the model stays usable).

    `speculative=k` (1..4): each step the backend's MTP layer drafts k tokens and one forward of the
    model verifies them all (`Backend.speculation`); the tokens come out one by one as before, with
    the same stop checks, and greedy output is the plain loop's. `backoff=True` (the model's default
    speculation, not one asked for) switches to plain steps once the drafts stop paying (see
    BACKOFF_WINDOW).
    """

    def __init__(self, backend: "Backend", tokenizer: "Tokenizer", prompt_ids: np.ndarray,
                 max_new_tokens: int, sampling: SamplingParams, stop: Sequence[str] = (),
                 eos_ids: Sequence[int] = (), probe: Any = None, store: "PromptCache | None" = None,
                 turn_marker: int | None = None, speculative: int = 0, backoff: bool = False):
        self.backend, self.tokenizer = backend, tokenizer
        self.probe = probe  # hooked into the model for this loop's own forward calls only
        # The prompt cache to continue from and fill (never with a probe: see prompt_cache.py), and the
        # token that opens a message (<|im_start|>), where turn-start entries are taken.
        self.store = store if probe is None and store is not None and store.enabled else None
        self.turn_marker = turn_marker
        self.speculative = speculative
        self.backoff = backoff
        self._recent_accepted: deque[int] = deque(maxlen=BACKOFF_WINDOW)  # per verify, the newest last
        self._backed_off_at: int | None = None
        self._reused = 0
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
        self._held = ""  # decoded text that may be the start of a stop string
        self._fed: list[int] = []  # generated tokens the cache has read (what the prompt cache keeps)
        self._drafted: list[bool] = []
        k = max(speculative, 0)
        self._spec = {"steps": 0, "proposed": np.zeros(k, dtype=np.int64), "accepted": np.zeros(k, dtype=np.int64)}

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
        capacity = len(self.prompt_ids) + self.max_new_tokens
        start = time.perf_counter()
        cache = self._continued(capacity)
        if cache is None:
            # A probe reads the model as the reference path runs it, so tracing takes that path;
            # so does speculation, whose rollback is written for that cache.
            cache = backend.new_cache(capacity=capacity, fast=self.probe is None and not self.speculative)
            if self.store is not None and not backend.can_snapshot(cache):
                self.store = None  # a cache this backend cannot keep
        self._decode_path = backend.decode_path(cache)
        if self._interrupted:  # stopped before it began: nothing runs
            self.finish_reason = "interrupted"
            self._finish(start, start, start)
            return
        sampler = backend.make_sampler(self.sampling)
        if self.speculative:
            self._decode_path += f" + MTP speculation (k={self.speculative})"
            with backend.lock:
                speculation = backend.speculation(cache, self.probe)
            abandoned = False
            try:
                yield from self._speculate(speculation, sampler, decoder)
            except GeneratorExit:
                abandoned = True
                raise
            finally:
                # An abandoned stream is closed by the garbage collector, in whatever thread it runs,
                # at any point of that thread's own work: inside another model's traced forward, it
                # holds the probe lock that this model's lock holder may be waiting for, so waiting
                # here can deadlock. The cache is this run's alone and goes with it: when the lock
                # is busy, its clean-up is skipped.
                if backend.lock.acquire(blocking=not abandoned):
                    try:
                        speculation.close()
                    finally:
                        backend.lock.release()
        else:
            yield from self._plain(cache, sampler, decoder)
        if not self._hit_stop_string:
            # What was held back as a possible stop string, and any split character, is output.
            tail = self._held + decoder.flush()
            if tail:
                self.text += tail
                yield StepEvent(self.token_ids[-1], tail, len(self.token_ids))
        backend.synchronize()
        self._finish(start, *self._times)
        if self.store is not None:  # the loop's own cache: prompt and reply, as forwarded
            held = np.concatenate([self.prompt_ids, np.asarray(self._fed, dtype=np.int64)])
            with backend.lock:
                kept = backend.snapshot(cache, last_use=True)
                self.store.put(held, kept, backend.snapshot_bytes(kept), "generation end")

    def _plain(self, cache: Any, sampler, decoder, after: int | None = None,
               times: tuple[float, float] | None = None) -> Iterator[StepEvent]:
        """One forward per token, the next queued before the last is read. `after`: continue a
        speculative run (clocks `times`) whose newest token, made but not yet read, is `after`."""
        if after is None:
            token = self._forward(self._split_at_turn_start(cache), cache, sampler)
            pending = self._read(token)  # read before queuing step 2, so TTFT is prefill alone
            first_at = last_at = time.perf_counter()
        else:
            token = self._forward(np.asarray([after], dtype=np.int64), cache, sampler)
            self._fed.append(after)
            pending, (first_at, last_at) = None, times
        for n in range(len(self.token_ids) + 1, self.max_new_tokens + 1):
            # Queue step n+1 before reading token n: the device works while the host decodes.
            upcoming = None
            if n < self.max_new_tokens and not self._interrupted:
                upcoming = self._forward(token, cache, sampler)
            if pending is not None:
                token_id, pending = pending, None
            else:
                token_id = self._read(token)
                last_at = time.perf_counter()
            if upcoming is not None:
                self._fed.append(token_id)
            emit, done = self._take(token_id, decoder)
            if emit:
                yield StepEvent(token_id, emit, len(self.token_ids))
            if done:
                break
            token = upcoming
        self._times = (first_at, last_at)

    def _speculate(self, speculation, sampler, decoder) -> Iterator[StepEvent]:
        """Draft k, verify k + 1 in one forward, keep the accepted ones and one more, repeat.

        A verify's tokens are emitted before the cache keeps them (`accept`), so that when the run
        ends among them the cache ends where a plain run's does: after the last token on EOS or a
        stop string (plain decoding had queued the step that reads it), before it on Stop or at
        `max_new_tokens`. Traces then hold plain decoding's rows, and the prompt cache's entry is
        a prefix of what the caller saw."""
        backend = self.backend
        with backend.lock:
            token = sampler(speculation.prefill(self._split_at_turn_start(speculation.cache)))
        ready = [backend.to_int(token)]
        last = None  # the token the verify that made `ready` read first (None: the prefill made it)
        first_at = last_at = time.perf_counter()
        while True:
            for i, token_id in enumerate(ready):
                self._drafted.append(i < len(ready) - 1)  # a step's last token is sampled, the others drafts
                emit, done = self._take(token_id, decoder)
                if emit:
                    yield StepEvent(token_id, emit, len(self.token_ids))
                if done:
                    break
            read = i + 1 if done and self._reads_last_token() else i  # tokens of `ready` the cache keeps
            if last is not None:
                kept = min(read, len(ready) - 1)  # accepted drafts; the verify's own sample is not read
                with backend.lock:
                    speculation.accept(kept)
                self._fed.append(last)
                self._fed.extend(ready[:kept])
            if read == len(ready):  # the verify's own sample, which no forward has read yet
                with backend.lock:
                    speculation.close()
                self._forward(np.asarray(ready[-1:], dtype=np.int64), speculation.cache, sampler)
                self._fed.append(ready[-1])
            if done:
                break
            room = self.max_new_tokens - len(self.token_ids)
            if room <= 0:
                break
            last = ready[-1]
            if self._drafts_stopped_paying():
                self._backed_off_at = len(self.token_ids)
                with backend.lock:
                    speculation.close()  # the cache as plain decoding left it, at the accepted tokens
                yield from self._plain(speculation.cache, sampler, decoder, after=last, times=(first_at, last_at))
                return
            k = min(self.speculative, room - 1)  # never draft past max_new_tokens
            with backend.lock:
                ready = draft_and_verify(speculation, sampler, last, k)
            self._count(k, len(ready) - 1)
            last_at = time.perf_counter()
        self._times = (first_at, last_at)

    def _reads_last_token(self) -> bool:
        """Whether plain decoding's cache holds a run's last token: it queues the step that reads
        token n before reading n, except at `max_new_tokens` and after Stop."""
        return (self.finish_reason == "stop" and len(self.token_ids) < self.max_new_tokens
                and not self._interrupted)

    def _count(self, k: int, accepted: int) -> None:
        """Bookkeeping of one verify step: k drafts proposed, the first `accepted` of them taken."""
        if not k:
            return
        self._spec["steps"] += 1
        self._spec["proposed"][:k] += 1
        self._spec["accepted"][:accepted] += 1
        self._recent_accepted.append(accepted)

    def _drafts_stopped_paying(self) -> bool:
        """Whether the default speculation should give way to plain steps (see BACKOFF_WINDOW)."""
        recent = self._recent_accepted
        return (self.backoff and len(recent) == BACKOFF_WINDOW
                and sum(recent) < BACKOFF_MIN_ACCEPTED * BACKOFF_WINDOW)

    def _take(self, token_id: int, decoder) -> tuple[str, bool]:
        """Record one generated token -> (the text it makes ready to emit, whether the run ends)."""
        self.token_ids.append(token_id)
        if token_id in self.eos_ids:
            self.finish_reason = "stop"
            return "", True
        emit, self._held, hit = self._split_at_stop(self._held + decoder.push(token_id))
        if emit:
            self.text += emit
        if hit:
            self.finish_reason = "stop"
            return emit, True
        if self._interrupted:
            self.finish_reason = "interrupted"
            return emit, True
        return emit, False

    def _continued(self, capacity: int) -> Any:
        """A new cache restored from the prompt cache's longest entry that begins this prompt, or None."""
        if self.store is None:
            return None
        stored, n = self.store.lookup(self.prompt_ids)
        if stored is None:
            return None
        with self.backend.lock:
            cache = self.backend.restore(stored, capacity)
        self._reused = n
        return cache

    def _split_at_turn_start(self, cache: Any) -> np.ndarray:
        """Prefill up to the reply's header and keep a copy there (a turn-start entry); return the
        prompt tokens still to be read."""
        from .prompt_cache import turn_start

        rest = self.prompt_ids[self._reused:]
        if self.store is None:
            return rest
        at = turn_start(self.prompt_ids, self.turn_marker, self._reused)
        if at is None:
            return rest
        backend = self.backend
        with backend.lock:
            backend.queue(backend.step(self.prompt_ids[self._reused:at], cache))
            kept = backend.snapshot(cache)
            self.store.put(self.prompt_ids[:at], kept, backend.snapshot_bytes(kept), "turn start")
        return self.prompt_ids[at:]

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
        prefilled = n_prompt - self._reused  # the prefill rate counts what was read, not what was reused
        self.stats = Stats(
            prompt_tokens=n_prompt, new_tokens=n_new, time_to_first_token_s=ttft, reused_prompt_tokens=self._reused,
            prefill_tokens_per_s=prefilled / ttft if ttft > 0 else float("nan"),  # nan > 0 is False
            decode_tokens_per_s=(n_new - 1) / decode_s if n_new > 1 and decode_s > 0 else float("nan"),
            total_s=last_at - start, peak_memory_bytes=self.backend.peak_memory(), decode_path=self._decode_path)
        if self.speculative:
            spec = self._spec
            self.stats.verify_steps = spec["steps"]
            self.stats.draft_tokens = int(spec["proposed"].sum())
            self.stats.accepted_tokens = int(spec["accepted"].sum())
            self.stats.proposed_by_position = spec["proposed"].copy()
            self.stats.accepted_by_position = spec["accepted"].copy()
            drafted = np.zeros(n_new, dtype=bool)  # tokens of plain steps after a back-off: False
            drafted[:len(self._drafted)] = self._drafted
            self.stats.drafted = drafted
            self.stats.backed_off_at = self._backed_off_at
