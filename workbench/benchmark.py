"""Throughput harness with llama-bench's conventions, on any backend.

Tests: `pp<N>` prefill of N tokens in one batch (tok/s = N / time); `tg<N>` N tokens decoded one at
a time (tok/s = N / time); `pp<N>+tg<M>` both; each at context depth D (`@ d<D>`: D tokens already
in the cache, filled untimed). Prompts are deterministic synthetic token ids; EOS is never checked
(every run decodes its N tokens). With `speculative=k` the decode steps draft k tokens with the MTP
layer and verify them in one forward (each token's latency is its step's time shared among the
tokens the step yields; `tokens/verify` is the mean). One untimed warm-up run per test, then `repeats` timed runs,
reported as mean and sample standard deviation of the per-run tok/s. The device is synchronised
before every clock read. Decode rows also give per-token latency (median, p99), the bytes of weights
a token reads divided by its time (achieved weight bandwidth) and, when the device's bandwidth is
known, the share of that ceiling.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import WorkbenchError
from .planner.caches import DTYPE_BYTES
from .planner.devices import GB, Device
from .planner.devices import match as match_device
from .planner.formats import FLOAT32
from .sampling import SamplingParams
from .tensors import text_tensors

if TYPE_CHECKING:
    from .model import Model

SEED = 1234


@dataclass(frozen=True)
class BenchTest:
    prompt: int     # tokens prefilled (0: none)
    new: int        # tokens decoded (0: none)
    depth: int = 0  # tokens already in the cache

    @property
    def name(self) -> str:
        parts = ([f"pp{self.prompt}"] if self.prompt else []) + ([f"tg{self.new}"] if self.new else [])
        return "+".join(parts) + (f" @ d{self.depth}" if self.depth else "")


def weight_bytes_per_token(model: "Model") -> float:
    """Bytes of weights one decoded token reads at the loaded dtype (active experts, one
    embedding row, the whole lm_head); a GGUF file's own tensor sizes where the backend has them."""
    stored = model.engine.weight_bytes_per_token()
    if stored is not None:
        return stored
    size = DTYPE_BYTES.get(model.dtype, 4)
    return sum(t.numel * t.read_share * (4 if t.name in FLOAT32 else size)
               for t in text_tensors(model.spec))


def plan_tests(prompt_tokens: int | Sequence[int], new_tokens: int | Sequence[int],
               depth: int | Sequence[int] = 0, combined: bool = False) -> list[BenchTest]:
    """llama-bench's test list: every pp<N>, every tg<M>, and pp<N>+tg<M> when `combined`, at each depth."""
    prompts, news, depths = (_ints(x, name) for x, name in
                             ((prompt_tokens, "prompt_tokens"), (new_tokens, "new_tokens"), (depth, "depth")))
    tests = []
    for d in depths:
        tests += [BenchTest(p, 0, d) for p in prompts if p > 0]
        tests += [BenchTest(0, n, d) for n in news if n > 0]
        if combined:
            tests += [BenchTest(p, n, d) for p in prompts for n in news if p > 0 and n > 0]
    if not tests:
        raise WorkbenchError("nothing to measure: give prompt_tokens and/or new_tokens above 0.")
    return tests


def parse_int_list(text: str, name: str) -> list[int]:
    """"128,512" -> [128, 512] (what the CLI and the dashboard accept for a sweep)."""
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise WorkbenchError(f"{name}: {text!r} is not a comma-separated list of whole numbers.") from None


def _ints(value, name: str) -> list[int]:
    values = [value] if isinstance(value, (int, np.integer)) else list(value) if isinstance(value, (list, tuple)) \
        else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise WorkbenchError(f"{name}={value!r} is invalid: give whole numbers >= 0.")
    return [int(v) for v in values]


