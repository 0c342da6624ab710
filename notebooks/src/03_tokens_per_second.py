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
# # Tokens per second, measured honestly
#
# How fast is a model on this machine? The workbench measures it the way `llama-bench` does, the same way on torch and MLX, and explains the number against the hardware limit. Timings depend on the machine and on whatever else it is doing, so this notebook is committed **without** them (the cells that measure are empty until you run them) and the test suite checks the layout of the results, not the numbers.

# %% [markdown]
# ## What to measure, and how
#
# - **Prefill** (`pp512`): the prompt goes through the model in one batch; compute-bound, thousands of tokens/s on a GPU.
# - **Decode** (`tg128`): one token at a time, each step reading every active weight once. At batch 1 this is bound by **memory bandwidth**: tokens/s can not exceed bandwidth / bytes read per token.
# - **Depth** (`@ d4096`): the same tests with 4096 tokens already in the cache. For a full-attention model decode slows as the KV cache grows; in Qwen3.5 only 1 layer in 4 has one.
#
# Rules the harness follows: one **untimed warm-up** per test (kernel compilation, caches, lazy initialisation); the device is **synchronised before every clock read** (CUDA and MLX run asynchronously, and MLX computes nothing until a result is needed, so an unsynchronised clock times the graph building, not the work); **deterministic synthetic prompts**; **EOS ignored** so every run decodes the same number of tokens; mean ± sample std over repeats.

# %%
import workbench
from IPython.display import display
from workbench.benchmark import depth_sweep, weight_bytes_per_token
from workbench.figures import bench as fb

model = workbench.load("tiny")
print(model.backend, model.device, model.dtype)

# %% tags=["nbval-ignore-output", "machine-dependent"]
df = workbench.bench(model, prompt_tokens=[64, 256], new_tokens=32, repeats=3, combined=True)
display(df[["test", "t/s", "t/s std", "ttft_ms", "latency_ms_median", "peak_memory_MiB"]].round(2))

# %% [markdown]
# Every row keeps its raw timings (`runs_s`: seconds per timed run), so the statistics can be recomputed:

# %%
import math, statistics
row = df.iloc[0]
rates = [(row.n_prompt + row.n_gen) / t for t in row.runs_s]
print(row.test, "repeats:", len(rates))
print("mean recomputed:", math.isclose(statistics.fmean(rates), row["t/s"], rel_tol=1e-12))
print("std recomputed: ", math.isclose(statistics.stdev(rates), row["t/s std"], rel_tol=1e-9))
print("columns:", ", ".join(c for c in df.columns))

# %% tags=["nbval-ignore-output", "machine-dependent"]
fb.results(df)

# %% [markdown]
# ## Three backends, same model, same tokens
# torch and MLX run the checkpoint; llama.cpp runs its GGUF copy, converted by llama.cpp's own tools (F32, so the numbers are the same model's; `tiny:Q4_0` is the 4-bit file). First, the same prompt gives the same tokens on all three, so the speeds below are for the same work:

# %%
import pandas as pd

engines = {"torch": workbench.load("tiny", backend="torch"), "mlx": workbench.load("tiny", backend="mlx"),
           "llamacpp": workbench.load("tiny:F32"), "llamacpp Q4_0": workbench.load("tiny:Q4_0")}
ids = model.encode("def read_config(path):\n")
greedy = {name: m.generate(ids, max_new_tokens=32, ignore_eos=True).token_ids for name, m in engines.items()}
for name, tokens in greedy.items():
    print(f"{name:14s} same 32 tokens as torch: {bool((tokens == greedy['torch']).all())}")

# %% [markdown]
# Then each is measured by the same harness, on the same synthetic token ids (`workbench.bench` draws them from a fixed seed), side by side in one run:

# %% tags=["nbval-ignore-output", "machine-dependent"]
rows = [workbench.bench(m, prompt_tokens=128, new_tokens=32, repeats=3).assign(engine=name)
        for name, m in engines.items()]
three = pd.concat(rows, ignore_index=True)
display(three[["engine", "backend", "dtype", "test", "t/s", "t/s std", "ttft_ms", "latency_ms_median"]].round(2))

# %% [markdown]
# On this kind of 2-core CPU llama.cpp decodes `tiny` several times faster than torch or MLX: at this size every step is framework overhead, which llama.cpp's C++ graph keeps small. `python scripts/bench_decode_loop.py` also holds each backend against its engine's own generation loop (transformers, mlx-lm, llama-cpp-python) on the same file.

