"""The F32 GGUF copy of the bundled model on llama.cpp against the checkpoint on torch (fp32), side
by side in one run: greedy tokens, logits, and routing / DeltaNet read out of each engine.

Prompts: a code prompt and a chat-formatted prompt of 200+ tokens (a system prompt, two earlier
turns and a request); 64 greedy tokens each, EOS ignored on both sides (the workbench samples past
it the same way on every backend). Logits: max |a - b| / max |b| over all positions of the chat
prompt. Routing: the share of (MoE layer, token) top-k sets that agree, over the chat prompt and its
64 generated tokens; decay and beta: the largest absolute difference.

    python scripts/parity_llamacpp.py [--gguf tiny:F32]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import workbench
from workbench import Trace

PROMPTS = json.loads((Path(__file__).resolve().parents[1] / "tests" / "data" / "parity_prompts.json").read_text())
CODE, CHAT = PROMPTS["code"], PROMPTS["chat"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", default="tiny:F32")
    args = ap.parse_args()
    gguf, ref = workbench.load(args.gguf), workbench.load("tiny", backend="torch", device="cpu")
    print(f"{gguf.path.name} ({gguf.backend}, {gguf.dtype}) vs tiny ({ref.backend}, {ref.dtype})")
    for name, prompt in (("code", CODE), ("chat", CHAT)):
        ids = ref.prompt_ids(prompt, thinking=False)[0]
        same_ids = ids.tolist() == gguf.prompt_ids(prompt, thinking=False)[0].tolist()
        a = gguf.generate(ids, max_new_tokens=64, ignore_eos=True).token_ids
        b = ref.generate(ids, max_new_tokens=64, ignore_eos=True).token_ids
        first = next((i for i in range(64) if a[i] != b[i]), None)
        print(f"{name}: {len(ids)} prompt tokens (same ids: {same_ids}); {int((a == b).sum())}/64 greedy tokens equal"
              + ("" if first is None else f", first difference at {first}"))
    ids = ref.prompt_ids(CHAT, thinking=False)[0]
    la, lb = gguf.logits(ids), ref.logits(ids)
    print(f"logits over {len(ids)} positions: max relative difference {np.abs(la - lb).max() / np.abs(lb).max():.2e}")
    trace = Trace(routing=True, deltanet=True)
    ga = gguf.generate(ids, max_new_tokens=64, ignore_eos=True, trace=trace)
    gb = ref.generate(ids, max_new_tokens=64, ignore_eos=True, trace=trace)
    same = (np.sort(ga.routing.experts, -1) == np.sort(gb.routing.experts, -1)).all(-1)
    print(f"routing: {int(same.sum())}/{same.size} (layer, token) top-k sets agree ({same.mean():.2%}); "
          f"weights max |diff| {np.abs(ga.routing.weights - gb.routing.weights).max():.1e}")
    da, db = ga.deltanet, gb.deltanet
    print(f"DeltaNet: decay max |diff| {np.abs(da.decay - db.decay).max():.1e}, beta {np.abs(da.beta - db.beta).max():.1e}, "
          f"final state {np.abs(da.final_state - db.final_state).max():.1e}")


if __name__ == "__main__":
    main()
