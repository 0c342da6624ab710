"""Speculative decoding with the MTP layer against plain decoding and the engines' own generation,
side by side in one run.

On the same checkpoint and prompts, greedy, alternating; each prompt's runs decode exactly the
tokens of its plain greedy reply up to its end of turn (at most N), so every engine makes the same
tokens and none runs on past the reply, where a draft layer has nothing sensible to guess:
  transformers        `model.generate` of the loaded torch module (one token per forward)
  mlx_lm              `mlx_lm.stream_generate` on the same checkpoint loaded by the MLX backend
  workbench B         model.generate(ids, max_new_tokens=N, speculative=0) on backend B (torch, mlx)
  spec B k=K          ... speculative=K, K = 1, 2, 3
  default B           ... without speculative=: the model's default (`model.speculative`, which backs
                      off to plain steps where its drafts do not pay; run with --model tiny-random
                      to see that on an untrained layer)
Decode tok/s = (N - 1) / (time(N new tokens) - time(1 new token)), so prefill and set-up cancel out;
medians over repeats and prompts. The speculative rows also give the tokens each verify forward
yields and the share of drafts accepted at each position (from the runs' own Stats). The output of
every speculative run is checked against plain greedy decoding, token for token.
Target (issue 21): speculative >= 1.5x the workbench's plain decode (on the same backend) and
>= 1.5x both engines.

The prompts are written here, not drawn from the training data: requests through the chat
template (thinking off) and openings of Python functions.

    python scripts/bench_speculative.py [--model tiny] [--new 96] [--repeats 3] [--drafts 1,2,3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import workbench

PROMPTS = {
    "weather": [{"role": "user", "content": "Could you tell me how warm it is in Porto right now?"}],
    "sum": [{"role": "user", "content": "I need 17.5 multiplied by 42, please."}],
    "units": [{"role": "user", "content": "how many pounds are 12 kilograms"}],
    "code": "def moving_average(values, window):\n    \"\"\"Mean of each run of `window` values.\"\"\"\n",
    "class": "class Stack:\n    def __init__(self):\n",
}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def decode_rate(run, n) -> float:
    return (n - 1) / (_timed(lambda: run(n)) - _timed(lambda: run(1)))


def main() -> None:
    from bench_decode_loop import raw_mlx, raw_torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--new", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--drafts", default="1,2,3")
    ap.add_argument("--no-mlx", action="store_true")
    args = ap.parse_args()
    drafts = [int(k) for k in args.drafts.split(",")]
    model = workbench.load(args.model, backend="torch", device="cpu")
    mlx = None if args.no_mlx else workbench.load(args.model, backend="mlx")
    if not model.has_mtp:
        raise SystemExit(f"{args.model} has no MTP layer to draft with")
    models = {"torch": model, **({"mlx": mlx} if mlx is not None else {})}
    rates: dict[str, list[float]] = {}
    spec_stats: dict[str, list] = {}
    lengths = {}
    backed = {b: 0 for b in models}  # prompts on which the default backed off to plain steps
    for name, prompt in PROMPTS.items():
        ids = model.prompt_ids(prompt, thinking=False)[0]
        n = lengths[name] = len(model.generate(ids, max_new_tokens=args.new).token_ids)  # to its end of turn
        plain = model.generate(ids, max_new_tokens=n, ignore_eos=True, speculative=0).token_ids.tolist()
        runs = {"transformers": raw_torch(model, ids)}
        if mlx is not None:
            runs["mlx_lm"] = raw_mlx(mlx, ids)
        for b, m in models.items():
            runs[f"workbench {b}"] = lambda n, ids=ids, m=m: m.generate(ids, max_new_tokens=n, ignore_eos=True,
                                                                      speculative=0)
            for k in drafts:
                runs[f"spec {b} k={k}"] = (lambda n, ids=ids, k=k, m=m:
                                           m.generate(ids, max_new_tokens=n, ignore_eos=True, speculative=k))
                g = m.generate(ids, max_new_tokens=n, ignore_eos=True, speculative=k)
                assert g.token_ids.tolist() == plain, f"speculative k={k} on {b} changed the greedy output on {name!r}"
                spec_stats.setdefault(f"spec {b} k={k}", []).append(g.stats)
            runs[f"default {b}"] = lambda n, ids=ids, m=m: m.generate(ids, max_new_tokens=n, ignore_eos=True)
            g = m.generate(ids, max_new_tokens=n, ignore_eos=True)
            assert g.token_ids.tolist() == plain, f"the default on {b} changed the greedy output on {name!r}"
            backed[b] += g.stats.backed_off_at is not None
            if g.stats.verify_steps:
                spec_stats.setdefault(f"default {b}", []).append(g.stats)
        for run in runs.values():
            run(n)  # warm-up
        for _ in range(args.repeats):  # alternate, so drift on a shared machine hits all alike
            for label, run in runs.items():
                rates.setdefault(label, []).append(decode_rate(run, n))
    med = {label: statistics.median(r) for label, r in rates.items()}
    print(f"model {args.model}, greedy, prompts (new tokens to the end of the reply): "
          f"{', '.join(f'{k} ({v})' for k, v in lengths.items())}; decode tok/s (median of {args.repeats} x "
          f"{len(PROMPTS)})\n")
    print("| run | tok/s | / workbench (same backend) | / transformers | / mlx_lm | tokens per verify | "
          "accepted at position 1..k |")
    print("|---|---|---|---|---|---|---|")
    for label, rate in med.items():
        own = next((f"workbench {b}" for b in models if f" {b}" in label), None)
        cells = [f"{rate:,.1f}", f"{rate / med[own]:.2f}x" if own else "", f"{rate / med['transformers']:.2f}x",
                 f"{rate / med['mlx_lm']:.2f}x" if "mlx_lm" in med else "n/a", "", ""]
        if label in spec_stats:
            stats = spec_stats[label]
            steps = sum(s.verify_steps for s in stats)
            cells[4] = f"{sum(s.accepted_tokens + s.verify_steps for s in stats) / steps:.2f}"
            proposed = np.sum([s.proposed_by_position for s in stats], axis=0)
            accepted = np.sum([s.accepted_by_position for s in stats], axis=0)
            cells[5] = " / ".join(f"{a / p:.0%}" for a, p in zip(accepted, proposed))
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\nmodel.speculative: " + ", ".join(f"{b} {m.speculative}" for b, m in models.items())
          + "; the default backed off to plain steps on " + ", ".join(
              f"{backed[b]} of {len(PROMPTS)} prompts on {b}" for b in models))


if __name__ == "__main__":
    main()