# %% [markdown]
# ## The ceiling
#
# Bytes of weights one decoded token reads (the active experts, one embedding row, the whole lm_head) divided by the time per token is the *achieved weight bandwidth*; divided by the device's bandwidth it is the share of the ceiling. GPU and Apple chips are looked up by name in `workbench.planner.DEVICES`; for a CPU pass `bandwidth_gbs=` (e.g. ~60 GB/s for dual-channel DDR5). The bundled model is so small that per-step overheads, not bandwidth, set its speed: real models read gigabytes per token, and there the ceiling is what binds.

# %%
per_token = weight_bytes_per_token(model)
print(f"tiny reads {per_token / 1e6:.2f} MB of weights per token "
      f"({model.spec.params_active:,} active parameters x 4 bytes)")
big = workbench.plan("Qwen/Qwen3.5-35B-A3B", "bf16", context=4096, device="H200")
print(f"Qwen3.5-35B-A3B reads {big.read_per_token / 1e9:.2f} GB per token in bf16 at 4k context: at most "
      f"{big.decode_ceiling:,.0f} tok/s on an H200 (4.8 TB/s)")

# %% tags=["nbval-ignore-output", "machine-dependent"]
tg = workbench.bench(model, prompt_tokens=0, new_tokens=64, repeats=3, bandwidth_gbs=60)
display(tg[["test", "t/s", "weight_GB/s", "ceiling_share", "latency_ms_median", "latency_ms_p99"]].round(3))

# %% [markdown]
# ## Depth: the hybrid's flat cost
#
# Decode speed and memory as the context fills. Three of four layers keep a fixed state, so both stay nearly flat where an all-attention model would slow down and grow.

# %%
sweep = depth_sweep(model, depths=[0, 256, 512, 1024, 1536], new_tokens=32, repeats=2)
print(list(sweep.test))

# %% tags=["nbval-ignore-output", "machine-dependent"]
fb.depth_sweep(sweep)

# %% [markdown]
# ## Speculative decoding with Qwen3.5's own draft layer
#
# Every Qwen3.5 checkpoint ships a multi-token-prediction (MTP) layer: one decoder layer that reads the model's last hidden state and the next token and predicts the token after. `speculative=k` uses it to draft k tokens, then one forward of the model checks them all: the drafts that match what the model would have chosen are kept, plus one token of the model's own. Greedy output stays the plain output, token for token; sampled output keeps its distribution (a draft d is kept with probability p(d)). The Gated DeltaNet state cannot be cut back like a KV cache, so the verify keeps the state after every position and the rollback picks the one where the kept tokens end.

# %%
request = [{"role": "user", "content": "Could you tell me how warm it is in Porto right now?"}]
ids = model.prompt_ids(request, thinking=False)[0]
plain = model.generate(ids, max_new_tokens=48, speculative=0)
spec = model.generate(ids, max_new_tokens=48, speculative=3)
s = spec.stats
print("same tokens as plain greedy:", spec.token_ids.tolist() == plain.token_ids.tolist())
print(f"{s.accepted_tokens} of {s.draft_tokens} drafts accepted; {s.mean_accepted_length:.2f} tokens per verify forward")
print("accepted at draft position 1, 2, 3:", [f"{a:.0%}" for a in s.acceptance_by_position])

# %% [markdown]
# Traces and interventions work as without drafts: the verify forward reads rejected drafts too, and the records forget them, so a trace holds the accepted tokens only, in order. The MLX backend drafts and rolls back the same way (`workbench.load("tiny", backend="mlx")`).

# %%
traced = model.generate(ids, max_new_tokens=48, speculative=3, trace=workbench.Trace(routing=True))
plain_traced = model.generate(ids, max_new_tokens=48, speculative=0, trace=workbench.Trace(routing=True))
print("same routing records as plain decoding:", (traced.routing.experts == plain_traced.routing.experts).all())

# %% [markdown]
# Without `speculative=`, `generate`, `stream` and `chat` use `model.speculative`: 2 drafts where the checkpoint has an MTP layer and a verify is cheap next to a plain step (torch without CUDA graphs, MLX on Metal), 0 elsewhere. This default watches its own drafts: when fewer than 0.5 per verify were accepted over the last 8 verifies, the rest of the generation runs plain steps (`stats.backed_off_at`). `tiny-random`'s MTP layer is untrained, so its default gives up after 8 verifies; `tiny`'s keeps drafting. The rule reads only the tokens, so a seeded run is reproducible.

# %%
auto = model.generate(ids, max_new_tokens=48)
print("model.speculative =", model.speculative, f"| tiny: {auto.stats.mean_accepted_length:.2f}",
      "tokens per verify, backed off at", auto.stats.backed_off_at)
