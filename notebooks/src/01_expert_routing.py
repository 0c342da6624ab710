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
# # Expert routing in Qwen3.5-MoE
#
# Every MoE layer of Qwen3.5 sends each token to a few of its experts. This tutorial shows how the router decides, how to record its decisions while the model runs (prefill *and* decoding, on torch or MLX), what the recorded routing says about the model, and how to change it.
#
# It runs on the bundled `tiny` model (16 experts, top-4 + a shared expert), trained on Python source, chats and tool calls with the router's load-balancing loss on, so its router has learned something: code and chat go to measurably different experts (section *Two kinds of text*). The last cell runs the same code on a real model.

# %% [markdown]
# ## How the router works
#
# For a token with hidden state $x$ (after the layer's attention and norm), in a layer with $E$ experts:
#
# 1. **Logits**: $\ell = W_r x$, one per expert ($W_r$ is `mlp.gate.weight`, $[E, H]$).
# 2. **Softmax** over all $E$ experts: $p = \mathrm{softmax}(\ell)$.
# 3. **Top-k**: keep the $k$ largest ($k = 8$ of 256 in 35B-A3B, 10 of 512 in 397B-A17B).
# 4. **Renormalise** the kept probabilities to sum to 1: these are the weights of the experts' outputs.
# 5. **Shared expert**: a dense MLP that every token goes through, scaled by its own gate $\sigma(w_s \cdot x)$ and added to the routed experts' mix.
#
# $$y = \sum_{i \in \text{top-}k} \frac{p_i}{\sum_{j \in \text{top-}k} p_j} E_i(x) + \sigma(w_s\cdot x)\, S(x)$$

# %%
import numpy as np
import workbench
from IPython.display import display
from workbench import Intervention, Trace
from workbench.analysis import routing as ra
from workbench.figures import routing as fr

model = workbench.load("tiny")
print(model.spec.summary())
print("MoE layers:", model.spec.moe_layers)

# %% [markdown]
# ## Recording the routing
#
# `trace=Trace(routing=True)` records, for every token the model forwards (the prompt, then each generated token), the chosen experts sorted by weight, their weights, and the shared-expert gate. `router_probs=True` adds the full softmax. Recording keeps device arrays and converts them once at the end, so decoding is not slowed down.

# %%
code = "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n"
gen = model.generate(code, max_new_tokens=16, ignore_eos=True, trace=Trace(routing=True, router_probs=True))
r = gen.routing
print(r)
print("experts", r.experts.shape, r.experts.dtype, "| weights", r.weights.shape,
      "| shared_gate", r.shared_gate.shape, "| probs", r.probs.shape)
print("prompt tokens:", r.n_prompt, "| generated tokens fed back:", r.n_tokens - r.n_prompt)

# %% [markdown]
# The router, step by step, for one token of the last MoE layer: the recorded probabilities give back exactly the recorded experts and weights (the numpy reference is `workbench.reference.top_k_routing`).

# %%
layer, t = model.spec.moe_layers[-1], 5
row = r.row(layer)
p = r.probs[row, t].astype(float)
top = np.argsort(-p)[:4]
print("token", repr(str(r.tokens[t])))
print("softmax, top-4:", top.tolist(), np.round(p[top], 3).tolist())
print("renormalised  :", np.round(p[top] / p[top].sum(), 3).tolist())
print("recorded      :", r.experts[row, t].tolist(), np.round(r.weights[row, t].astype(float), 3).tolist())
print("shared gate   :", round(float(r.shared_gate[row, t]), 3))

# %% [markdown]
# ## Expert load and balance
#
# The *load* of an expert is the share of tokens whose top-k includes it (a layer's loads sum to $k$; perfectly uniform routing gives $k/E$ each). Training adds an auxiliary loss $E\sum_i f_i P_i$ (load times mean router probability) that equals $k$ when balanced.
#
# Every statistic below comes with a baseline computed the same way on routing without the structure in question: a perfectly balanced router that picks at random over as many tokens (sampling alone leaves some imbalance), or the same routing with the token positions shuffled (same loads, any link between a token and its experts broken). A number only says something about the model where it differs from its baseline.

# %% tags=["nbval-ignore-output"]
fr.expert_load(r, layer=model.spec.moe_layers[-1])

# %%
display(ra.expert_load(r).table().round(3))

# %% tags=["nbval-ignore-output"]
fr.load_balance(r)

# %% [markdown]
# ## Each token's experts
#
# The token x layer map: colour is the top expert, hover shows all $k$ experts with their weights. `r.token(t)` gives the same as a table.

# %% tags=["nbval-ignore-output"]
fr.token_map(r, selected=5)

# %%
for row in r.token(5):
    print(row)