def bench(model: "Model", prompt_tokens: int | Sequence[int] = 512, new_tokens: int | Sequence[int] = 128,
          repeats: int = 5, depth: int | Sequence[int] = 0, combined: bool = False,
          bandwidth_gbs: float | None = None, device: Device | str | None = None,
          progress: Callable[[int, int, str], None] | None = None, speculative: int | None = None,
          **serving) -> pd.DataFrame:
    """Measure `model` like llama-bench; one row per test (see the module docstring).

    bandwidth_gbs / device: the device's memory bandwidth for the ceiling share (default: looked
    up from the device's name in `planner.DEVICES`; None where unknown, e.g. most CPUs).
    progress(done, total, test name) is called before each test. speculative=k: decode with k
    MTP drafts per step (`Model.generate`'s option; greedy, so the tokens are plain decoding's);
    0 or None: plain, as llama-bench measures (`generate`'s default speculation adapts to the text,
    so each k is measured as asked, never backing off).
    A served model (`workbench.connect`) is measured like vLLM's serving benchmark instead: see
    `workbench.remote.serving_bench` (concurrency=, requests=, max_seconds=).
    """
    if getattr(model, "is_remote", False):
        from .remote.serving_bench import serving_bench
        if depth not in (0, [0], (0,)) or combined or bandwidth_gbs is not None or device is not None:
            raise WorkbenchError("a served model is measured per concurrency level (concurrency=, requests=, "
                                 "max_seconds=); depth, combined and bandwidth apply to in-process models.")
        first = lambda v: v if isinstance(v, (int, np.integer)) else list(v)[0]  # noqa: E731
        return serving_bench(model, prompt_tokens=first(prompt_tokens), new_tokens=first(new_tokens),
                             progress=progress, **serving)
    if serving:
        raise WorkbenchError(f"{', '.join(serving)}: these measure a served model (workbench.connect); an "
                             "in-process model takes prompt_tokens, new_tokens, repeats and depth.")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise WorkbenchError(f"repeats={repeats!r} is invalid: give a whole number >= 1.")
    if bandwidth_gbs is not None and not (isinstance(bandwidth_gbs, (int, float, np.number))
                                          and math.isfinite(bandwidth_gbs) and bandwidth_gbs > 0):
        raise WorkbenchError(f"bandwidth_gbs={bandwidth_gbs!r} is invalid: give the device's memory bandwidth "
                             "in GB/s, a number > 0 (e.g. 4800 for an H200).")
    drafts = model._checked_speculative(speculative or 0)
    tests = plan_tests(prompt_tokens, new_tokens, depth, combined)
    longest = max(t.depth + t.prompt + t.new for t in tests)
    if longest > model.context_length:
        raise WorkbenchError(f"the longest test needs {longest:,} tokens of context but the model has "
                             f"{model.context_length:,}: lower depth, prompt_tokens or new_tokens.")
    engine = model.engine
    hardware = engine.hardware_name()
    known = _device(device, bandwidth_gbs, hardware)
    per_token = weight_bytes_per_token(model)
    rng = np.random.default_rng(SEED)
    ids = rng.integers(0, model.spec.vocab_size, size=longest + 1).astype(np.int64)
    rows = []
    with engine.lock:  # the model is the benchmark's alone while it runs (a chat panel waits)
        for i, test in enumerate(tests):
            if progress is not None:
                progress(i, len(tests), test.name)
            _run(engine, ids, test, drafts)  # warm-up, untimed
            engine.reset_peak_memory()
            runs = [_run(engine, ids, test, drafts) for _ in range(repeats)]
            rows.append(_row(model, hardware, test, runs, per_token, known, drafts))
    if progress is not None:
        progress(len(tests), len(tests), "done")
    return pd.DataFrame(rows)


def _device(device, bandwidth_gbs, hardware: str) -> Device | None:
    if bandwidth_gbs is not None:
        return Device(hardware, 0, float(bandwidth_gbs))
    if device is not None:
        from .planner.devices import device as lookup
        return lookup(device)
    return match_device(hardware)


@dataclass
class _Timing:
    prefill_s: float         # 0 without prefill
    first_token_s: float     # prefill + first sample read back (TTFT); 0 without prefill
    decode_s: list[float]    # per decoded token
    verify_steps: int = 0    # speculative steps (0: plain decoding)


def _run(engine, ids: np.ndarray, test: BenchTest, drafts: int = 0) -> _Timing:
    """One run of `test` on a fresh cache; clocks read after a device synchronisation."""
    if drafts:
        return _run_speculative(engine, ids, test, drafts)
    cache = engine.new_cache(capacity=test.depth + test.prompt + test.new + 1)
    sampler = engine.make_sampler(SamplingParams())  # greedy, on the device
    cursor = 0
    if test.depth:
        _settle(engine, engine.forward(ids[:test.depth], cache))
        cursor = test.depth
    engine.synchronize()
    prefill = first = 0.0
    token = None
    if test.prompt:
        start = time.perf_counter()
        logits = engine.forward(ids[cursor:cursor + test.prompt], cache)
        _settle(engine, logits)
        prefill = time.perf_counter() - start
        token = sampler(logits)
        engine.to_int(token)
        first = time.perf_counter() - start
    steps = []
    if test.new:
        if token is None:  # llama-bench's tg starts from one token, not a prompt
            token = sampler(engine.forward(ids[cursor:cursor + 1], cache))
            engine.to_int(token)
        for _ in range(test.new):
            start = time.perf_counter()
            token = sampler(engine.forward(token, cache))
            engine.to_int(token)  # reads the token back: waits for the step
            steps.append(time.perf_counter() - start)
    return _Timing(prefill, first, steps)