untrained = workbench.load("tiny-random")
guessing = untrained.generate("The weather in Porto is", max_new_tokens=48, ignore_eos=True)
print("tiny-random:", guessing.stats.accepted_tokens, "of", guessing.stats.draft_tokens,
      "drafts accepted; plain steps after token", guessing.stats.backed_off_at)

# %% [markdown]
# Green tokens were accepted drafts; grey ones the verify forward sampled itself (the first token, each correction, the token after a fully accepted run):

# %%
from workbench.figures import speculative as fsp

fsp.drafted_tokens([model.decode([t]) for t in spec.token_ids], spec.stats.drafted)

# %% [markdown]
# How often drafts are accepted depends on the text: a tool call or a templated answer is easy to guess, prose and code less so. A draft counts only if the ones before it were accepted, so later positions are always lower:

# %%
kinds = {"tool requests": [[{"role": "user", "content": q}] for q in
                           ("What's 45 times 12?", "Turn 5 miles into km please", "Weather in Oslo?")],
         "code": ["def moving_average(values, window):\n", "class Stack:\n    def __init__(self):\n"]}
by_kind = {name: [model.generate(p, max_new_tokens=48, thinking=False, speculative=3).stats for p in prompts]
           for name, prompts in kinds.items()}
fsp.acceptance(by_kind)

# %% [markdown]
# Does it pay? Each step runs the draft layer k times and a verify forward over k + 1 tokens, so it costs more than a plain step and gains only when enough drafts are accepted. Measured side by side in one sweep (`scripts/bench_speculative.py` adds transformers' and mlx-lm's own loops, the default and the MLX backend; on its prompts two drafts decoded 1.7x faster than plain on torch, 1.0x on MLX, which is why MLX's default on a CPU is off):

# %% tags=["nbval-ignore-output", "machine-dependent"]
import pandas as pd

runs = pd.concat([workbench.bench(model, prompt_tokens=0, new_tokens=48, repeats=3, speculative=k)
                  for k in (0, 1, 2, 3)], ignore_index=True)
display(runs[["test", "speculative", "t/s", "t/s std", "tokens/verify", "latency_ms_median"]].round(2))

# %% [markdown]
# On a real model the question is bandwidth. A verify forward reads the dense weights once for all k + 1 tokens, but each token picks its own experts, so an MoE verify reads the union of their experts; each draft reads the MTP layer and the whole lm_head. The planner counts both: the ceiling against the mean accepted length (the dotted line is this notebook's tool requests on `tiny`):

# %%
from workbench.planner import speculative_ceiling

plans = {"Qwen3.5-27B": workbench.plan("Qwen/Qwen3.5-27B", "bf16", context=4096, device="H200"),
         "Qwen3.5-35B-A3B": workbench.plan("Qwen/Qwen3.5-35B-A3B", "bf16", context=4096, device="H200")}
for name, p in plans.items():
    print(name, "|", speculative_ceiling(p, 3, 3.0))
tool_length = sum(s.accepted_tokens + s.verify_steps for s in by_kind["tool requests"]) / sum(
    s.verify_steps for s in by_kind["tool requests"])
fsp.ceiling(plans, measured={"tiny, tool requests": tool_length})

# %% [markdown]
# ## From the command line
#
# The same harness, with llama-bench's flags (comma lists make a sweep):
#
# ```bash
# workbench bench -m tiny -b torch -p 512 -n 128 -r 5
# workbench bench -m tiny -b mlx -p 128,512 -n 64 -d 0,1024 -o json --output results.json
# ```

# %% tags=["nbval-ignore-output", "machine-dependent"]
from workbench.cli import main
main(["bench", "-m", "tiny", "-p", "32", "-n", "8", "-r", "2", "-q"])

# %% [markdown]
# ## Live
#
# A tokens/s meter that updates while the text streams, and a dashboard that runs a sweep with a progress bar.

# %% tags=["nbval-ignore-output"]
from workbench.widgets import SpeedDashboard, StreamingMeter

StreamingMeter(model)

# %% tags=["nbval-ignore-output"]
SpeedDashboard(model)

# %% [markdown]
# ## Side by side with the raw engines
#
# `python scripts/bench_decode_loop.py` runs transformers' own `generate` and mlx-lm's `stream_generate` next to the workbench's generation on the same model and settings, in one run, and prints the ratios, with the cost of routing and DeltaNet tracing beside them.

# %% [markdown]
# ## On a real model
#
# ```python
# model = workbench.load("Qwen/Qwen3.5-35B-A3B")   # CUDA GPU or Apple Silicon
# df = workbench.bench(model, prompt_tokens=512, new_tokens=128, repeats=5, depth=[0, 4096, 16384])
# print(workbench.benchmark.markdown(df))   # llama-bench's table: weight_GB/s and ceiling_share against the GPU's bandwidth
# ```
