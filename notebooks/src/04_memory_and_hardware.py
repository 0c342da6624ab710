# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Memory and hardware: will it fit, and how fast can it go?
#
# Before downloading 70 GB, plan: the workbench computes, from a model's `config.json` alone, its exact parameter counts, the bytes of its weights in each format (with the real overheads: scales, group biases, layers kept at higher precision), its KV cache and DeltaNet state at a context length, and the batch-1 decode ceiling that a device's memory bandwidth allows. Then it checks the claims people make about Qwen3.5, one by one.

# %%
import pandas as pd
import workbench
from IPython.display import display
from workbench.planner import FORMATS, known, plan
from workbench.planner.devices import GB
from workbench.figures import planner as fp

pd.set_option("display.width", 120)
print("known models:", ", ".join(known()))

# %% [markdown]
# ## Exact parameter counts
#
# `workbench.spec(...)` reads a config (a known Hub id, a name, or the path of *any* Qwen3.5-family `config.json`) into the same `ModelSpec` that `load()` gives a loaded model. Counts: the text model, the vision tower, the multi-token-prediction layer(s), their total (what the release's safetensors hold), and what a decoded token reads (the top-k experts, not all of them; one embedding row, not the table).

# %%
rows = []
for repo in known():
    s = workbench.spec(repo)
    rows.append({"model": repo.split("/")[1], "layers": s.num_layers, "text (B)": s.params_text / 1e9,
                 "vision (B)": s.params_vision / 1e9, "MTP (B)": s.params_mtp / 1e9,
                 "total (B)": s.params_total / 1e9, "read per token (B)": s.params_active / 1e9})
display(pd.DataFrame(rows).set_index("model").round(3))

# %% [markdown]
# The names count a little differently: *A3B* / *A17B* include the embedding table in the active parameters (397B-A17B: 16.33B read per token + 1.02B of embeddings = 17.35B), while the workbench counts what decoding reads. The Qwen3.5-0.8B config shipped here lacks its MTP keys, so its MTP count is 0.

# %% [markdown]
# ## Weight formats and their real cost
#
# Bits per weight including everything a format stores (block scales, group scales and biases), for Qwen3.5-35B-A3B:

# %%
s = workbench.spec("Qwen/Qwen3.5-35B-A3B")
display(pd.DataFrame([{"format": f, "what": FORMATS[f].description, "runs on": FORMATS[f].backend,
                       "bits/weight": round(plan(s, f, 4096).bits_per_weight, 3),
                       "weights (GB)": round(plan(s, f, 4096).weight_bytes / GB, 2)} for f in FORMATS]).set_index("format"))

# %% [markdown]
# ## A memory plan
#
# `workbench.plan(model, weights, context, batch, device)` adds the KV cache of the full-attention layers, the DeltaNet recurrent and conv state, an activations estimate and the runtime's own memory, and gives a verdict against a device (a table of common GPUs and Apple chips; pass `planner.Device(name, memory_gb, bandwidth_gbs)` for yours). Apple chips lend the GPU about 3/4 of unified memory by default.

# %%
p = workbench.plan("Qwen/Qwen3.5-35B-A3B", "gguf-q4_k_m", context=32_768, device="RTX 4090")
display(p.table().round(3))
print(p.verdict())

# %% tags=["nbval-ignore-output"]
fp.memory_bars([workbench.plan("Qwen/Qwen3.5-35B-A3B", f, 32_768, device="RTX 4090") for f in
                 ["bf16", "fp8", "gguf-q8_0", "gguf-q4_k_m"]])

# %% [markdown]
# ## Checking the claims, one by one
#
# Each claim gets the planner's numbers and a verdict. Context 8k tokens unless said otherwise; "holds" means the numbers support the claim as stated.

# %%
claims = []

def claim(text, verdict, numbers):
    claims.append({"claim": text, "verdict": verdict, "numbers": numbers})

p = workbench.plan("Qwen3.5-27B", "gguf-q4_k_m", 8192)
claim("27B fits ~18 GB", "holds at 4-bit" if 16 * GB < p.total_bytes < 19 * GB else "does not hold",
      f"Q4_K_M weights {p.weight_bytes / GB:.1f} GB, total {p.total_bytes / GB:.1f} GB at 8k (bf16 would be "
      f"{workbench.plan('Qwen3.5-27B', 'bf16', 8192).total_bytes / GB:.0f} GB)")

p = workbench.plan("Qwen3.5-35B-A3B", "gguf-q4_k_m", 8192, device="RTX 4090")
longest = max(c for c in [2**k for k in range(10, 19)]
              if workbench.plan("Qwen3.5-35B-A3B", "gguf-q4_k_m", c, device="RTX 4090").fits)
claim("35B-A3B ~24 GB at Q4", "holds: fits a 24 GB card" if p.fits else "does not hold",
      f"Q4_K_M weights {p.weight_bytes / GB:.1f} GB, total {p.total_bytes / GB:.1f} GB at 8k; fits 24 GB up to "
      f"{longest:,} tokens of context")

