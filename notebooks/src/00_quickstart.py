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
# # Qwen Workbench: quickstart
#
# Load a Qwen3.5 model, generate, stream, chat and call tools. Everything here runs on a laptop CPU with the bundled `tiny` model: a Qwen3.5-MoE in the exact layout of the releases (8 layers: 6 Gated DeltaNet + 2 gated attention; 16 experts, top-4 + a shared expert), trained for about five and a half hours on a 2-core CPU on Python source, short chats and tool requests in many phrasings (its model card: `model.path / "README.md"`). It writes Python-looking code from a file's opening (from a bare `def` line, greedy decoding soon repeats itself, as below), answers a few kinds of question and calls three tools; it knows little else. The same calls run a real model (last cell).

# %%
import workbench

model = workbench.load("tiny")  # backend="auto": MLX on Apple Silicon, else torch
print(model.spec.summary())
print(model.backend, model.device, model.dtype)

# %% [markdown]
# `model.kernels` says which implementation runs each part of the model on this machine:

# %% tags=["nbval-ignore-output"]
for part, implementation in model.kernels.items():
    print(f"{part:17s} {implementation}")

# %% [markdown]
# ## Generate
# `temperature=0` (the default) is greedy decoding, so this output is reproducible; from a bare function header a model this small falls into repeating itself.

# %%
gen = model.generate("def fibonacci(n):", max_new_tokens=24)
print(repr(gen.text))
print(gen.finish_reason, len(gen.token_ids), "new tokens")

# %% tags=["nbval-ignore-output"]
print(gen.stats)  # time to first token, prefill and decode tokens/s, peak memory

# %% [markdown]
# Sampling follows the usual knobs; the same `seed` gives the same text on the same backend.

# %%
a = model.generate("import ", max_new_tokens=12, temperature=0.7, top_p=0.8, top_k=20, seed=0)
b = model.generate("import ", max_new_tokens=12, temperature=0.7, top_p=0.8, top_k=20, seed=0)
print(a.text == b.text)

# %% [markdown]
# ## Stream
# `model.stream` yields text as it is produced (never half a UTF-8 character); `stream.stop()` ends it early and the model stays usable.

# %%
stream = model.stream("class Model:", max_new_tokens=16)
for piece in stream:
    print(piece, end="")
print()
print(stream.generation.finish_reason)

# %% [markdown]
# ## Chat, with thinking on or off
# Messages go through the checkpoint's own chat template. With thinking on, the reasoning comes back in `.thinking`, apart from the answer in `.text`.

# %%
messages = [{"role": "user", "content": "What is the capital of France?"}]
print(model.apply_chat_template(messages, enable_thinking=False))

# %%
chat = model.generate(messages, max_new_tokens=64, thinking=True)  # room for the reasoning and the answer
print("thinking:", repr(chat.thinking))
print("answer:  ", repr(chat.text))
print("finish:  ", chat.finish_reason)  # "length" would mean max_new_tokens cut the reply short

# %% [markdown]
# ## Chat in a panel
# Send a message, watch it stream with its tokens/s, press Stop at any time. Presets are the sampling settings the Qwen3.5 model card recommends; thinking, when on, is shown apart in a collapsible block.

# %% tags=["nbval-ignore-output"]
from workbench.widgets import ChatPanel

ChatPanel(model)

# %% [markdown]
# ## Tool calling
# Register plain Python functions: their JSON schema comes from the type hints and the docstring, and the checkpoint's chat template shows them to the model. `model.chat` parses the model's Qwen3-Coder XML calls, types the arguments per schema, runs the registered function (never the model's text), answers with a tool response and goes on until a final answer. Calls inside a thinking block are not run; malformed calls and exceptions go back to the model as tool errors.

# %%
import inspect, json
from workbench.demo_tools import TOOLS, get_weather

print(inspect.getsource(get_weather))

from workbench.tools import ToolBox, parse_tool_calls

tools = ToolBox(TOOLS)
print(json.dumps(tools.schemas[1], indent=1))

# %% [markdown]
# This is what a tool-calling model writes, and what the loop does with it:

