"""Make the GGUF copies of the bundled model with llama.cpp's own tools (the converter from the
pinned llama-cpp-python source, then its quantizer): tiny:F32, tiny:Q8_0 and tiny:Q4_0, in the
workbench cache (~/.cache/qwen-workbench/gguf, or $WORKBENCH_CACHE/gguf). `./dev setup` runs it.

Q4_0 is the 4-bit type shipped: its blocks of 32 fit every tensor of `tiny`, while the k-quants
(Q4_K_M) need rows of 256 and fall back to q5_0/q8_0 on most of this model's small tensors.

    python scripts/make_gguf_copies.py [--force]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.gguf.convert import bundled_copy  # noqa: E402
from workbench.hub import BUNDLED_GGUF, bundled_gguf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="make them again even if they exist")
    args = parser.parse_args()
    for name, kinds in BUNDLED_GGUF.items():
        for kind in kinds:
            out = bundled_gguf(name, kind)
            if args.force:
                out.unlink(missing_ok=True)
            elif out.exists():
                continue
            start = time.perf_counter()
            bundled_copy(name, kind)
            print(f"{name}:{kind} -> {out} ({out.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - start:.0f} s)")

if __name__ == "__main__":
    main()
