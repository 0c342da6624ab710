"""Command line: `workbench bench ...` (llama-bench's flags and table) and `workbench plan ...`.

    workbench bench -m tiny -b torch -p 512 -n 128 -r 5
    workbench bench -m tiny -p 128,512 -n 64 -d 0,1024 -o json --output results.json
    workbench bench -m http://127.0.0.1:8000/v1 -p 256 -n 64 -c 1,4,16     (a server, like vllm bench serve)
    workbench plan -m Qwen/Qwen3.5-35B-A3B -w gguf-q4_k_m -c 32768 --device "RTX 4090"
    workbench plan -m Qwen/Qwen3.5-397B-A17B -w fp8 --devices "8x H200"
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import WorkbenchError


def _int_list(text: str) -> list[int]:
    from .benchmark import parse_int_list
    try:
        return parse_int_list(text, "value")
    except WorkbenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _flatten(values, default):
    if not values:
        return default
    return [v for group in values for v in group]


def _progress(done: int, total: int, name: str) -> None:
    if name != "done":
        print(f"[{done + 1}/{total}] {name} ...", file=sys.stderr, flush=True)


def bench_command(args) -> int:
    import workbench

    from .benchmark import bench, markdown

    # Checked before the model loads and the benchmark runs, so no result is lost at the end.
    if args.output:
        folder = Path(args.output).expanduser().resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise WorkbenchError(f"--output {args.output}: the folder {folder} does not exist or is not "
                                 "writable; create it first or write somewhere else.")
    progress = None if args.quiet else _progress
    if args.model.startswith(("http://", "https://")):  # a server: measured like vLLM's serving benchmark
        from .remote.serving_bench import markdown as serving_markdown
        model = workbench.connect(args.model, api_key=os.environ.get("OPENAI_API_KEY"))
        df = bench(model, prompt_tokens=_flatten(args.prompt, [512]), new_tokens=_flatten(args.new, [128]),
                   concurrency=_flatten(args.concurrency, [1, 4, 16]), requests=args.requests, progress=progress)
        table = serving_markdown
    else:
        if args.concurrency or args.requests:
            raise WorkbenchError("--concurrency and --requests measure a server: give its URL as -m "
                                 "(e.g. -m http://127.0.0.1:8000/v1).")
        model = workbench.load(args.model, backend=args.backend, device=args.device, dtype=args.dtype)
        df = bench(model, prompt_tokens=_flatten(args.prompt, [512]), new_tokens=_flatten(args.new, [128]),
                   repeats=args.repeats, depth=_flatten(args.depth, [0]), combined=args.combined,
                   bandwidth_gbs=args.bandwidth, progress=progress)
        table = markdown
    if args.format == "json":
        text = df.to_json(orient="records", indent=2)
    elif args.format == "csv":
        text = df.to_csv(index=False)
    else:
        text = table(df)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
        print(f"wrote {len(df)} rows to {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def plan_command(args) -> int:
    import workbench

    p = workbench.plan(args.model, weights=args.weights, context=args.context, batch=args.batch,
                       device=args.device_name, devices=args.devices)
    print(p.table().round(3).to_markdown() if _has_tabulate() else p.table().round(3).to_string())
    print(p.verdict())
    for note in p.notes:
        print("note:", note)
    for engine, line in getattr(p, "commands", {}).items():
        print(f"{engine}: {line}")
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="workbench", description="Qwen Workbench command line.")
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="measure tokens per second like llama-bench",
                       description="pp<N>: prefill N tokens; tg<N>: decode N tokens; comma lists or repeated "
                                   "flags make a sweep (every combination, like llama-bench).")
    b.add_argument("-m", "--model", default="tiny",
                   help="bundled name, folder, Hub id, .gguf file, bundled GGUF copy like tiny:Q4_0 (default tiny), "
                        "or a server's URL (http://host:port/v1)")
    b.add_argument("-b", "--backend", default="auto", choices=["auto", "torch", "mlx", "llamacpp"])
    b.add_argument("--device", default=None, help="torch: cpu | cuda | cuda:N; MLX and llama.cpp: gpu | cpu")
    b.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    b.add_argument("-p", "--n-prompt", dest="prompt", type=_int_list, action="append", help="prompt tokens (512)")
    b.add_argument("-n", "--n-gen", dest="new", type=_int_list, action="append", help="generated tokens (128)")
    b.add_argument("-d", "--n-depth", dest="depth", type=_int_list, action="append", help="context depth (0)")
    b.add_argument("-r", "--repetitions", dest="repeats", type=int, default=5, help="timed runs per test (5)")
    b.add_argument("--combined", action="store_true", help="also pp<N>+tg<M> tests")
    b.add_argument("-c", "--concurrency", type=_int_list, action="append",
                   help="a server (-m http://...): concurrent requests per level (1,4,16)")
    b.add_argument("--requests", type=int, default=None, help="a server: requests per level (4 x concurrency, 8..64)")
    b.add_argument("--bandwidth", type=float, default=None, help="device memory bandwidth in GB/s for the ceiling share")
    b.add_argument("-o", "--output-format", dest="format", default="md", choices=["md", "json", "csv"])
    b.add_argument("--output", default=None, help="write to this file instead of stdout")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    b.set_defaults(run=bench_command)
    p = sub.add_parser("plan", help="memory plan and decode ceiling of a model, from its config")
    p.add_argument("-m", "--model", required=True)
    p.add_argument("-w", "--weights", default="bf16")
    p.add_argument("-c", "--context", type=int, default=32_768)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", dest="device_name", default=None)
    p.add_argument("--devices", default=None, help="several GPUs of one node, e.g. '8x H200' (tensor + expert parallel)")
    p.set_defaults(run=plan_command)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
