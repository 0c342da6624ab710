"""Cells of notebooks/00_quickstart.ipynb."""
from cells import IGNORE, code, md

NAME = "00_quickstart"

cells = [
    md("# Qwen Workbench: quickstart\n\n"
       "Load a Qwen3.5 model, generate, stream, chat and call tools. Everything here runs on a laptop CPU "
       "with the bundled `tiny` model: a Qwen3.5-MoE in the exact layout of the releases (8 layers: 6 Gated "
       "DeltaNet + 2 gated attention; 16 experts, top-4 + a shared expert), trained for under an hour on a "
       "2-core CPU on Python source, short chats and tool calls (its model card: `model.path / \"README.md\"`). "
       "It writes Python-looking code, answers a few kinds of question and calls three tools; it knows "
       "little else. The same calls run a real model (last cell)."),
    code("import workbench\n\nmodel = workbench.load(\"tiny\")  # backend=\"auto\": MLX on Apple Silicon, else torch\n"
         "print(model.spec.summary())\nprint(model.backend, model.device, model.dtype)"),
    md("`model.kernels` says which implementation runs each part of the model on this machine:"),
    code("for part, implementation in model.kernels.items():\n    print(f\"{part:17s} {implementation}\")", metadata=IGNORE),
    md("## Generate\n`temperature=0` (the default) is greedy decoding, so this output is reproducible."),
    code("gen = model.generate(\"def fibonacci(n):\", max_new_tokens=24)\n"
         "print(repr(gen.text))\nprint(gen.finish_reason, len(gen.token_ids), \"new tokens\")"),
    code("print(gen.stats)  # time to first token, prefill and decode tokens/s, peak memory", metadata=IGNORE),
    md("Sampling follows the usual knobs; the same `seed` gives the same text on the same backend."),
    code("a = model.generate(\"import \", max_new_tokens=12, temperature=0.7, top_p=0.8, top_k=20, seed=0)\n"
         "b = model.generate(\"import \", max_new_tokens=12, temperature=0.7, top_p=0.8, top_k=20, seed=0)\n"
         "print(a.text == b.text)"),
    md("## Stream\n`model.stream` yields text as it is produced (never half a UTF-8 character); "
       "`stream.stop()` ends it early and the model stays usable."),
    code("stream = model.stream(\"class Model:\", max_new_tokens=16)\nfor piece in stream:\n    print(piece, end=\"\")\n"
         "print()\nprint(stream.generation.finish_reason)"),
    md("## Chat, with thinking on or off\nMessages go through the checkpoint's own chat template. With "
       "thinking on, the reasoning comes back in `.thinking`, apart from the answer in `.text`."),
    code("messages = [{\"role\": \"user\", \"content\": \"What is the capital of France?\"}]\n"
         "print(model.apply_chat_template(messages, enable_thinking=False))"),
    code("chat = model.generate(messages, max_new_tokens=16, thinking=True)\n"
         "print(\"thinking:\", repr(chat.thinking))\nprint(\"answer:  \", repr(chat.text))"),
    md("## Chat in a panel\nSend a message, watch it stream with its tokens/s, press Stop at any time. "
       "Presets are the sampling settings the Qwen3.5 model card recommends; thinking, when on, is shown apart "
       "in a collapsible block."),
    code("from workbench.widgets import ChatPanel\n\nChatPanel(model)", metadata=IGNORE),
    md("## Tool calling\nRegister plain Python functions: their JSON schema comes from the type hints and the "
       "docstring, and the checkpoint's chat template shows them to the model. `model.chat` parses the model's "
       "Qwen3-Coder XML calls, types the arguments per schema, runs the registered function (never the model's "
       "text), answers with a tool response and goes on until a final answer. Calls inside a thinking block are "
       "not run; malformed calls and exceptions go back to the model as tool errors."),
    code("import inspect, json\nfrom workbench.demo_tools import TOOLS, get_weather\n\n"
         "print(inspect.getsource(get_weather))\n\n"
         "from workbench.tools import ToolBox, parse_tool_calls\n\ntools = ToolBox(TOOLS)\n"
         "print(json.dumps(tools.schemas[1], indent=1))"),
    md("This is what a tool-calling model writes, and what the loop does with it:"),
    code("reply = \"\"\"<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>\"\"\"\n"
         "content, calls = parse_tool_calls(reply)\ncall = tools.check(calls[0])\n"
         "print(call.name, call.arguments, \"->\", tools.run(call))"),
    md("The whole round trip: `tiny` was trained to call these three tools (`workbench.demo_tools`; "
       "`get_weather` answers from a fixed table), so it calls one, reads the tool's response and answers "
       "with it. Every turn is in `result.messages`:"),
    code("result = model.chat([{\"role\": \"user\", \"content\": \"What's the weather in Lisbon?\"}], tools=TOOLS,\n"
         "                    max_new_tokens=64)\nfor message in result.messages:\n"
         "    print(f\"{message['role']:>9}: {message.get('content') or message.get('tool_calls')}\")\n"
         "print(\"answer:\", result.text)"),
    code("from workbench.widgets import ChatPanel\n\nChatPanel(model, tools=TOOLS)", metadata=IGNORE),
    md("## A real checkpoint\nThe same code loads the released models from the Hugging Face Hub (into the "
       "standard cache, only the files the model needs), on a CUDA GPU with torch or on Apple Silicon "
       "with MLX:\n\n```python\nmodel = workbench.load(\"Qwen/Qwen3.5-35B-A3B\")            # CUDA: torch + fused kernels\n"
       "model = workbench.load(\"mlx-community/Qwen3.5-35B-A3B-4bit\")  # Apple Silicon: MLX\n```\n\n"
       "`workbench.spec(...)` describes a model from its config alone, without weights:"),
    code("spec = workbench.spec(\"Qwen/Qwen3.5-35B-A3B\")\n"
         "print(spec.summary())"),
    md("## Next\n\n- `01_expert_routing.ipynb`: which experts each token is routed to, what that says about "
       "the model, and how to change it.\n- `02_deltanet_state.ipynb`: what the Gated DeltaNet state holds and "
       "how it evolves token by token.\n- `03_tokens_per_second.ipynb`: measuring speed honestly, like "
       "llama-bench, against the hardware limit.\n- `04_memory_and_hardware.ipynb`: will a real model fit, in "
       "which format, and how fast can it go."),
]
