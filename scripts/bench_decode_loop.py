"""Decode speed of the workbench's own loop against each engine's own generation, side by side.

For each backend, on the same checkpoint, prompt and greedy settings, alternating runs:
  workbench  model.generate(ids, max_new_tokens=N)
  raw        transformers `model.generate` (torch) / `mlx_lm.stream_generate` (MLX)
Decode time is measured as time(N new tokens) - time(1 new token), so prefill and set-up cancel
out; the median over repeats is reported with the ratio workbench / raw.

    python scripts/bench_decode_loop.py [--model tiny] [--new 128] [--prompt 128] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import workbench


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def raw_torch(model, ids):
    import torch
    hf = model._engine.model
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
        for _ in stream_generate(model._engine.model, tokenizer, prompt, max_tokens=k):
            pass
    return run


def ours(model, ids):
    def run(k):
        model.generate(ids, max_new_tokens=k, ignore_eos=True)
    return run


def decode_rate(run, n, repeats) -> list[float]:
    run(n)  # warm-up
    return [(n - 1) / (_timed(lambda: run(n)) - _timed(lambda: run(1))) for _ in range(repeats)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"| backend | workbench tok/s | raw engine tok/s | ratio |\n|---|---|---|---|")
    for backend, raw in (("torch", raw_torch), ("mlx", raw_mlx)):
        model = workbench.load(args.model, backend=backend)
        rng = np.random.default_rng(0)
        ids = rng.integers(0, 2000, size=args.prompt).astype(np.int64)
        runs = {"ours": ours(model, ids), "raw": raw(model, ids)}
        rates: dict[str, list[float]] = {"ours": [], "raw": []}
        for _ in range(args.repeats):  # alternate, so drift on a shared machine hits both
            for name, run in runs.items():
                rates[name] += decode_rate(run, args.new, 1)
        a, b = statistics.median(rates["ours"]), statistics.median(rates["raw"])
        print(f"| {backend} | {a:,.1f} | {b:,.1f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
