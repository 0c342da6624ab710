"""Decode speed of the workbench's own loop against each engine's own generation, and what
tracing costs, side by side in one run.

For each backend, on the same checkpoint, prompt and greedy settings, alternating runs:
  raw                 transformers `model.generate` (torch) / `mlx_lm.stream_generate` (MLX)
  workbench           model.generate(ids, max_new_tokens=N)
  + routing           ... trace=Trace(routing=True)
  + deltanet          ... trace=Trace(deltanet=True)  (per-token summaries)
  fast / reference    ... with model.fast_decode = True / False (torch: static cache, a CUDA graph
                      on CUDA, against DynamicCache; the default is fast on CUDA only, and
                      tracing always takes the reference path)
Against the raw engines, decode time is time(N new tokens) - time(1 new token), so prefill and
set-up cancel out. Tracing costs compare the decode tok/s of the workbench's own loop (its
`stats`, which leave out turning the captured arrays into a trace after the run) with tracing off.
Medians over repeats. Targets: workbench >= 0.95x raw; routing capture >= 0.9x untraced (tracing
runs the reference path, so it is compared with that).

    python scripts/bench_decode_loop.py [--model tiny] [--new 128] [--prompt 128] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import workbench
from workbench import Trace


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def raw_torch(model, ids):
    import torch
    hf = model.engine.model
    x = torch.as_tensor(ids)[None]

    def run(k):
        with torch.inference_mode():
            hf.generate(x, max_new_tokens=k, min_new_tokens=k, do_sample=False, pad_token_id=0)
    return run


def raw_mlx(model, ids):
    import mlx.core as mx
    from mlx_lm.generate import stream_generate
    from mlx_lm.tokenizer_utils import TokenizerWrapper
    from transformers import AutoTokenizer

    tokenizer = TokenizerWrapper(AutoTokenizer.from_pretrained(model.path))
    prompt = mx.array(ids.astype(np.int32))

    def run(k):
        for _ in stream_generate(model.engine.model, tokenizer, prompt, max_tokens=k):
            pass
    return run


def ours(model, ids, trace=None, fast=None):
    """fast: None keeps the model's default path; True / False pick the fast / reference path."""
    def run(k):
        before = model.fast_decode
        if fast is not None:
            model.fast_decode = fast and model.engine.fast_decode_available
        try:
            return model.generate(ids, max_new_tokens=k, ignore_eos=True, trace=trace)
        finally:
            model.fast_decode = before
    return run


def loop_rate(run, n) -> float:
    """Decode tok/s as the workbench's loop measures it."""
    return run(n).stats.decode_tokens_per_s


def decode_rate(run, n, repeats) -> list[float]:
    run(n)  # warm-up
    return [(n - 1) / (_timed(lambda: run(n)) - _timed(lambda: run(1))) for _ in range(repeats)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backends", default="torch,mlx")
    args = ap.parse_args()
    print("| backend | raw engine tok/s | workbench tok/s | workbench / raw | fast / reference path | + routing "
          "| + deltanet summaries |\n|---|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        model = workbench.load(args.model, backend=backend)
        ids = np.random.default_rng(0).integers(0, 2000, size=args.prompt).astype(np.int64)
        runs = {"raw": (raw_torch if backend == "torch" else raw_mlx)(model, ids), "ours": ours(model, ids)}
        traced = {"fast": ours(model, ids, fast=True), "reference": ours(model, ids, fast=False),
                  "deltanet": ours(model, ids, Trace(deltanet=True))}
        if model.spec.is_moe:
            traced["routing"] = ours(model, ids, Trace(routing=True))
        rates: dict[str, list[float]] = {name: [] for name in [*runs, *traced]}
        for _ in range(args.repeats):  # alternate, so drift on a shared machine hits all alike
            for name, run in runs.items():
                rates[name] += decode_rate(run, args.new, 1)
            for name, run in traced.items():
                rates[name].append(loop_rate(run, args.new))
        med = {name: statistics.median(r) for name, r in rates.items()}
        routing = f"{med['routing'] / med['reference']:.2f}x" if "routing" in med else "dense"
        print(f"| {backend} | {med['raw']:,.1f} | {med['ours']:,.1f} | {med['ours'] / med['raw']:.2f}x | "
              f"{med['fast'] / med['reference']:.2f}x | {routing} | {med['deltanet'] / med['reference']:.2f}x |")


if __name__ == "__main__":
    main()
