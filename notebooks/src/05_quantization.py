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
# # What quantization changes inside the model
#
# Almost everyone runs Qwen3.5 quantized: a GGUF Q4_K_M in llama.cpp, an MLX 4-bit copy on a Mac, FP8 on a server. "Quantized versions trade some accuracy", but where? This tutorial runs the same token ids through a reference and its quantized copies, on three backends, and measures three things:
#
# 1. **The next-token distribution**: KL divergence from the reference, how often the top token changes, the change in the probability of the text's real next token (Δp), perplexity. The protocol is exactly `llama-perplexity --kl-divergence`'s, so the numbers can be held against llama.cpp's own on the same file and text.
# 2. **Expert routing** (MoE models): does a quantized router send each token to the same experts, layer by layer?
# 3. **The Gated DeltaNet state**: how far the recurrent state drifts, and the decay and write strength that drive it.

# %% [markdown]
# ## The copies
# The reference is the bundled `tiny` checkpoint (float32) on torch. Set-up made its GGUF copies with llama.cpp's own converter and quantizer (`tiny:F32`, `tiny:Q8_0`, `tiny:Q4_0`); `workbench.quantize` makes an MLX 4-bit copy here with mlx-lm's converter (its Qwen3.5 recipe keeps the routers at 8 bits):

# %%
import tempfile
from pathlib import Path

import workbench
from workbench.benchmark import weight_bytes_per_token

folder = Path(tempfile.mkdtemp())
mlx_4bit = workbench.quantize("tiny", "mlx-4bit", folder / "tiny-mlx-4bit")

reference = workbench.load("tiny", backend="torch")
candidates = {
    "llama.cpp F32": workbench.load("tiny:F32"),
    "llama.cpp Q8_0": workbench.load("tiny:Q8_0"),
    "llama.cpp Q4_0": workbench.load("tiny:Q4_0"),
    "MLX 4-bit": workbench.load(mlx_4bit, backend="mlx"),
}
for name, m in candidates.items():
    print(f"{name:15s} {m.backend:9s} {m.dtype:9s} {weight_bytes_per_token(m) / 1e6:5.2f} MB read per token")

# %% [markdown]
# Each copy says what it holds: `tiny`'s expert matrices are 96 wide, which MLX's groups of 64 do not divide, so mlx-lm leaves them in float32 and only the 128-wide matrices become 4-bit; llama.cpp's Q4_0 blocks of 32 fit everything but the router, which llama.cpp never quantizes.

# %%
print(candidates["MLX 4-bit"].kernels["moe"])
print(candidates["llama.cpp Q4_0"].kernels["weights"])

# %% [markdown]
# ## The comparison
# `workbench.drift` encodes the text once (a clear error if a candidate's tokenizer disagrees), cuts it into chunks of `context` tokens, runs each chunk from an empty cache through every model, and scores the second half of each chunk, as `llama-perplexity -c 128 --kl-divergence` would. The text is the model card of `tiny`, which the model never saw in that form.

# %%
text = (Path(reference.path) / "README.md").read_text()
report = workbench.drift(reference, candidates, text, context=128)
print(report.chunks, "chunks of", report.context, "tokens;", len(report.per_token["llama.cpp Q4_0"].kld), "scored tokens each")

# %% tags=["nbval-ignore-output"]
report.tokens.round(4)  # the 4th decimal can differ between CPUs (SIMD paths round differently)

# %% [markdown]
# The F32 GGUF on llama.cpp is the same model on another engine: its KLD is rounding noise, which makes it the floor every quantized copy is measured against. Q8_0 stays close, though it already changes the top token several times in a hundred; the 4-bit copies move the distribution by far more, and change the top token on more than one token in ten (llama.cpp's Q4_0) and on about one in three (MLX's 4-bit copy).

# %%
kld = report.tokens.set_index("candidate")["mean KLD"]
print("F32 on llama.cpp is at the floor (mean KLD < 1e-6):", kld["llama.cpp F32"] < 1e-6)
print("KLD grows as bits shrink (F32 < Q8_0 < Q4_0):", kld["llama.cpp F32"] < kld["llama.cpp Q8_0"] < kld["llama.cpp Q4_0"])

# %% tags=["nbval-ignore-output"]
from workbench.figures import drift as fd

fd.kld_distributions(report)

# %% [markdown]
# ## Routing: do the same tokens reach the same experts?
# Per MoE layer: the share of tokens whose top-4 set is unchanged, the same first expert, the mean Jaccard overlap of the sets, and how far the renormalised weights moved.

# %% tags=["nbval-ignore-output"]
report.routing.groupby("candidate", sort=False)[["top-k set agreement", "top-1 agreement", "mean Jaccard",
                                                  "weight shift"]].mean().round(3)

# %% tags=["nbval-ignore-output"]
fd.routing_heatmap(report)

# %% [markdown]
# Which tokens changed experts most, and which experts the 4-bit copy drops or picks up instead:

# %% tags=["nbval-ignore-output"]
worst, experts = report.changes["llama.cpp Q4_0"]
print(worst.round(3).to_string(index=False))
print(experts.head(6).to_string(index=False))

# %% [markdown]
# ## The DeltaNet state
# The state is a running sum over every token so far, so errors can accumulate in it; the decay and write strength per head come from small projections that quantize with the rest.

# %% tags=["nbval-ignore-output"]
report.deltanet.groupby("candidate", sort=False).mean().drop(columns="layer").round(4)

# %% [markdown]
# ## Where it happens in the text
# Each token coloured by the KLD of the prediction that produced it; hover for both models' top tokens and both expert sets at the last MoE layer.

# %% tags=["nbval-ignore-output"]
fd.text_by_kld(report, "llama.cpp Q4_0")

# %% [markdown]
# ## The explorer
# Pick the reference and candidates, paste text, press Run; a progress bar follows the models.

# %% tags=["nbval-ignore-output"]
from workbench.widgets.quantization import QuantizationExplorer

QuantizationExplorer({"torch f32": reference, **candidates}, text=text[:4000], context=128)

# %% [markdown]
# ## Real models
# Community sweeps of Qwen3.5-35B-A3B Q4 GGUF files report mean KLDs from about 0.010 to 0.052 against the full-precision model (llama-perplexity on wikitext-style text at its default context of 512), with the better numbers from importance-matrix quants. None of them report routing: with a MoE model, a quantized router can pick other experts, and that is what the routing table above measures. To run the same comparison on your own hardware:
#
# ```python
# ref = workbench.load("Qwen/Qwen3.5-35B-A3B", backend="torch")          # or its BF16 / Q8_0 GGUF
# q4 = workbench.load("unsloth/Qwen3.5-35B-A3B-GGUF", file="*Q4_K_M.gguf")
# report = workbench.drift(ref, {"Q4_K_M": q4}, open("wiki.test.raw").read(), context=512)
# ```
#
# and, to hold the numbers against llama.cpp's own on the same files and text:
#
# ```bash
# llama-perplexity -m Qwen3.5-35B-A3B-BF16.gguf -f wiki.test.raw -c 512 --kl-divergence-base base.kld
# llama-perplexity -m Qwen3.5-35B-A3B-Q4_K_M.gguf --kl-divergence-base base.kld --kl-divergence
# ```
#
# llama.cpp stores the base log-probabilities in 16 bits over 16 nats (it ignores probabilities below e^-16 and can show tiny negative KLDs); the workbench keeps them in float64, so expect agreement to about 1e-4 on the mean.
