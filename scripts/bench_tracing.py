"""What tracing costs: decode tok/s of the workbench's generation with each capture on, against
capture off, side by side (alternating runs, medians over repeats), on each backend.

    python scripts/bench_tracing.py [--model tiny] [--new 128] [--prompt 128] [--repeats 5]

Target: routing capture >= 0.9x of capture off.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

import workbench
from workbench import Trace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode_loop import decode_rate  # noqa: E402

TRACES = {
    "off": None,
    "routing": Trace(routing=True),
    "deltanet summaries": Trace(deltanet=True),
    "routing + deltanet": Trace(routing=True, deltanet=True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backends", default="torch,mlx")
    args = ap.parse_args()
    print("| backend | capture | decode tok/s | vs off |\n|---|---|---|---|")
    for backend in args.backends.split(","):
        model = workbench.load(args.model, backend=backend)
        ids = np.random.default_rng(0).integers(0, 2000, size=args.prompt).astype(np.int64)
        traces = {k: v for k, v in TRACES.items() if k == "off" or not ("routing" in k and not model.spec.is_moe)}

        def runner(trace):
            return lambda k: model.generate(ids, max_new_tokens=k, ignore_eos=True, trace=trace)

        rates: dict[str, list[float]] = {name: [] for name in traces}
        for _ in range(args.repeats):  # alternate, so drift on a shared machine hits all alike
            for name, trace in traces.items():
                rates[name] += decode_rate(runner(trace), args.new, 1)
        off = statistics.median(rates["off"])
        for name in traces:
            r = statistics.median(rates[name])
            print(f"| {backend} | {name} | {r:,.1f} | {r / off:.2f}x |")


if __name__ == "__main__":
    main()
