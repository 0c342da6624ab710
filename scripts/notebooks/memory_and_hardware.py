"""Cells of notebooks/04_memory_and_hardware.ipynb."""
from cells import IGNORE, code, md

NAME = "04_memory_and_hardware"

cells = [
    md("# Memory and hardware: will it fit, and how fast can it go?\n\n"
       "Before downloading 70 GB, plan: the workbench computes, from a model's `config.json` alone, its exact "
       "parameter counts, the bytes of its weights in each format (with the real overheads: scales, group "
       "biases, layers kept at higher precision), its KV cache and DeltaNet state at a context length, and the "
       "batch-1 decode ceiling that a device's memory bandwidth allows. Then it checks the claims people make "
       "about Qwen3.5, one by one."),
    code("import pandas as pd\nimport workbench\nfrom workbench.planner import DEVICES, FORMATS, known, plan\n"
         "from workbench.planner.devices import GB\nfrom workbench.figures import planner as fp\n\n"
         "pd.set_option(\"display.width\", 120)\nprint(\"known models:\", \", \".join(known()))"),
    md("## Exact parameter counts\n\n`workbench.spec(...)` reads a config (a known Hub id, a name, or the path of "
       "*any* Qwen3.5-family `config.json`) into the same `ModelSpec` that `load()` gives a loaded model. Counts: "
       "the text model, the vision tower, the multi-token-prediction layer(s), their total (what the release's "
       "safetensors hold), and what a decoded token reads (the top-k experts, not all of them; one embedding "
       "row, not the table)."),
    code("rows = []\nfor repo in known():\n    s = workbench.spec(repo)\n"
         "    rows.append({\"model\": repo.split(\"/\")[1], \"layers\": s.num_layers, \"text (B)\": s.params_text / 1e9,\n"
         "                 \"vision (B)\": s.params_vision / 1e9, \"MTP (B)\": s.params_mtp / 1e9,\n"
         "                 \"total (B)\": s.params_total / 1e9, \"read per token (B)\": s.params_active / 1e9})\n"
         "print(pd.DataFrame(rows).set_index(\"model\").round(3))"),
    md("The names count a little differently: *A3B* / *A17B* include the embedding table in the active "
       "parameters (397B-A17B: 16.33B read per token + 1.02B of embeddings = 17.35B), while the workbench counts "
       "what decoding reads. The Qwen3.5-0.8B config shipped here lacks its MTP keys, so its MTP count is 0."),
    md("## Weight formats and their real cost\n\nBits per weight including everything a format stores "
       "(block scales, group scales and biases), for Qwen3.5-35B-A3B:"),
    code("s = workbench.spec(\"Qwen/Qwen3.5-35B-A3B\")\n"
         "print(pd.DataFrame([{\"format\": f, \"what\": FORMATS[f].description, \"runs on\": FORMATS[f].backend,\n"
         "                     \"bits/weight\": round(plan(s, f, 4096).bits_per_weight, 3),\n"
         "                     \"weights (GB)\": round(plan(s, f, 4096).weight_bytes / GB, 2)} for f in FORMATS]).set_index(\"format\"))"),
    md("## A memory plan\n\n`workbench.plan(model, weights, context, batch, device)` adds the KV cache of the "
       "full-attention layers, the DeltaNet recurrent and conv state, an activations estimate and the runtime's "
       "own memory, and gives a verdict against a device (a table of common GPUs and Apple chips; pass "
       "`planner.Device(name, memory_gb, bandwidth_gbs)` for yours). Apple chips lend the GPU about 3/4 of "
       "unified memory by default."),
    code("p = workbench.plan(\"Qwen/Qwen3.5-35B-A3B\", \"gguf-q4_k_m\", context=32_768, device=\"RTX 4090\")\n"
         "print(p.table().round(3))\nprint(p.verdict())"),
    code("fp.memory_bars([workbench.plan(\"Qwen/Qwen3.5-35B-A3B\", f, 32_768, device=\"RTX 4090\") for f in\n"
         "                 [\"bf16\", \"fp8\", \"gguf-q8_0\", \"gguf-q4_k_m\"]])", metadata=IGNORE),
    md("## Checking the claims, one by one\n\nEach claim gets the planner's numbers and a verdict. Context 8k "
       "tokens unless said otherwise; \"holds\" means the numbers support the claim as stated."),
    code("claims = []\n\ndef claim(text, verdict, numbers):\n    claims.append({\"claim\": text, \"verdict\": verdict, \"numbers\": numbers})\n\n"
         "p = workbench.plan(\"Qwen3.5-27B\", \"gguf-q4_k_m\", 8192)\n"
         "claim(\"27B fits ~18 GB\", \"holds at 4-bit\" if 16 * GB < p.total_bytes < 19 * GB else \"does not hold\",\n"
         "      f\"Q4_K_M weights {p.weight_bytes / GB:.1f} GB, total {p.total_bytes / GB:.1f} GB at 8k (bf16 would be \"\n"
         "      f\"{workbench.plan('Qwen3.5-27B', 'bf16', 8192).total_bytes / GB:.0f} GB)\")\n\n"
         "p = workbench.plan(\"Qwen3.5-35B-A3B\", \"gguf-q4_k_m\", 8192, device=\"RTX 4090\")\n"
         "longest = max(c for c in [2**k for k in range(10, 19)]\n"
         "              if workbench.plan(\"Qwen3.5-35B-A3B\", \"gguf-q4_k_m\", c, device=\"RTX 4090\").fits)\n"
         "claim(\"35B-A3B ~24 GB at Q4\", \"holds: fits a 24 GB card\" if p.fits else \"does not hold\",\n"
         "      f\"Q4_K_M weights {p.weight_bytes / GB:.1f} GB, total {p.total_bytes / GB:.1f} GB at 8k; fits 24 GB up to \"\n"
         "      f\"{longest:,} tokens of context\")\n\n"
         "p = workbench.plan(\"Qwen3.5-122B-A10B\", \"gguf-q4_k_m\", 8192)\nq = workbench.plan(\"Qwen3.5-122B-A10B\", \"mlx-4bit\", 8192)\n"
         "claim(\"122B ~70 GB\", \"holds at 4-bit\" if 65 * GB < q.total_bytes < 80 * GB else \"does not hold\",\n"
         "      f\"MLX 4-bit {q.total_bytes / GB:.1f} GB, Q4_K_M {p.total_bytes / GB:.1f} GB (bf16: \"\n"
         "      f\"{workbench.plan('Qwen3.5-122B-A10B', 'bf16', 8192).total_bytes / GB:.0f} GB)\")\n\n"
         "p = workbench.plan(\"Qwen3.5-397B-A17B\", \"mlx-4bit\", 8192)\n"
         "claim(\"397B-A17B needs 200+ GB quantized\", \"holds\" if p.total_bytes > 200 * GB else \"does not hold\",\n"
         "      f\"even at 4-bit {p.total_bytes / GB:.0f} GB (Q4_K_M \"\n"
         "      f\"{workbench.plan('Qwen3.5-397B-A17B', 'gguf-q4_k_m', 8192).total_bytes / GB:.0f} GB): a 256 GB+ Mac or several GPUs\")\n\n"
         "p = workbench.plan(\"Qwen3.5-35B-A3B\", \"gguf-q8_0\", 32_768, device=\"RTX 4090\", host_bandwidth_gbs=60)\n"
         "claim(\"25+ tok/s on a 24 GB GPU with MoE offload\", \"plausible\" if p.offload.decode_ceiling > 2 * 25 else \"doubtful\",\n"
         "      f\"35B-A3B Q8_0 at 32k on a 24 GB card: experts of {p.offload.cpu_expert_layers} of 40 layers in RAM; \"\n"
         "      f\"ceiling {p.offload.decode_ceiling:.0f} tok/s with 60 GB/s of RAM bandwidth (engines reach 30-60% of a ceiling)\")\n\n"
         "with pd.option_context(\"display.max_colwidth\", 200):\n    print(pd.DataFrame(claims).to_string(index=False))"),
    md("## How fast can it possibly go?\n\nBatch-1 decoding reads every active weight once per token, plus the KV "
       "cache and the DeltaNet state, so tokens/s can not exceed bandwidth / bytes per token. Real engines "
       "reach a fraction of this ceiling (kernel launches, routing, sampling); the throughput harness reports "
       "its measurements against the same figure."),
    code("devices = [\"RTX 4090\", \"RTX 5090\", \"H100 SXM\", \"H200\", \"M4 Max 128GB\", \"M3 Ultra 512GB\"]\n"
         "rows = []\nfor model, fmt in [(\"Qwen3.5-27B\", \"gguf-q4_k_m\"), (\"Qwen3.5-35B-A3B\", \"gguf-q4_k_m\"),\n"
         "                   (\"Qwen3.5-35B-A3B\", \"bf16\"), (\"Qwen3.5-122B-A10B\", \"mlx-4bit\"), (\"Qwen3.5-397B-A17B\", \"mlx-4bit\")]:\n"
         "    row = {\"model\": model, \"weights\": fmt}\n    for d in devices:\n"
         "        p = workbench.plan(model, fmt, 8192, device=d)\n"
         "        row[d] = f\"{p.decode_ceiling:,.0f}\" if p.fits else \"-\"\n    rows.append(row)\n"
         "print(pd.DataFrame(rows).set_index([\"model\", \"weights\"]).to_string())\nprint(\"(tok/s ceiling at 8k context; - = does not fit)\")"),
    md("## KV cache against DeltaNet state\n\nOnly 1 layer in 4 keeps a KV cache; the other 3 keep a fixed state. "
       "Below the crossover length the state is the larger part; beyond it the KV cache grows, but at a quarter "
       "of the rate of an all-attention model of the same shape."),
    code("from workbench.planner.caches import cache_growth\n\nrows = []\nfor repo in known():\n"
         "    g = cache_growth(workbench.spec(repo), 262_144)\n"
         "    rows.append({\"model\": repo.split(\"/\")[1], \"state (MiB)\": g.state_bytes / 2**20,\n"
         "                 \"KV per token (KiB)\": g.kv_bytes[-1] / g.context[-1] / 1024, \"crossover (tokens)\": round(g.crossover),\n"
         "                 \"KV at 256k (GiB)\": g.kv_bytes[-1] / 2**30, \"all-attention KV at 256k (GiB)\": g.kv_if_all_attention[-1] / 2**30})\n"
         "print(pd.DataFrame(rows).set_index(\"model\").round(2).to_string())"),
    md("## MoE offload\n\nA MoE model reads only its top-k experts per token, so the experts can live in system "
       "RAM (llama.cpp's `--n-cpu-moe`, `-ot exps=CPU`) while attention, DeltaNet, the shared expert and the "
       "caches stay on the GPU. Per token the device reads its part at GPU bandwidth and the CPU reads k/E of the "
       "offloaded experts at RAM bandwidth; the slower of the two dominates."),
    code("rows = []\nfor fmt in [\"gguf-q4_k_m\", \"gguf-q8_0\", \"bf16\"]:\n"
         "    p = workbench.plan(\"Qwen3.5-35B-A3B\", fmt, 32_768, device=\"RTX 4090\", offload=True)\n"
         "    o = p.offload\n    rows.append({\"weights\": fmt, \"total (GB)\": p.total_bytes / GB, \"expert layers in RAM\": o.cpu_expert_layers,\n"
         "                 \"RAM (GB)\": o.host_bytes / GB, \"read from GPU per token (GB)\": o.gpu_read_per_token / GB,\n"
         "                 \"read from RAM per token (GB)\": o.host_read_per_token / GB, \"ceiling (tok/s)\": o.decode_ceiling})\n"
         "print(pd.DataFrame(rows).set_index(\"weights\").round(2).to_string())"),
    md("## The planner panel\n\nPick a model, a format, a context length and a device."),
    code("from workbench.widgets import PlannerPanel\n\nPlannerPanel()", metadata=IGNORE),
    md("## A model the registry has never seen\n\nAny Qwen3.5-family `config.json` works: "
       "`workbench.plan(\"/path/to/config.json\", \"mlx-4bit\", 32_768, device=\"M4 Max 128GB\")`."),
]
