"""Device check of the torch backend's CUDA path at the real shapes of a Qwen3.5 release, with
random weights (nothing downloaded).

    python scripts/device_check.py                      # Qwen3.5-35B-A3B, all 40 layers if they fit
    python scripts/device_check.py --layers 8           # fewer layers (same per-layer shapes)
    python scripts/device_check.py --tiny --device cpu  # the same steps at tiny shapes (the tests run this)

Steps, each written to the JSON report as it finishes (a run cut short still leaves its figures):
1. environment: torch / CUDA / transformers / triton / flash-linear-attention versions, the GPU;
2. the text model of the release's config.json, built with random weights directly on the device
   (as many layers as fit in memory, keeping the 3 DeltaNet : 1 attention pattern), `.kernels`;
3. fast path against reference path: the same tokens through both (teacher-forced), logits
   compared step by step, and greedy generations compared;
4. pp<N> and tg<M> as llama-bench defines them (`workbench.bench`) on the fast path, tg on the
   reference path for the ratio, and the share of the device's memory-bandwidth ceiling.

On a GPU machine without internet, carry what is missing as wheels: transformers>=5.23 (Qwen3.5),
fla-core and flash-linear-attention (the Triton gated delta rule), see pyproject's `cuda` extra.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import workbench  # noqa: E402
from workbench.benchmark import weight_bytes_per_token  # noqa: E402
from workbench.model import Model  # noqa: E402
from workbench.spec import ModelSpec  # noqa: E402
from workbench.tokenizer import Tokenizer  # noqa: E402

CONFIGS = ROOT / "workbench" / "configs"
TOKENIZER = ROOT / "workbench" / "checkpoints" / "tiny-dense"  # any bundled tokenizer: bench feeds ids
TARGET_SHARE = 0.20   # of the bandwidth ceiling, batch-1 decode (the target)
# Tiny shapes that keep every structural feature of the release (GQA in both attention kinds,
# gated attention, shared expert, top-k of many experts).
TINY = dict(hidden_size=64, num_hidden_layers=4, layer_types=["linear_attention"] * 3 + ["full_attention"],
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, linear_num_key_heads=2,
            linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16, num_experts=8,
            num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32)


def versions() -> dict:
    import torch
    out = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("transformers", "triton", "fla-core", "flash-linear-attention", "causal-conv1d", "accelerate"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.update(gpu=props.name, gpu_memory_GiB=round(props.total_memory / 2**30, 1),
                   capability=".".join(map(str, torch.cuda.get_device_capability(0))))
    return out


def release_config(name: str, tiny: bool, layers: int | None) -> dict:
    path = CONFIGS / f"{name}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.json")))
        raise SystemExit(f"no config for {name!r} in {CONFIGS}; known: {known}")
    config = json.loads(path.read_text())
    text = config.get("text_config", config)
    if tiny:
        text.update(TINY)
    if layers:
        text["num_hidden_layers"] = layers
        text["layer_types"] = text["layer_types"][:layers]
    return config


def layers_that_fit(config: dict, dtype_bytes: int, free_bytes: int) -> int:
    """How many decoder layers fit in `free_bytes` (85% of it), keeping whole 4-layer blocks."""
    text = config.get("text_config", config)
    spec = ModelSpec.from_config(config)
    per_layer = (spec.params_text - 2 * text["vocab_size"] * text["hidden_size"]) / text["num_hidden_layers"]
    fit = int((0.85 * free_bytes / dtype_bytes - 2 * text["vocab_size"] * text["hidden_size"]) // per_layer)
    interval = text.get("full_attention_interval", 4)
    return max(interval, min(text["num_hidden_layers"], fit // interval * interval))


def build(config: dict, folder: Path, device: str, dtype: str, seed: int) -> Model:
    """A workbench Model over a transformers model with random weights made on `device`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from workbench.backends.torch_backend import TorchBackend

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (TOKENIZER / f).exists():
            shutil.copy(TOKENIZER / f, folder / f)
    spec = ModelSpec.from_file(folder)
    hf_config = AutoConfig.from_pretrained(folder)
    torch_dtype = getattr(torch, dtype)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=torch_dtype, attn_implementation="sdpa")
    model.to_empty(device=device)
    randomize(model, seed)
    return Model(TorchBackend.from_module(model, spec), Tokenizer(folder), folder, spec)


def randomize(model, seed: int) -> None:
    """Weights at the scale of a trained model (std 0.02), norm offsets and DeltaNet decay
    parameters in their usual ranges, and the buffers `to_empty` left unset recomputed."""
    import torch
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "A_log":
                p.copy_(torch.empty_like(p, dtype=torch.float32).uniform_(1, 16, generator=gen).log())
            elif leaf == "dt_bias":
                p.fill_(1.0)
            elif p.ndim == 1:  # RMSNorm weights: the (1 + w) form, small offsets
                p.normal_(0.0, 0.1, generator=gen)
            else:
                p.normal_(0.0, 0.02, generator=gen)
        rotary = model.model.rotary_emb  # its inv_freq buffers are not parameters: made anew
        model.model.rotary_emb = type(rotary)(config=rotary.config).to(rotary.inv_freq.device)