def _run_speculative(engine, ids: np.ndarray, test: BenchTest, k: int) -> _Timing:
    """`_run` with speculative decode steps; the depth and the prompt are read by the speculation's
    own prefill (which keeps the hidden states the MTP layer drafts from)."""
    from .generation import speculative_step

    speculation = engine.speculation(engine.new_cache(fast=False))
    sampler = engine.make_sampler(SamplingParams())
    try:
        if test.depth:
            _settle(engine, speculation.prefill(ids[:test.depth]))
        engine.synchronize()
        cursor, prefill, first = test.depth, 0.0, 0.0
        start = time.perf_counter()
        chunk = ids[cursor:cursor + (test.prompt or 1)]  # llama-bench's tg starts from one token
        last = engine.to_int(sampler(speculation.prefill(chunk)))
        if test.prompt:
            prefill = first = time.perf_counter() - start
        steps, verifies = [], 0
        while len(steps) < test.new:
            start = time.perf_counter()
            ready = speculative_step(speculation, sampler, last, min(k, test.new - len(steps) - 1))
            took = time.perf_counter() - start
            steps += [took / len(ready)] * len(ready)
            verifies += 1
            last = ready[-1]
        return _Timing(prefill, first, steps, verifies)
    finally:
        speculation.close()


def _settle(engine, value) -> None:
    """Compute `value` and wait for it: lazy frameworks (MLX) compute nothing until asked."""
    engine.queue(value)
    engine.synchronize()


def _row(model, hardware, test: BenchTest, runs: list[_Timing], per_token: float, device: Device | None,
         drafts: int = 0) -> dict:
    total = [r.prefill_s + sum(r.decode_s) for r in runs]
    rates = [(test.prompt + test.new) / t for t in total]
    row = {"model": model.path.name, "backend": model.backend, "device": hardware, "dtype": model.dtype,
           "test": test.name, "depth": test.depth, "n_prompt": test.prompt, "n_gen": test.new,
           "t/s": statistics.fmean(rates), "t/s std": statistics.stdev(rates) if len(rates) > 1 else 0.0,
           "repeats": len(runs), "ttft_ms": np.nan, "latency_ms_median": np.nan, "latency_ms_p99": np.nan,
           "weight_GB/s": np.nan, "ceiling_share": np.nan,
           "peak_memory_MiB": (model.engine.peak_memory() or np.nan) / 2**20,
           "runs_s": total, "speculative": drafts,
           "tokens/verify": (statistics.fmean(test.new / r.verify_steps for r in runs)
                             if drafts and test.new else np.nan)}
    if test.prompt:
        row["ttft_ms"] = 1e3 * statistics.fmean(r.first_token_s for r in runs)
    if test.new:
        lat = np.concatenate([r.decode_s for r in runs])
        row["latency_ms_median"] = 1e3 * float(np.median(lat))
        row["latency_ms_p99"] = 1e3 * float(np.percentile(lat, 99))
        decode_rate = statistics.fmean(test.new / sum(r.decode_s) for r in runs)
        row["weight_GB/s"] = per_token * decode_rate / GB
        if device is not None and device.bandwidth_gbs:
            row["ceiling_share"] = row["weight_GB/s"] / device.bandwidth_gbs
    return row


def markdown(df: pd.DataFrame) -> str:
    """A table like llama-bench's: one line per test, t/s as mean ± std."""
    cols = ["model", "backend", "device", "dtype", "test", "t/s"]
    extra = [c for c in ("speculative", "tokens/verify", "ttft_ms", "latency_ms_median", "latency_ms_p99",
                         "weight_GB/s", "ceiling_share", "peak_memory_MiB")
             if c in df and df[c].notna().any() and (df[c] != 0).any()]
    head = "| " + " | ".join(cols + extra) + " |\n|" + "---|" * (len(cols) + len(extra)) + "\n"
    lines = []
    for _, r in df.iterrows():
        cells = [str(r[c]) for c in cols[:-1]] + [f"{r['t/s']:,.2f} ± {r['t/s std']:,.2f}"]
        for c in extra:
            v = r[c]
            cells.append("" if pd.isna(v) else (f"{100 * v:.1f}%" if c == "ceiling_share" else f"{v:,.2f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines)


def depth_sweep(model: "Model", depths: Iterable[int], new_tokens: int = 64, repeats: int = 3,
                progress=None) -> pd.DataFrame:
    """tg<new_tokens> at each depth: decode speed and memory as the context fills."""
    return bench(model, prompt_tokens=0, new_tokens=new_tokens, repeats=repeats, depth=list(depths),
                 progress=progress)
