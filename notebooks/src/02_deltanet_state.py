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
# # Inside the Gated DeltaNet state
#
# Three of every four Qwen3.5 layers are Gated DeltaNet layers: instead of a KV cache that grows with the context, each head keeps a fixed $D_k \times D_v$ matrix, the *state*, updated once per token. This tutorial shows what the state holds, how fast it forgets and how it evolves token by token, on the bundled `tiny` model (trained on Python source, chats and tool calls, so its gates have learned what to keep) and, in the last cell, on a real one.

# %% [markdown]
# ## The gated delta rule
#
# For each token $t$ and value head $h$ (shapes per head):
#
# 1. **Projections and a short causal conv.** $q_t, k_t, v_t$ come from `in_proj_qkv` followed by a depthwise causal convolution over the last 4 tokens and SiLU; $q_t, k_t$ are then **L2-normalised** (and $q_t$ scaled by $1/\sqrt{D_k}$). Each key head serves $H_v/H_k$ consecutive value heads.
# 2. **Decay** $\alpha_t = \exp(g_t) \in (0, 1)$ with $g_t = -e^{A_{\log}}\,\mathrm{softplus}(a_t + \mathrm{dt\_bias})$: how much of the old state survives this token.
# 3. **Write strength** $\beta_t = \sigma(b_t) \in (0, 1)$.
# 4. **Delta update**: read what the decayed state returns for $k_t$, and move it towards $v_t$:
#
# $$S_t = \alpha_t S_{t-1} + k_t\,\big(\beta_t\,(v_t - \alpha_t S_{t-1}^\top k_t)\big)^\top = \alpha_t (I - \beta_t k_t k_t^\top) S_{t-1} + \beta_t k_t v_t^\top$$
#
# 5. **Readout** $o_t = S_t^\top q_t$, then a gated RMSNorm and `out_proj`.
#
# With $\beta_t = 1$ the write *replaces* what the state stored under key $k_t$; plain linear attention would only add to it. The memory half-life of a head is $t_{1/2} = \ln 0.5 / \ln \alpha_t$ tokens.

# %%
import numpy as np
import pandas as pd
import workbench
from workbench import DeltaNetCapture, Trace
from workbench.analysis import deltanet as da
from workbench.figures import deltanet as fd
from workbench.reference import gated_delta_rule

model = workbench.load("tiny")
s = model.spec
print(s.summary())
print(f"DeltaNet layers {s.linear_layers}: {s.linear_num_key_heads} key heads, "
      f"{s.linear_num_value_heads} value heads, state {s.linear_key_head_dim}x{s.linear_value_head_dim} per head")

# %% [markdown]
# ## Recording the state
#
# `Trace(deltanet=True)` keeps, for every DeltaNet layer, head and forwarded token, the decay, $\beta$ and the norm of the state after the token, plus the final state. `DeltaNetCapture(...)` asks for more: full states at chosen tokens (`states="all"` or a list), layers and heads, and the recurrence inputs ($q, k, v$). States after prompt tokens are exact, not interpolated: the fast prefill kernels only return the last state, so the workbench replays the recurrence token by token from the same inputs.

# %%
prompt = "one two three four. one two three four. one two three"
gen = model.generate(prompt, max_new_tokens=4, ignore_eos=True,
                     trace=Trace(deltanet=DeltaNetCapture(states="all", inputs=True), attention=True))
d = gen.deltanet
print(d)
print("decay", d.decay.shape, "| states", d.states.shape, "| final", d.final_state.shape)

# %% [markdown]
# ## Faithful: a numpy reference reproduces the captured states
#
# `workbench.reference.gated_delta_rule` is the recurrence above in ~15 lines of numpy. Fed with the captured inputs of a layer, it gives back the states the model computed.

# %%
for layer in d.state_layers:
    li = d.row(layer)
    states, _ = gated_delta_rule(d.queries[li], d.keys[li], d.values[li], d.decay[li], d.beta[li])
    err = np.linalg.norm(d.states[li] - states) / np.linalg.norm(states)
    print(f"layer {layer}: relative error below 1e-5: {err < 1e-5}")

# %% [markdown]
# ## How fast each head forgets
#
# The median half-life per head, then per token for one layer: a dip means the head wipes its memory at that token.

# %% tags=["nbval-ignore-output"]
fd.half_lives(d)

# %% [markdown]
# Heads differ by orders of magnitude: some forget within a token (their state is almost blank), others keep what they wrote for dozens of tokens. To see what a state holds, look at a head that remembers: the rest of this notebook follows the head with the longest half-life.

# %%
print(pd.DataFrame(da.readable_tokens(da.head_half_lives(d)), index=[f"layer {l}" for l in d.layers],
                   columns=[f"head {h}" for h in range(d.num_heads)]))
layer, head = da.longest_memory(d)
print(f"longest memory: layer {layer}, head {head}")

