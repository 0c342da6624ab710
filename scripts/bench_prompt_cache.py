"""Time to first token of turn N of a long conversation, with and without the prompt cache, side by
side on each backend (the bundled model: its context is 2,048 tokens, so the history is ~1,800).

Turn N-1 runs first through `model.chat` (which fills the prompt cache as a chat panel would); then
turn N (the whole history plus a new message) is timed with the cache and with `prompt_cache=False`,
alternating, `--repeats` times each; the table shows medians, the prompt tokens read again, and the
ratio. Outputs of the two are checked to be the same tokens.

    python scripts/bench_prompt_cache.py [--backends torch,mlx,llamacpp] [--history 1800] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import workbench

ROOT = Path(__file__).resolve().parents[1]


def history(model, budget: int) -> list[dict]:
    """User and assistant turns of real prose (this repository's docs) up to about `budget` tokens."""
    paragraphs = [p.strip() for p in (ROOT / "README.md").read_text().split("\n\n") if len(p.strip()) > 200]
    messages: list[dict] = []
    for i, text in enumerate(paragraphs):
        turn = [{"role": "user", "content": f"Summarise this in one line:\n{text}"},
                {"role": "assistant", "content": text.split(".")[0][:160] + "."}]
        if len(model.prompt_ids(messages + turn, thinking=False)[0]) > budget:
            break
        messages += turn
    return messages[:-1]  # ends with a user message: turn N-1 is the model's reply to it


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="torch,mlx,llamacpp")
    ap.add_argument("--history", type=int, default=1800)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print("| backend | prompt tokens of turn N | read again with the cache | TTFT full prefill (ms) | "
          "TTFT with the cache (ms) | full / cache | same tokens |")
    print("|---|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        model = workbench.load("tiny:F32") if backend == "llamacpp" else workbench.load("tiny", backend=backend)
        past = history(model, args.history)
        last = [{"role": "user", "content": "And what does the planner say about the 35B model on a 24 GB card?"}]
        full, cached, same, reread, n_prompt = [], [], True, 0, 0
        for _ in range(args.repeats):
            model.prompt_cache.clear()
            before = model.chat(past, thinking=False, max_new_tokens=16, temperature=0)  # turn N-1
            turn = before.messages + last
            for reuse in (True, False):
                gen = model.chat(turn, thinking=False, max_new_tokens=8, temperature=0,
                                 prompt_cache=reuse).generations[0]
                (cached if reuse else full).append(gen.stats.time_to_first_token_s)
                if reuse:
                    reread, n_prompt, kept = gen.stats.prompt_tokens - gen.stats.reused_prompt_tokens, \
                        gen.stats.prompt_tokens, gen.token_ids.tolist()
                else:
                    same &= gen.token_ids.tolist() == kept
        a, b = statistics.median(full), statistics.median(cached)
        print(f"| {backend} | {n_prompt:,} | {reread:,} | {1e3 * a:,.1f} | {1e3 * b:,.1f} | {a / b:.1f}x | {same} |")


if __name__ == "__main__":
    main()