# %% [markdown]
# ## Entropy and the shared-expert gate
#
# Routing entropy (over all experts) is low when the router is sure of its choice and $\ln E$ when it is indifferent; the shared-expert gate says how much each token leans on the always-on expert.

# %% tags=["nbval-ignore-output"]
fr.entropy(r)

# %%
h = ra.routing_entropy(r)
print("entropy (nats), mean per layer:", np.round(h.mean(1), 3).tolist(), "max:", round(np.log(16), 3))

# %% tags=["nbval-ignore-output"]
fr.shared_gate(r)

# %% [markdown]
# ## Co-activation, flow between layers, locality
#
# - **Co-activation** $P(j \mid i)$: when expert $i$ is chosen, how often $j$ is chosen with it.
# - **Flow**: which expert of the next layer a token's top expert leads to (a Sankey of the main paths).
# - **Locality**: how often consecutive tokens share experts, against the same routing with the token order shuffled (same loads: busy experts are shared often by chance). Locality above its baseline is what makes expert caching and offloading pay off.

# %% tags=["nbval-ignore-output"]
fr.coactivation(r, layer=model.spec.moe_layers[-1])

# %% tags=["nbval-ignore-output"]
fr.flow(r, layer=model.spec.moe_layers[0])

# %%
display(ra.locality(r).round(3))

# %% [markdown]
# ## Specialisation, and two kinds of text
#
# For each token id seen several times: the share of its occurrences routed to its favourite expert. This is a maximum over experts, so chance alone puts it far above $k/E$ (about 0.74 for a token seen 3 times, 0.5 for 10 times, with top-4 of 16): the baseline is the same statistic on shuffled routing. Then two prompt sets, code and a chat, compared expert by expert; the Jensen-Shannon divergence between their load distributions says how differently they are routed (0 = the same, 1 bit = disjoint), beside the divergence between two halves of one set, which is what sampling alone gives (the model card does the same on held-out text).

# %%
shares = ra.specialisation(r, min_count=3)
display(shares.groupby("layer")[["share", "shuffled"]].mean().round(3))

# %% tags=["nbval-ignore-output"]
fr.specialisation(r)

# %%
prose = model.apply_chat_template([{"role": "user", "content": "What is the capital of Japan?"}],
                                  enable_thinking=False)
r_prose = model.generate(prose, max_new_tokens=16, trace=Trace(routing=True)).routing
cmp = ra.compare_loads(r, r_prose, labels=("code", "chat"))
display(cmp.preferred())

# %% tags=["nbval-ignore-output"]
fr.compare(cmp)

# %% [markdown]
# ## Interventions
#
# Disable experts in a layer (the router's next choices take their place) or force one expert into the top-k, and see what changes: the KL divergence of the next-token distribution at every position, and the generated text. Here the four experts the last layer uses most are switched off.

# %%
layer = model.spec.moe_layers[-1]
busiest = np.argsort(-ra.expert_load(r).load[r.row(layer)])[:4].tolist()
change = Intervention(disable={layer: busiest})
effect = ra.intervention_effect(model, code, change, max_new_tokens=12)
print("disabled", busiest, "in layer", layer, "| mean KL", round(effect.mean_kl, 4))
print("original:", repr(effect.text))
print("changed: ", repr(effect.changed_text))

# %% tags=["nbval-ignore-output"]
fr.intervention(effect)

# %%
forced = model.generate(code, max_new_tokens=1, trace=Trace(routing=True),
                        intervene=Intervention(force={layer: 0}, positions=[3]))
print("token 3 now goes to", forced.routing.token(3)[-1]["experts"], "in layer", layer)

# %% [markdown]
# ## The explorer
#
# Type a prompt, press Run, switch views, pick a layer, click a token on the token map (or move the token slider) to see its experts; give a second prompt and choose *compare prompts*.

# %% tags=["nbval-ignore-output"]
from workbench.widgets import RoutingExplorer

RoutingExplorer(model, prompt=code, compare_prompt=prose)

# %% [markdown]
# ## Saving a trace
#
# Traces are numpy arrays; they save to a compressed `.npz` and load back unchanged.

# %%
import tempfile, pathlib

path = r.save(pathlib.Path(tempfile.mkdtemp()) / "routing.npz")
back = workbench.RoutingTrace.load(path)
print(back)
print(np.array_equal(back.experts, r.experts))

# %% [markdown]
# ## On a real checkpoint
#
# The same calls, on Qwen3.5-35B-A3B (40 MoE layers, 256 experts, top-8), on a CUDA GPU or Apple Silicon:
#
# ```python
# model = workbench.load("Qwen/Qwen3.5-35B-A3B")
# gen = model.generate("def quicksort(xs):", max_new_tokens=128, trace=Trace(routing=True))
# fr.token_map(gen.routing)
# RoutingExplorer(model)
# ```