# %%
reply = """<tool_call>
<function=get_weather>
<parameter=city>
Paris
</parameter>
</function>
</tool_call>"""
content, calls = parse_tool_calls(reply)
call = tools.check(calls[0])
print(call.name, call.arguments, "->", tools.run(call))

# %% [markdown]
# The whole round trip: `tiny` was trained to call these three tools (`workbench.demo_tools`; `get_weather` answers from a fixed table), so it calls one, reads the tool's response and answers with it. Every turn is in `result.messages`:

# %%
result = model.chat([{"role": "user", "content": "What's the weather in Lisbon?"}], tools=TOOLS,
                    max_new_tokens=64)
for message in result.messages:
    print(f"{message['role']:>9}: {message.get('content') or message.get('tool_calls')}")
print("answer:", result.text)

# %% [markdown]
# People phrase requests every which way. None of these wordings is in `tiny`'s training data (they come from the hand-written set its model card measures, with the criterion and the share it gets right), so this is what a new user sees, misses included (the last one; the card lists them all):

# %%
for text in ["what's 1234 plus 5678", "Divide 900 by 36 please.", "Is it cold in Reykjavik right now?",
             "How many miles is 42 kilometers?", "Remind me what the capital of France is.", "weather for london pls"]:
    r = model.chat([{"role": "user", "content": text}], tools=TOOLS, max_new_tokens=64)
    call = f"{r.calls[0][0].name}({r.calls[0][0].arguments})" if r.calls else "no call"
    print(f"{text:42} -> {call:60} -> {r.text.strip()}")

# %% tags=["nbval-ignore-output"]
from workbench.widgets import ChatPanel

ChatPanel(model, tools=TOOLS)

# %% [markdown]
# ## GGUF files on llama.cpp
# Most people run Qwen3.5 as a quantized GGUF file in llama.cpp (a Q4 35B-A3B on a 24 GB card). The same interface opens one: set-up made GGUF copies of `tiny` with llama.cpp's own converter and quantizer (`tiny:F32`, `tiny:Q8_0` and `tiny:Q4_0`, a real 4-bit file). The spec, tokenizer and chat template come from the file's metadata, and `kernels` says which ggml backend runs it and how each group of weights is stored:

# %%
q4 = workbench.load("tiny:Q4_0")  # a .gguf path works too; backend="llamacpp" is picked for it
print(q4.backend, q4.dtype, q4.path.name)
print(q4.kernels["weights"])

# %% [markdown]
# It decodes through the workbench's own loop and sampler, so everything above works on it; 4-bit weights change the model a little, which is where it shows first:

# %%
for m in (model, q4):
    print(f"{m.backend:8s} {m.dtype:8s}", repr(m.generate("def fibonacci(n):", max_new_tokens=24).text))

# %% [markdown]
# A downloaded file loads by path, and a Hub repository of GGUF files with a pattern (only that file is fetched); `offload_experts=N` keeps the routed experts of N layers in system RAM on a GPU, as llama.cpp's `--n-cpu-moe` does:
#
# ```python
# model = workbench.load("unsloth/Qwen3.5-35B-A3B-GGUF", file="*Q4_K_M.gguf", offload_experts=10)
# ```

# %% [markdown]
# ## A real checkpoint
# The same code loads the released models from the Hugging Face Hub (into the standard cache, only the files the model needs), on a CUDA GPU with torch or on Apple Silicon with MLX:
#
# ```python
# model = workbench.load("Qwen/Qwen3.5-35B-A3B")            # CUDA: torch + fused kernels
# model = workbench.load("mlx-community/Qwen3.5-35B-A3B-4bit")  # Apple Silicon: MLX
# ```
#
# `workbench.spec(...)` describes a model from its config alone, without weights:

# %%
spec = workbench.spec("Qwen/Qwen3.5-35B-A3B")
print(spec.summary())

# %% [markdown]
# ## Next
#
# - `01_expert_routing.ipynb`: which experts each token is routed to, what that says about the model, and how to change it.
# - `02_deltanet_state.ipynb`: what the Gated DeltaNet state holds and how it evolves token by token.
# - `03_tokens_per_second.ipynb`: measuring speed honestly, like llama-bench, against the hardware limit.
# - `04_memory_and_hardware.ipynb`: will a real model fit, in which format, and how fast can it go.
