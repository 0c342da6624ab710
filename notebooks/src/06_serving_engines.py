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
# # Beyond one machine: serving engines
#
# Qwen3.5-397B-A17B needs about 400 GB in FP8; no single GPU holds it. People serve it with an engine built for many GPUs (vLLM or SGLang, tensor and expert parallel) and talk to it over the OpenAI API. `workbench.connect(url)` gives such a server the same interface as a model loaded in-process: `generate`, `stream` (Stop closes the request), `chat` with tools, thinking on and off, `stats`, the chat panel, a serving benchmark, and expert routing where the engine returns it.
#
# vLLM and SGLang need CUDA GPUs. This notebook starts the two engines that run anywhere, **mlx_lm.server** and **llama.cpp's server**, on this machine with the bundled model, and uses them exactly as you would use a vLLM deployment; the last part writes the commands for a multi-GPU machine.

# %% [markdown]
# ## Start a server and connect
# `workbench.serve` starts an engine on 127.0.0.1 with a free port and waits until it answers (it is stopped at the end of the notebook, or when the kernel exits). `workbench.connect` asks the server what it serves and looks the model up: here the served model is the bundled `tiny`, so the workbench knows its layers and experts.

# %%
import workbench
from workbench import Trace, WorkbenchError
from workbench.demo_tools import TOOLS

mlx_server = workbench.serve("tiny", engine="mlx")          # mlx_lm.server, safetensors checkpoint
llama_server = workbench.serve("tiny:Q8_0", engine="llamacpp")  # llama.cpp's server, the GGUF Q8_0 copy
served = workbench.connect(mlx_server.url)
print(served.engine_name, "|", served.spec.summary())

# %% tags=["nbval-ignore-output", "machine-dependent"]
print(mlx_server, llama_server, sep="\n")

# %% [markdown]
# ## The same text as in-process
# Greedy decoding through the server gives the in-process text. One difference is the engine's own: mlx_lm.server drops a completion's leading space (its streaming detokenizer trims it), so the comparison allows for that.

# %%
local = workbench.load("tiny", backend="mlx")
prompt = "def fibonacci(n):\n"
remote_text = served.generate(prompt, max_new_tokens=40).text
local_text = local.generate(prompt, max_new_tokens=40).text
print(remote_text == local_text.removeprefix(" "))
print(remote_text)

# %% [markdown]
# A stream yields text as the server sends it; `stats` come from the stream's own timing (time to first token, the gaps between chunks) and the token counts from the server's `usage`. mlx_lm.server sends fewer chunks than tokens (it holds text back to word ends), so count tokens from `usage`, never from chunks.

# %% tags=["nbval-ignore-output", "machine-dependent"]
stream = served.stream(prompt, max_new_tokens=32)
chunks = [str(c) for c in stream]
stats = stream.generation.stats
print(f"{len(chunks)} chunks, {stats.new_tokens} tokens")
print(stats)

# %% [markdown]
# ## Chat with tools, thinking on and off
# Thinking goes to the server as `chat_template_kwargs: {"enable_thinking": ...}`. The tool calls come back structured when the server parses them (mlx_lm.server does, vLLM with `--tool-call-parser qwen3_coder` does); otherwise the workbench parses the Qwen3-Coder XML in the answer itself. Either way the tools run here, in the notebook, and only registered functions run.
#
# llama-cpp-python's server reads `chat_template_kwargs` only when it starts, so for it the workbench renders the chat with the model's own template (from the GGUF file) and sends the prompt text: thinking on and off then work per request there too.

# %%
question = [{"role": "user", "content": "What is the weather in Paris?"}]
for name, model in (("mlx_lm.server", served), ("llama.cpp server", workbench.connect(llama_server.url))):
    result = model.chat(question, tools=TOOLS, thinking=False, temperature=0)
    print(f"{name}: {[(c.name, c.arguments) for c, _ in result.calls]} -> {result.text!r}")

# %%
thought = served.generate(question, max_new_tokens=60, thinking=True)
print("thinking:", thought.thinking)
print("answer:  ", thought.text)

# %% [markdown]
# The chat panel works the same on a server (Stop closes the request):

# %% tags=["nbval-ignore-output"]
from workbench.widgets.chat import ChatPanel

ChatPanel(served, tools=TOOLS)

# %% [markdown]
# ## Serving benchmark
# `workbench.bench` on a served model measures it like vLLM's serving benchmark (`vllm bench serve --max-concurrency C`): at each concurrency level, C clients send streaming requests back to back; TTFT, TPOT (time per output token after the first), ITL (gaps between chunks) as median and p99, output tokens per second and requests per second. The prompts are random text of about `prompt_tokens` tokens, seeded; the request count and a time limit bound each level.

# %% tags=["nbval-ignore-output", "machine-dependent"]
from workbench.figures import bench as fb
from workbench.remote.serving_bench import markdown