# %% tags=["nbval-ignore-output"]
fd.half_life_over_tokens(d, layer=layer)

# %% [markdown]
# ## How hard each head writes

# %% tags=["nbval-ignore-output"]
fd.write_strength(d, layer=layer)

# %% [markdown]
# ## How full the state gets
#
# The norm of the state after each token, and its *effective rank* (the exponential of the entropy of its normalised singular values): 1 after the first write, growing as the head stores more independent key directions, bounded by $D_k$.

# %% tags=["nbval-ignore-output"]
fd.state_norm(d)

# %% tags=["nbval-ignore-output"]
fd.effective_rank(d, layer=layer)

# %%
ranks = da.rank_over_tokens(d, layer=layer)[:, head]
print(f"layer {layer} head {head}: effective rank after token 0: {ranks[0]:.2f}, after token 4: {ranks[4]:.2f}, "
      f"after the last token: {ranks[-1]:.2f}")

# %% [markdown]
# ## The state itself
#
# One head's $D_k \times D_v$ state; move the slider to watch it change token by token.

# %% tags=["nbval-ignore-output"]
fd.state_matrix(d, layer=layer, head=head)

# %% [markdown]
# ## Effective attention
#
# Unrolling the recurrence gives the readout as a weighted sum of the values written so far, $o_t = \sum_{s \le t} a_{t,s} v_s$, with exact weights
# $a_{t,s} = \beta_s\, q_t^\top M_t \cdots M_{s+1} k_s$, $M_r = \alpha_r (I - \beta_r k_r k_r^\top)$. Unlike softmax attention these weights can be negative (the delta rule erases) and fade with the decay. Left: a DeltaNet head; right: a head of the model's full-attention layer on the same prompt.

# %% tags=["nbval-ignore-output"]
fd.effective_attention(d, layer=layer, head=head, attention=gen.attention)

# %%
a = da.effective_attention(d, layer=layer, head=head)
li = d.row(layer)
_, out = gated_delta_rule(d.queries[li], d.keys[li], d.values[li], d.decay[li], d.beta[li])
print("sum_s a[t,s] v_s equals the readout:", np.allclose(a @ d.values[li, :, head], out[:, head], atol=1e-8))

# %% [markdown]
# ## Memory: a fixed state against a growing KV cache
#
# Per sequence, the full-attention layers keep keys and values for every token; the DeltaNet layers keep a fixed state. Where the two lines cross, the hybrid's state stops being the larger part, and from there on it saves 3/4 of what an all-attention model of the same shape would keep.

# %%
from importlib.resources import files
from workbench.planner.caches import cache_growth

curves = [cache_growth(model.spec, model.context_length, "tiny")]
for name in ["Qwen3.5-0.8B", "Qwen3.5-27B", "Qwen3.5-35B-A3B", "Qwen3.5-397B-A17B"]:
    spec = workbench.ModelSpec.from_file(files("workbench") / "configs" / f"{name}.json")
    curves.append(cache_growth(spec, 262_144, name))
for c in curves:
    print(f"{c.name:18s} state {c.state_bytes / 2**20:8.2f} MiB | KV {c.kv_bytes[-1] / c.context[-1] / 1024:6.1f} KiB/token"
          f" | crossover {c.crossover:8,.0f} tokens | KV at {c.context[-1]:,} tokens: {c.kv_bytes[-1] / 2**30:6.2f} GiB")

# %% tags=["nbval-ignore-output"]
fd.memory(curves)

# %% [markdown]
# ## Bounded captures
#
# A full state of Qwen3.5-35B-A3B is 60 MiB per token, so by default only the summaries are kept and a request that could exceed the budget (1 GiB unless `max_bytes` says otherwise) is refused before anything runs, with advice:

# %%
from workbench.capture import plan_probes

big = workbench.ModelSpec.from_file(files("workbench") / "configs" / "Qwen3.5-35B-A3B.json")
try:
    plan_probes(big, Trace(deltanet=DeltaNetCapture(states="all")), None, n_tokens=512)
except workbench.WorkbenchError as e:
    print(e)

# %% [markdown]
# ## The explorer
#
# Pick a layer and a head (it opens on the head with the longest memory), press play (or drag the token slider) to watch the state evolve, switch views.

# %% tags=["nbval-ignore-output"]
from workbench.widgets import DeltaNetExplorer

DeltaNetExplorer(model, prompt=prompt)

# %% [markdown]
# ## On a real checkpoint
#
# ```python
# model = workbench.load("Qwen/Qwen3.5-35B-A3B")
# gen = model.generate(long_prompt, max_new_tokens=64,
#                      trace=Trace(deltanet=DeltaNetCapture(states=[100, 200, 300], layers=[0, 20], heads=[0, 1])))
# fd.half_lives(gen.deltanet)
# DeltaNetExplorer(model)
# ```