p = workbench.plan("Qwen3.5-122B-A10B", "gguf-q4_k_m", 8192)
q = workbench.plan("Qwen3.5-122B-A10B", "mlx-4bit", 8192)
claim("122B ~70 GB", "holds at 4-bit" if 65 * GB < q.total_bytes < 80 * GB else "does not hold",
      f"MLX 4-bit {q.total_bytes / GB:.1f} GB, Q4_K_M {p.total_bytes / GB:.1f} GB (bf16: "
      f"{workbench.plan('Qwen3.5-122B-A10B', 'bf16', 8192).total_bytes / GB:.0f} GB)")

p = workbench.plan("Qwen3.5-397B-A17B", "mlx-4bit", 8192)
claim("397B-A17B needs 200+ GB quantized", "holds" if p.total_bytes > 200 * GB else "does not hold",
      f"even at 4-bit {p.total_bytes / GB:.0f} GB (Q4_K_M "
      f"{workbench.plan('Qwen3.5-397B-A17B', 'gguf-q4_k_m', 8192).total_bytes / GB:.0f} GB): a 256 GB+ Mac or several GPUs")

p = workbench.plan("Qwen3.5-35B-A3B", "gguf-q8_0", 32_768, device="RTX 4090", host_bandwidth_gbs=60)
claim("25+ tok/s on a 24 GB GPU with MoE offload", "plausible" if p.offload.decode_ceiling > 2 * 25 else "doubtful",
      f"35B-A3B Q8_0 at 32k on a 24 GB card: experts of {p.offload.cpu_expert_layers} of 40 layers in RAM; "
      f"ceiling {p.offload.decode_ceiling:.0f} tok/s with 60 GB/s of RAM bandwidth (engines reach 30-60% of a ceiling)")

with pd.option_context("display.max_colwidth", 200):
    display(pd.DataFrame(claims).set_index("claim"))

# %% [markdown]
# ## How fast can it possibly go?
#
# Batch-1 decoding reads every active weight once per token, plus the KV cache and the DeltaNet state, so tokens/s can not exceed bandwidth / bytes per token. Real engines reach a fraction of this ceiling (kernel launches, routing, sampling); the throughput harness reports its measurements against the same figure.

# %%
devices = ["RTX 4090", "RTX 5090", "H100 SXM", "H200", "M4 Max 128GB", "M3 Ultra 512GB"]
rows = []
for model, fmt in [("Qwen3.5-27B", "gguf-q4_k_m"), ("Qwen3.5-35B-A3B", "gguf-q4_k_m"),
                   ("Qwen3.5-35B-A3B", "bf16"), ("Qwen3.5-122B-A10B", "mlx-4bit"), ("Qwen3.5-397B-A17B", "mlx-4bit")]:
    row = {"model": model, "weights": fmt}
    for d in devices:
        p = workbench.plan(model, fmt, 8192, device=d)
        row[d] = f"{p.decode_ceiling:,.0f}" if p.fits else "-"
    rows.append(row)
display(pd.DataFrame(rows).set_index(["model", "weights"]))
print("(tok/s ceiling at 8k context; - = does not fit)")

# %% [markdown]
# ## KV cache against DeltaNet state
#
# Only 1 layer in 4 keeps a KV cache; the other 3 keep a fixed state. Below the crossover length the state is the larger part; beyond it the KV cache grows, but at a quarter of the rate of an all-attention model of the same shape.

# %%
from workbench.planner.caches import cache_growth

rows = []
for repo in known():
    g = cache_growth(workbench.spec(repo), 262_144)
    rows.append({"model": repo.split("/")[1], "state (MiB)": g.state_bytes / 2**20,
                 "KV per token (KiB)": g.kv_bytes[-1] / g.context[-1] / 1024, "crossover (tokens)": round(g.crossover),
                 "KV at 256k (GiB)": g.kv_bytes[-1] / 2**30, "all-attention KV at 256k (GiB)": g.kv_if_all_attention[-1] / 2**30})
display(pd.DataFrame(rows).set_index("model").round(2))

# %% [markdown]
# ## MoE offload
#
# A MoE model reads only its top-k experts per token, so the experts can live in system RAM (llama.cpp's `--n-cpu-moe`, `-ot exps=CPU`) while attention, DeltaNet, the shared expert and the caches stay on the GPU. Per token the device reads its part at GPU bandwidth and the CPU reads k/E of the offloaded experts at RAM bandwidth; the slower of the two dominates.

# %%
rows = []
for fmt in ["gguf-q4_k_m", "gguf-q8_0", "bf16"]:
    p = workbench.plan("Qwen3.5-35B-A3B", fmt, 32_768, device="RTX 4090", offload=True)
    o = p.offload
    rows.append({"weights": fmt, "total (GB)": p.total_bytes / GB, "expert layers in RAM": o.cpu_expert_layers,
                 "RAM (GB)": o.host_bytes / GB, "read from GPU per token (GB)": o.gpu_read_per_token / GB,
                 "read from RAM per token (GB)": o.host_read_per_token / GB, "ceiling (tok/s)": o.decode_ceiling})
display(pd.DataFrame(rows).set_index("weights").round(2))

# %% [markdown]
# ## The planner panel
#
# Pick a model, a format, a context length and a device.

# %% tags=["nbval-ignore-output"]
from workbench.widgets import PlannerPanel

PlannerPanel()

# %% [markdown]
# ## A model the registry has never seen
#
# Any Qwen3.5-family `config.json` works: `workbench.plan("/path/to/config.json", "mlx-4bit", 32_768, device="M4 Max 128GB")`.