llama = workbench.connect(llama_server.url)
results = {}
for name, model in (("mlx_lm.server", served), ("llama.cpp server", llama)):
    results[name] = workbench.bench(model, prompt_tokens=64, new_tokens=24, concurrency=[1, 2, 4], requests=8)
    print(markdown(results[name]), end="\n\n")
fb.serving(results["llama.cpp server"])

# %% [markdown]
# On two CPU cores neither engine gains from concurrency (one forward at a time; llama-cpp-python's server queues requests), so TTFT grows with the queue while output tok/s stays flat. On a GPU, vLLM and SGLang batch concurrent requests, and output tok/s climbs with concurrency until the batch is compute bound: that curve is what this benchmark is for. The speed dashboard runs the same sweep with a progress bar:

# %% tags=["nbval-ignore-output"]
from workbench.widgets.speed import SpeedDashboard

SpeedDashboard(llama, prompt_tokens="64", new_tokens="16", concurrency="1,2,4", repeats=8)

# %% [markdown]
# ## Expert routing from the engine
# vLLM (`--enable-return-routed-experts`) and SGLang (the same flag, and `return_routed_experts` per request, which the workbench sends) return the experts each token was routed to. With such a server, `trace=Trace(routing=True)` gives a `RoutingTrace` of expert ids for the prompt and the generated tokens, and the routing explorer and analyses of the expert-routing tutorial work on it; the router weights stay in the server (they are NaN: unknown). mlx_lm.server and llama.cpp's server do not return routing, and the error says so:

# %%
try:
    served.generate(prompt, max_new_tokens=8, trace=Trace(routing=True))
except WorkbenchError as exc:
    print(exc)

# %% [markdown]
# The engines' encodings (nested lists of int16, base64 `.npy`, base64 raw int32; vLLM's prompt rows at the response level and generated rows per choice, with -1 for prompt tokens served from its prefix cache; SGLang's one array over the forwarded tokens) are decoded by `workbench.remote.routing`. Here a vLLM answer is laid out as vLLM's documentation shows, filled with the routing of the same prompt traced in-process (vLLM itself needs CUDA), and decoded back:

# %%
import base64

import numpy as np

from workbench.remote import routing as engine_routing

traced = local.generate(prompt, max_new_tokens=8, ignore_eos=True, trace=Trace(routing=True))
rows = traced.routing.experts.transpose(1, 0, 2)  # [token, moe_layer, k], as the engines send it
n_prompt = len(traced.prompt_ids)
answer = {"prompt_routed_experts": rows[:n_prompt].tolist(),  # nested lists (int16 ids)
          "choices": [{"text": traced.text,
                       "routed_experts": base64.b64encode(rows[n_prompt:].astype("<i4").tobytes()).decode()}]}
decoded, first = engine_routing.from_response(answer, answer["choices"][0], local.spec, n_prompt)
print(decoded.shape, "rows x MoE layers x top-k;", "same experts:", np.array_equal(decoded, rows))

# %% [markdown]
# ## A 397B model across eight GPUs
# `workbench.plan(..., devices="8x H200")` places the model with tensor parallelism for attention, DeltaNet and the dense parts and expert parallelism for the 512 routed experts, and writes the engine command lines. One H200 does not hold the FP8 weights; eight do, with room for a long context:

# %%
print(workbench.plan("Qwen/Qwen3.5-397B-A17B", weights="fp8", device="H200").verdict())
multi = workbench.plan("Qwen/Qwen3.5-397B-A17B", weights="fp8", devices="8x H200", context=131_072)
print(multi.verdict())
for note in multi.notes:
    print("note:", note)
multi.table().round(2)

# %% [markdown]
# The commands serve it with Qwen3.5's reasoning and tool-call parsers and routing returned; then connect from this notebook (or any machine that reaches the server):

# %%
for engine, line in multi.commands.items():
    print(f"{engine}:\n  {line}")

# %% [markdown]
# With a vLLM server at `http://gpu-node:8000/v1`, everything above runs unchanged:
#
# ```python
# big = workbench.connect("http://gpu-node:8000/v1")   # spec from the served id: Qwen/Qwen3.5-397B-A17B-FP8
# big.chat(question, tools=TOOLS, thinking=True)
# gen = big.generate("def quicksort(xs):", max_new_tokens=64, trace=Trace(routing=True))
# RoutingExplorer(big)                                 # the expert-routing tutorial's views, on 397B
# workbench.bench(big, concurrency=[1, 4, 16, 64], requests=128)
# ```
# A server behind a proxy or an alias that hides the model's name: `workbench.connect(url, spec="Qwen/Qwen3.5-397B-A17B")`.

# %% [markdown]
# The servers stop when this kernel stops (or restarts); `mlx_server.stop()` stops one sooner.
