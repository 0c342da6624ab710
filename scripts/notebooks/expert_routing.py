"""Cells of notebooks/01_expert_routing.ipynb."""
from cells import IGNORE, code, md

NAME = "01_expert_routing"

cells = [
    md("# Expert routing in Qwen3.5-MoE\n\n"
       "Every MoE layer of Qwen3.5 sends each token to a few of its experts. This tutorial shows how the "
       "router decides, how to record its decisions while the model runs (prefill *and* decoding, on "
       "torch or MLX), what the recorded routing says about the model, and how to change it.\n\n"
       "It runs on the bundled `tiny` model (16 experts, top-4 + a shared expert), trained on Python source, "
       "chats and tool calls with the router's load-balancing loss on, so its router has learned something: "
       "code and chat go to measurably different experts (section *Two kinds of text*). The last cell runs the "
       "same code on a real model."),
    md("## How the router works\n\n"
       "For a token with hidden state $x$ (after the layer's attention and norm), in a layer with $E$ experts:\n\n"
       "1. **Logits**: $\\ell = W_r x$, one per expert ($W_r$ is `mlp.gate.weight`, $[E, H]$).\n"
       "2. **Softmax** over all $E$ experts: $p = \\mathrm{softmax}(\\ell)$.\n"
       "3. **Top-k**: keep the $k$ largest ($k = 8$ of 256 in 35B-A3B, 10 of 512 in 397B-A17B).\n"
       "4. **Renormalise** the kept probabilities to sum to 1: these are the weights of the experts' outputs.\n"
       "5. **Shared expert**: a dense MLP that every token goes through, scaled by its own gate "
       "$\\sigma(w_s \\cdot x)$ and added to the routed experts' mix.\n\n"
       "$$y = \\sum_{i \\in \\text{top-}k} \\frac{p_i}{\\sum_{j \\in \\text{top-}k} p_j} E_i(x) + \\sigma(w_s\\cdot x)\\, S(x)$$"),
    code("import numpy as np\nimport workbench\nfrom workbench import Intervention, Trace\n"
         "from workbench.analysis import routing as ra\nfrom workbench.figures import routing as fr\n\n"
         "model = workbench.load(\"tiny\")\nprint(model.spec.summary())\nprint(\"MoE layers:\", model.spec.moe_layers)"),
    md("## Recording the routing\n\n`trace=Trace(routing=True)` records, for every token the model forwards "
       "(the prompt, then each generated token), the chosen experts sorted by weight, their weights, and the "
       "shared-expert gate. `router_probs=True` adds the full softmax. Recording keeps device arrays and "
       "converts them once at the end, so decoding is not slowed down."),
    code("code = \"def add(a, b):\\n    return a + b\\n\\ndef sub(a, b):\\n    return a - b\\n\"\n"
         "gen = model.generate(code, max_new_tokens=16, ignore_eos=True, trace=Trace(routing=True, router_probs=True))\n"
         "r = gen.routing\nprint(r)\nprint(\"experts\", r.experts.shape, r.experts.dtype, \"| weights\", r.weights.shape,\n"
         "      \"| shared_gate\", r.shared_gate.shape, \"| probs\", r.probs.shape)\n"
         "print(\"prompt tokens:\", r.n_prompt, \"| generated tokens fed back:\", r.n_tokens - r.n_prompt)"),
    md("The router, step by step, for one token of the last MoE layer: the recorded probabilities give "
       "back exactly the recorded experts and weights (the numpy reference is `workbench.reference.top_k_routing`)."),
    code("layer, t = model.spec.moe_layers[-1], 5\nrow = r.row(layer)\np = r.probs[row, t].astype(float)\n"
         "top = np.argsort(-p)[:4]\n"
         "print(\"token\", repr(str(r.tokens[t])))\nprint(\"softmax, top-4:\", top.tolist(), np.round(p[top], 3).tolist())\n"
         "print(\"renormalised  :\", np.round(p[top] / p[top].sum(), 3).tolist())\n"
         "print(\"recorded      :\", r.experts[row, t].tolist(), np.round(r.weights[row, t].astype(float), 3).tolist())\n"
         "print(\"shared gate   :\", round(float(r.shared_gate[row, t]), 3))"),
    md("## Expert load and balance\n\nThe *load* of an expert is the share of tokens whose top-k includes it "
       "(a layer's loads sum to $k$; perfectly uniform routing gives $k/E$ each). Training adds an auxiliary "
       "loss $E\\sum_i f_i P_i$ (load times mean router probability) that equals $k$ when balanced."),
    code("fr.expert_load(r, layer=model.spec.moe_layers[-1])", metadata=IGNORE),
    code("print(ra.expert_load(r).table().round(3))"),
    code("fr.load_balance(r)", metadata=IGNORE),
    md("## Each token's experts\n\nThe token x layer map: colour is the top expert, hover shows all $k$ "
       "experts with their weights. `r.token(t)` gives the same as a table."),
    code("fr.token_map(r, selected=5)", metadata=IGNORE),
    code("for row in r.token(5):\n    print(row)"),
    md("## Entropy and the shared-expert gate\n\nRouting entropy (over all experts) is low when the router is "
       "sure of its choice and $\\ln E$ when it is indifferent; the shared-expert gate says how much each token "
       "leans on the always-on expert."),
    code("fr.entropy(r)", metadata=IGNORE),
    code("h = ra.routing_entropy(r)\nprint(\"entropy (nats), mean per layer:\", np.round(h.mean(1), 3).tolist(), \"max:\", round(np.log(16), 3))"),
    code("fr.shared_gate(r)", metadata=IGNORE),
    md("## Co-activation, flow between layers, locality\n\n"
       "- **Co-activation** $P(j \\mid i)$: when expert $i$ is chosen, how often $j$ is chosen with it.\n"
       "- **Flow**: which expert of the next layer a token's top expert leads to (a Sankey of the main paths).\n"
       "- **Locality**: how often consecutive tokens share experts, against chance ($k/E$). High locality is "
       "what makes expert caching and offloading pay off."),
    code("fr.coactivation(r, layer=model.spec.moe_layers[-1])", metadata=IGNORE),
    code("fr.flow(r, layer=model.spec.moe_layers[0])", metadata=IGNORE),
    code("print(ra.locality(r).round(3))"),
    md("## Specialisation, and two kinds of text\n\nFor each token id seen several times: the share of its "
       "occurrences routed to its favourite expert (chance is about $k/E$). Then two prompt sets, code and "
       "a chat, compared expert by expert; the Jensen-Shannon divergence between their load distributions says "
       "how differently they are routed (0 = the same, 1 bit = disjoint). The model card measures the same on "
       "held-out text against a baseline of two random halves of the code."),
    code("shares = ra.specialisation(r, min_count=3)\nprint(shares.groupby(\"layer\").share.mean().round(3))"),
    code("fr.specialisation(r)", metadata=IGNORE),
    code("prose = model.apply_chat_template([{\"role\": \"user\", \"content\": \"What is the capital of Japan?\"}],\n"
         "                                  enable_thinking=False)\n"
         "r_prose = model.generate(prose, max_new_tokens=16, trace=Trace(routing=True)).routing\n"
         "cmp = ra.compare_loads(r, r_prose, labels=(\"code\", \"chat\"))\nprint(cmp.preferred())"),
    code("fr.compare(cmp)", metadata=IGNORE),
    md("## Interventions\n\nDisable experts in a layer (the router's next choices take their place) or force "
       "one expert into the top-k, and see what changes: the KL divergence of the next-token distribution at "
       "every position, and the generated text. Here the four experts the last layer uses most are switched off."),
    code("layer = model.spec.moe_layers[-1]\nbusiest = np.argsort(-ra.expert_load(r).load[r.row(layer)])[:4].tolist()\n"
         "change = Intervention(disable={layer: busiest})\n"
         "effect = ra.intervention_effect(model, code, change, max_new_tokens=12)\n"
         "print(\"disabled\", busiest, \"in layer\", layer, \"| mean KL\", round(effect.mean_kl, 4))\n"
         "print(\"original:\", repr(effect.text))\nprint(\"changed: \", repr(effect.changed_text))"),
    code("fr.intervention(effect)", metadata=IGNORE),
    code("forced = model.generate(code, max_new_tokens=1, trace=Trace(routing=True),\n"
         "                        intervene=Intervention(force={layer: 0}, positions=[3]))\n"
         "print(\"token 3 now goes to\", forced.routing.token(3)[-1][\"experts\"], \"in layer\", layer)"),
    md("## The explorer\n\nType a prompt, press Run, switch views, pick a layer, click a token on the token map "
       "(or move the token slider) to see its experts; give a second prompt and choose *compare prompts*."),
    code("from workbench.widgets import RoutingExplorer\n\nRoutingExplorer(model, prompt=code, compare_prompt=prose)",
         metadata=IGNORE),
    md("## Saving a trace\n\nTraces are numpy arrays; they save to a compressed `.npz` and load back unchanged."),
    code("import tempfile, pathlib\n\npath = r.save(pathlib.Path(tempfile.mkdtemp()) / \"routing.npz\")\n"
         "back = workbench.RoutingTrace.load(path)\nprint(back)\nprint(np.array_equal(back.experts, r.experts))"),
    md("## On a real checkpoint\n\nThe same calls, on Qwen3.5-35B-A3B (40 MoE layers, 256 experts, top-8), on a "
       "CUDA GPU or Apple Silicon:\n\n```python\nmodel = workbench.load(\"Qwen/Qwen3.5-35B-A3B\")\n"
       "gen = model.generate(\"def quicksort(xs):\", max_new_tokens=128, trace=Trace(routing=True))\n"
       "fr.token_map(gen.routing)\nRoutingExplorer(model)\n```"),
]