def compare_paths(model: Model, prompt: int, steps: int, seed: int) -> dict:
    """Teacher-forced: the same prompt and continuation through the fast and the reference path;
    logits compared at every step. Then greedy generations on each."""
    import torch
    engine = model.engine
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, model.spec.vocab_size, size=prompt + steps).astype(np.int64)
    device = engine.model.device

    def run(fast: bool) -> np.ndarray:
        cache = engine.new_cache(capacity=prompt + steps, fast=fast)
        out = [engine.to_numpy(engine.forward(ids[:prompt], cache))]
        for t in ids[prompt:prompt + steps - 1]:
            out.append(engine.to_numpy(engine.forward(torch.tensor(int(t), device=device), cache)))
        return np.stack(out)

    fast, ref = run(True), run(False)
    diff = np.abs(fast - ref)
    scale = float(np.abs(ref).max())
    model.fast_decode = False
    g_ref = model.generate(ids[:prompt], max_new_tokens=steps, ignore_eos=True).token_ids
    model.fast_decode = True
    g_fast = model.generate(ids[:prompt], max_new_tokens=steps, ignore_eos=True).token_ids
    same = int(np.argmax(np.append(g_ref != g_fast, True)))
    return {"steps": steps, "max_abs_diff": float(diff.max()), "logit_scale": scale,
            "relative_diff": float(diff.max() / scale), "argmax_agreement": float((fast.argmax(-1) == ref.argmax(-1)).mean()),
            "greedy_tokens_identical": same, "greedy_tokens": steps}


def passes(check: dict, dtype: str) -> bool:
    if dtype == "float32":
        return check["relative_diff"] < 1e-4 and check["argmax_agreement"] == 1.0
    return check["relative_diff"] < 5e-2 and check["argmax_agreement"] >= 0.9


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="Qwen3.5-35B-A3B", help="a config in workbench/configs")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers to build (default: all that fit)")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes of the same structure (CPU tests)")
    ap.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    ap.add_argument("--dtype", default=None, help="bfloat16 (default on CUDA) or float32")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--reference-new", type=int, default=32, help="tg length on the reference path")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check-steps", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="device_check.json")
    args = ap.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    out = Path(args.out)
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args), "device": device,
                    "dtype": dtype, "environment": versions(), "phases_s": {}}
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        report["phases_s"][name] = round(now - clock, 2)
        clock = now
        out.write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"[{name}] {report['phases_s'][name]} s", flush=True)

    config = release_config(args.model, args.tiny, args.layers)
    text = config.get("text_config", config)
    if device.startswith("cuda") and not args.layers:
        free, _ = torch.cuda.mem_get_info()
        fit = layers_that_fit(config, torch.finfo(getattr(torch, dtype)).bits // 8, free)
        if fit < text["num_hidden_layers"]:
            text["num_hidden_layers"], text["layer_types"] = fit, text["layer_types"][:fit]
    with tempfile.TemporaryDirectory() as tmp:
        model = build(config, Path(tmp) / args.model, device, dtype, args.seed)
        model.fast_decode = True  # the default on CUDA; on a CPU (--tiny) switched on to be checked
        spec = model.spec
        full_layers = json.loads((CONFIGS / f"{args.model}.json").read_text()).get("text_config", {}).get(
            "num_hidden_layers")
        report["model"] = {"config": args.model, "tiny": args.tiny, "layers": spec.num_layers,
                           "layers_in_release": full_layers, "params_text": spec.params_text,
                           "params_active": spec.params_active, "summary": spec.summary(),
                           "weight_bytes_per_token": weight_bytes_per_token(model)}
        report["kernels"] = model.kernels
        phase("build")

        check = compare_paths(model, min(64, args.prompt), args.check_steps, args.seed)
        check["passed"] = passes(check, dtype)
        report["check"] = check
        phase("check")

        model.fast_decode = True
        rows = workbench.bench(model, prompt_tokens=args.prompt, new_tokens=args.new, repeats=args.repeats)
        report["bench"] = json.loads(rows.drop(columns=["runs_s"]).to_json(orient="records"))
        phase("bench fast path")

        model.fast_decode = False
        ref = workbench.bench(model, prompt_tokens=0, new_tokens=args.reference_new, repeats=1)
        report["bench_reference"] = json.loads(ref.drop(columns=["runs_s"]).to_json(orient="records"))
        model.fast_decode = True
        phase("bench reference path")

    tg = next(r for r in report["bench"] if r["n_gen"])
    share = tg.get("ceiling_share")
    report["summary"] = {
        "check_passed": check["passed"],
        "pp_tokens_per_s": next(r["t/s"] for r in report["bench"] if r["n_prompt"]),
        "tg_tokens_per_s": tg["t/s"], "tg_reference_tokens_per_s": report["bench_reference"][0]["t/s"],
        "fast_vs_reference": tg["t/s"] / report["bench_reference"][0]["t/s"],
        "weight_GB_per_s": tg["weight_GB/s"],
        "ceiling_share": None if share is None or (isinstance(share, float) and math.isnan(share)) else share,
        "target_share": TARGET_SHARE,
    }
    s = report["summary"]
    s["target_met"] = bool(s["ceiling_share"] is not None and s["ceiling_share"] >= TARGET_SHARE
                           and not args.tiny and spec.num_layers == full_layers)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(json.dumps(report["summary"], indent=1))
    return report


if __name__ == "__main__":
    main()
