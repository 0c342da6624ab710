"""Decode speed of the workbench's own loop against each engine's own generation, and what
tracing costs, side by side in one run.

For each backend, on the same checkpoint, prompt and greedy settings, alternating runs:
  raw                 transformers `model.generate` (torch) / `mlx_lm.stream_generate` (MLX) /
                      llama-cpp-python's own `Llama.generate` loop on the same GGUF file (llamacpp)
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

    python scripts/bench_decode_loop.py [--model tiny] [--gguf tiny:F32] [--new 128] [--prompt 128]
                                        [--repeats 5] [--backends torch,mlx,llamacpp]
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
    tokenizer.eos_token_ids = set()  # decode all k tokens, as the workbench's runs do (ignore_eos)
    prompt = mx.array(ids.astype(np.int32))

    def run(k):
        for _ in stream_generate(model.engine.model, tokenizer, prompt, max_tokens=k):
            pass
    return run


def raw_llamacpp(model, ids):
    from llama_cpp import Llama

    from workbench.backends.llamacpp_amx import patch_default_params

    patch_default_params()  # as the backend loads it: no AMX repacking, which crashes

    # Same file, context and threads as the workbench's backend; greedy (top_k=1) like ours.
    llm = Llama(model_path=str(model.path), n_ctx=model.engine.context, n_threads=model.engine.threads,
                n_threads_batch=model.engine.threads, n_gpu_layers=model.engine.gpu_layers, verbose=False,
                flash_attn=not model.engine.full_precision,
                type_k=model.engine.kv_type, type_v=model.engine.kv_type)
    tokens = ids.tolist()

    def run(k):
        for i, _ in enumerate(llm.generate(tokens, top_k=1, temp=0.0, reset=True)):
            if i + 1 == k:
                break
    return run


RAW = {"torch": raw_torch, "mlx": raw_mlx, "llamacpp": raw_llamacpp}


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
    ap.add_argument("--gguf", default="tiny:F32", help="the GGUF file the llamacpp backend runs")
    ap.add_argument("--backends", default="torch,mlx,llamacpp")
    args = ap.parse_args()
    print("| backend | raw engine tok/s | workbench tok/s | workbench / raw | fast / reference path | + routing "
          "| + deltanet summaries |\n|---|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        model = workbench.load(args.gguf) if backend == "llamacpp" else workbench.load(args.model, backend=backend)
        ids = np.random.default_rng(0).integers(0, 2000, size=args.prompt).astype(np.int64)
        runs = {"raw": RAW[backend](model, ids), "ours": ours(model, ids)}
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
        name = f"{backend} ({model.dtype})" if backend == "llamacpp" else backend
        print(f"| {name} | {med['raw']:,.1f} | {med['ours']:,.1f} | {med['ours'] / med['raw']:.2f}x | "
              f"{med['fast'] / med['reference']:.2f}x | {routing} | {med['deltanet'] / med['reference']:.2f}x |")


if __name__ == "__main__":
    main()
