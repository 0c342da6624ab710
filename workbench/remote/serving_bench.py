"""A serving benchmark with the conventions of vLLM's (`vllm bench serve`): at each concurrency level
C, C clients send streaming requests back to back (a closed loop, as `--max-concurrency C` with an
unlimited request rate) until the level's requests are done; then

- TTFT: request sent -> first streamed text; TPOT: (latency - TTFT) / (output tokens - 1) per
  request; ITL: the gaps between streamed chunks (a chunk may hold several tokens: mlx_lm.server
  holds text back to word ends); E2EL: request sent -> last chunk;
- request throughput = completed / duration, output throughput = output tokens / duration, total
  token throughput = (prompt + output tokens) / duration, token counts from each response's usage.

Prompts are random text of about `prompt_tokens` tokens (random token ids decoded with the model's
tokenizer where it is on this machine, as vLLM's "random" dataset does; else random words), one per
request, seeded; every request asks for `new_tokens` with ignore_eos (servers without that flag may
stop sooner: the counts say what came back). The request count and a time limit bound each level.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd

from ..errors import WorkbenchError

if TYPE_CHECKING:
    from .model import RemoteModel

SEED = 1234
_WORDS = ("time person year way day thing man world life hand part child eye woman place work week case point "
          "government company number group problem fact river model expert token layer state memory speed server "
          "route kernel cache batch prompt answer table graph value signal order market").split()


@dataclass
class _Request:
    ok: bool
    error: str = ""
    ttft_s: float = float("nan")
    latency_s: float = float("nan")
    itl_s: np.ndarray | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0


def _ints(values, name: str, low: int = 1) -> list[int]:
    values = [values] if isinstance(values, (int, np.integer)) else list(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low for v in values):
        raise WorkbenchError(f"{name}={values!r} is invalid: give whole numbers >= {low}.")
    return [int(v) for v in values]


def prompts(model: "RemoteModel", n: int, prompt_tokens: int, seed: int = SEED) -> list[str]:
    """`n` random prompts of about `prompt_tokens` tokens each."""
    rng = np.random.default_rng(seed)
    tok = model.tokenizer
    if tok is not None:
        vocab = tok.vocab_size
        # Control tokens are left out: as text they would end the prompt's turn or the document.
        control = {tok.token_to_id(t) for t in tok.control_tokens}
        out = []
        for _ in range(n):
            ids = [int(i) for i in rng.integers(0, vocab, size=prompt_tokens * 2) if int(i) not in control]
            text = tok.decode(ids[:prompt_tokens], skip_special_tokens=True)
            for _ in range(3):  # decoded ids re-encode to more tokens (merges across boundaries): trim to length
                again = tok.encode(text)
                if len(again) <= prompt_tokens:
                    break
                text = tok.decode(again[:prompt_tokens], skip_special_tokens=True)
            out.append(text)
        return out
    words = max(1, round(prompt_tokens / 1.3))  # ~1.3 tokens per English word
    return [" ".join(rng.choice(_WORDS, size=words)) for _ in range(n)]


def serving_bench(model: "RemoteModel", concurrency: int | Sequence[int] = (1, 4, 16), requests: int | None = None,
                  prompt_tokens: int = 256, new_tokens: int = 64, max_seconds: float = 120.0,
                  progress: Callable[[int, int, str], None] | None = None, seed: int = SEED) -> pd.DataFrame:
    """One row per concurrency level (see the module docstring).

    requests: per level (default 4 x C, at least 8, at most 64); max_seconds: per level, after which
    no new request starts (the row says how many ran)."""
    levels = _ints(concurrency, "concurrency")
    prompt_tokens = _ints(prompt_tokens, "prompt_tokens")[0]
    new_tokens = _ints(new_tokens, "new_tokens")[0]
    if requests is not None:
        requests = _ints(requests, "requests")[0]
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) or not max_seconds > 0:
        raise WorkbenchError(f"max_seconds={max_seconds!r} is invalid: give the seconds a level may take, > 0.")
    rows = []
    for i, c in enumerate(levels):
        n = requests or min(64, max(8, 4 * c))
        if progress is not None:
            progress(i, len(levels), f"concurrency {c}: {n} requests")
        texts = prompts(model, n, prompt_tokens, seed + i)
        model.generate(texts[0], max_new_tokens=2)  # warm-up, untimed (first-request costs on the server)
        results, duration = _level(model, texts, c, new_tokens, max_seconds)
        rows.append(_row(model, c, n, results, duration))
    if progress is not None:
        progress(len(levels), len(levels), "done")
    return pd.DataFrame(rows)


def _level(model: "RemoteModel", texts: list[str], c: int, new_tokens: int,
           max_seconds: float) -> tuple[list[_Request], float]:
    deadline = time.perf_counter() + max_seconds
    queue = list(reversed(texts))
    lock = threading.Lock()
    results: list[_Request] = []

    def client() -> None:
        while True:
            with lock:
                if not queue or time.perf_counter() > deadline:
                    return
                text = queue.pop()
            results.append(_one(model, text, new_tokens))

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=c) as pool:
        for f in [pool.submit(client) for _ in range(c)]:
            f.result()
    return results, time.perf_counter() - start


def _one(model: "RemoteModel", text: str, new_tokens: int) -> _Request:
    try:
        gen = model.generate(text, max_new_tokens=new_tokens, ignore_eos=True)
    except WorkbenchError as exc:
        return _Request(False, str(exc)[:300])
    s = gen.stats
    return _Request(True, ttft_s=s.time_to_first_token_s, latency_s=s.total_s, itl_s=s.inter_token_s,
                    prompt_tokens=s.prompt_tokens, output_tokens=s.new_tokens)


def _stats(prefix: str, values_s, row: dict) -> None:
    v = np.asarray([x for x in values_s if x == x], dtype=float) * 1e3
    row[f"{prefix}_ms_mean"] = float(v.mean()) if v.size else np.nan
    row[f"{prefix}_ms_median"] = float(np.median(v)) if v.size else np.nan
    row[f"{prefix}_ms_p99"] = float(np.percentile(v, 99)) if v.size else np.nan


def _row(model: "RemoteModel", c: int, n: int, results: list[_Request], duration: float) -> dict:
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    row = {"model": model.model_id, "backend": f"remote: {model.engine_name}", "device": model.device,
           "dtype": model.dtype, "test": f"c{c}", "concurrency": c, "requests": n, "completed": len(ok),
           "failed": len(results) - len(ok), "not_run": n - len(results), "duration_s": duration,
           "n_prompt": in_tokens / len(ok) if ok else np.nan, "n_gen": out_tokens / len(ok) if ok else np.nan,
           "request_throughput": len(ok) / duration if duration > 0 else np.nan,
           "output_throughput": out_tokens / duration if duration > 0 else np.nan,
           "total_token_throughput": (in_tokens + out_tokens) / duration if duration > 0 else np.nan}
    row["t/s"], row["t/s std"] = row["output_throughput"], np.nan
    _stats("ttft", [r.ttft_s for r in ok], row)
    _stats("tpot", [(r.latency_s - r.ttft_s) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1], row)
    _stats("itl", np.concatenate([r.itl_s for r in ok if r.itl_s is not None] or [np.zeros(0)]), row)
    _stats("e2el", [r.latency_s for r in ok], row)
    row["errors"] = sorted({r.error for r in results if not r.ok})[:3]
    return row


def markdown(df: pd.DataFrame) -> str:
    """The serving table as vLLM's benchmark prints its summary, one line per concurrency level."""
    cols = [("concurrency", "{:.0f}"), ("completed", "{:.0f}"), ("failed", "{:.0f}"), ("request_throughput", "{:.2f}"),
            ("output_throughput", "{:,.1f}"), ("ttft_ms_median", "{:,.1f}"), ("ttft_ms_p99", "{:,.1f}"),
            ("tpot_ms_median", "{:,.2f}"), ("tpot_ms_p99", "{:,.2f}"), ("itl_ms_median", "{:,.2f}"),
            ("itl_ms_p99", "{:,.2f}")]
    head = "| " + " | ".join(c for c, _ in cols) + " |\n|" + "---|" * len(cols) + "\n"
    lines = ["| " + " | ".join("" if pd.isna(r[c]) else f.format(r[c]) for c, f in cols) + " |" for _, r in df.iterrows()]
    return head + "\n".join(lines) + f"\n\n{df.backend.iloc[0]} at {df.device.iloc[0]}; {df.requests.iloc[0]} requests per level"
