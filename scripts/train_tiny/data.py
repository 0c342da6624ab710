"""Training data for the trained tiny model, built locally (nothing downloaded):
(a) Python source of this interpreter's standard library; (b) synthetic conversations in the
Qwen3.5 chat format rendered through the bundled chat template: questions and answers (some with
thinking), and tool-use dialogues for calculator / get_weather / convert_units; (c) drills: the
same tool exchanges without the tools prompt and echo requests, where copying from the prompt is
most of the loss (see train.py).

Held-out: stdlib files whose name hashes into the last 5%, and tool requests whose text hashes
into the last 5% (the training skips them); other held-out conversations come from a separate
random stream (seed + 1).
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
import sysconfig
from pathlib import Path

import jinja2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from workbench.demo_tools import FACTORS as UNITS  # noqa: E402,F401
from workbench.demo_tools import TOOLS, WEATHER, calculator, convert_units, get_weather  # noqa: E402
from workbench.tools import as_tool  # noqa: E402

TEMPLATE = ROOT / "workbench" / "templates" / "qwen3_5_chat.jinja"

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
            "Egypt": "Cairo", "Peru": "Lima", "Norway": "Oslo", "Austria": "Vienna", "Portugal": "Lisbon",
            "Ireland": "Dublin", "Canada": "Ottawa", "Kenya": "Nairobi", "Chile": "Santiago"}


def tool_schemas() -> list[dict]:
    """The schemas the tools system prompt shows: the workbench's own, from the functions."""
    return [as_tool(f).schema for f in TOOLS]


# ---- conversations ----------------------------------------------------------------------
def _template():
    if not hasattr(_template, "compiled"):
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = lambda v, **k: json.dumps(v, ensure_ascii=False)
        env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(ValueError(m))
        _template.compiled = env.from_string(TEMPLATE.read_text())
    return _template.compiled


def _render(messages, tools=None, thinking=False) -> str:
    return _template().render(messages=messages, tools=tools, add_generation_prompt=False, enable_thinking=thinking)


def _call(name: str, **args) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": args}}


PREFIXES = ["", "", "", "Hi! ", "Hello, ", "Quick question: ", "Please ", "Hey, ", "Could you help? "]
SUFFIXES = ["", "", "", " Thanks!", " Thank you.", " Please.", " Use the tool."]


def _expression(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 999), rng.randint(2, 99), rng.randint(2, 9)
    if rng.random() < 0.3:
        a = round(rng.uniform(1, 100), rng.choice([1, 2]))
    op1, op2 = rng.choice("+-*/"), rng.choice("+-*")
    expr = rng.choice([f"{a} {op1} {b}", f"{a} {op1} {b} {op2} {c}", f"({a} {op2} {b}) {op1} {c}", f"{a} {op1} {b}"])
    return expr.replace(" ", "") if rng.random() < 0.25 else expr


def tool_request(rng: random.Random) -> tuple[str, str, dict, str]:
    """(user text, tool name, arguments, tool result) of one tool-use request."""
    kind = rng.choice(["calculator", "get_weather", "convert_units"])
    if kind == "calculator":
        expr = _expression(rng)
        q = rng.choice(["What is {e}?", "Compute {e}.", "Calculate {e} please.", "Can you work out {e}?",
                        "how much is {e}", "I need {e}.", "What's {e}?", "Evaluate {e}", "{e} = ?",
                        "Use the calculator for {e}.", "Work out {e} for me.", "what does {e} come to?"]).format(e=expr)
        name, args, result = kind, {"expression": expr}, calculator(expr)
    elif kind == "get_weather":
        city = rng.choice(list(WEATHER))
        q = rng.choice(["What's the weather in {c}?", "How is the weather in {c} today?", "Is it warm in {c}?",
                        "weather {c}", "Tell me the weather for {c}.", "What is it like outside in {c}?",
                        "Is it raining in {c}?", "What's the temperature in {c} right now?",
                        "I'm flying to {c} tomorrow. What's the weather there?", "Check the weather in {c}.",
                        "How hot is it in {c}?", "Do I need a coat in {c}?"]).format(c=city)
        name, args, result = kind, {"city": city}, get_weather(city)
    else:
        (f, t) = rng.choice(list(UNITS))
        v = rng.choice([rng.randint(1, 500), round(rng.uniform(0.5, 100), 1)])
        names = {"km": ["kilometers", "km"], "mi": ["miles", "mi"], "kg": ["kilograms", "kg"],
                 "lb": ["pounds", "lbs"], "m": ["meters", "m"], "ft": ["feet", "ft"], "l": ["liters", "litres"],
                 "gal": ["gallons", "gal"], "c": ["degrees Celsius", "°C", "Celsius"],
                 "f": ["degrees Fahrenheit", "°F", "Fahrenheit"]}
        q = rng.choice(["Convert {v} {f} to {t}.", "How many {t} is {v} {f}?", "What is {v} {f} in {t}?",
                        "{v} {f} to {t}", "{v} {f} in {t}?", "Please convert {v} {f} into {t}.",
                        "How much is {v} {f} in {t}?"]).format(v=v, f=rng.choice(names[f]), t=rng.choice(names[t]))
        name, args, result = kind, {"value": v, "from_unit": f, "to_unit": t}, convert_units(float(v), f, t)
    q = rng.choice(PREFIXES) + q + rng.choice(SUFFIXES)
    return q, name, args, result


def held_out(request_text: str) -> bool:
    """A request is held out (never trained on) when its text hashes into the last 5%."""
    return int(hashlib.sha1(request_text.encode()).hexdigest(), 16) % 20 == 0


def final_answer(rng: random.Random, name: str, args: dict, result: str) -> str:
    if name == "calculator":
        return rng.choice(["{e} = {r}.", "The answer is {r}.", "It comes to {r}."]).format(e=args["expression"], r=result)
    if name == "get_weather":
        data = json.loads(result)
        return rng.choice(["It is {s} in {c}, {t} °C.", "{c}: {s}, {t} degrees Celsius.",
                           "Right now {c} is {s} at {t} °C."]).format(s=data["sky"], c=data["city"], t=data["celsius"])
    return rng.choice(["{v} {f} is {r} {t}.", "That is {r} {t}."]).format(v=args["value"], f=args["from_unit"],
                                                                         t=args["to_unit"], r=result)


def tool_dialogue(rng: random.Random, tools_prompt: bool = True) -> str:
    """One conversation of 1-4 tool-use exchanges under one tools system prompt (the prompt is
    ~400 tokens the model does not learn from; sharing it puts more of each row into calls).
    Without `tools_prompt`: the same exchanges alone, a drill (see train.py)."""
    msgs = []
    for _ in range(rng.choice([1, 1, 2, 3, 4])):
        while True:
            q, name, args, result = tool_request(rng)
            if not held_out(q):
                break
        msgs += [{"role": "user", "content": q},
                 {"role": "assistant", "content": "", "tool_calls": [_call(name, **args)]},
                 {"role": "tool", "content": result},
                 {"role": "assistant", "content": final_answer(rng, name, args, result)}]
    return _render(msgs, tools=tool_schemas() if tools_prompt else None)


def qa_dialogue(rng: random.Random) -> str:
    country = rng.choice(list(CAPITALS))
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    pairs = [
        (f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}.",
         f"The user asks for the capital of {country}. I know it is {CAPITALS[country]}."),
        ("Hello!", rng.choice(["Hello! How can I help you today?", "Hi! What can I do for you?"]),
         "A greeting. I should greet back and offer help."),
        ("Who are you?", "I am a tiny Qwen3.5 model trained for the Qwen Workbench tutorials.",
         "The user asks who I am."),
        (f"Is {a} larger than {b}?", f"{'Yes' if a > b else 'No'}, {a} is {'larger' if a > b else 'not larger'} than {b}.",
         f"Compare {a} and {b}: {a} {'>' if a > b else '<=' } {b}."),
        ("Write a Python function that adds two numbers.", "def add(a, b):\n    return a + b",
         "A simple function with two parameters that returns their sum."),
        ("What does len() do in Python?", "len() returns the number of items in a container, like a list or a string.",
         "The user asks about a builtin."),
    ]
    q, answer, thought = rng.choice(pairs)
    thinking = rng.random() < 0.4
    msgs = [{"role": "user", "content": q},
            {"role": "assistant", "content": answer, **({"reasoning_content": thought} if thinking else {})}]
    return _render(msgs, tools=tool_schemas() if rng.random() < 0.3 else None, thinking=thinking)


def echo_dialogue(rng: random.Random) -> str:
    """The user asks for some cities, numbers, units or an expression back, word for word: copying
    from the prompt is what every tool call needs, and here every answer token is a copy."""
    parts = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.3:
            parts.append(rng.choice(list(WEATHER)))
        elif kind < 0.6:
            parts.append(_expression(rng))
        elif kind < 0.8:
            parts.append(str(rng.choice([rng.randint(1, 9999), round(rng.uniform(0.1, 999), rng.choice([1, 2]))])))
        else:
            parts.append(rng.choice([u for pair in UNITS for u in pair]))
    text = rng.choice([" ", ", ", " and "]).join(parts)
    q = rng.choice(["Repeat after me: {t}", "Say {t}", "Write back exactly: {t}", "Echo this: {t}",
                    "Copy: {t}", "Please repeat {t}"]).format(t=text)
    return _render([{"role": "user", "content": q}, {"role": "assistant", "content": text}])


def without_cities(text: str) -> str:
    """`text` with the weather table's city names taken out, for training the BPE: a city that became
    one token would be two unrelated tokens, " Paris" in a request and "Paris" on the call's own line,
    and copying it would be a lookup to learn city by city; left to ordinary subwords, it is copied
    piece by piece like any other word (cities outside the table too)."""
    for city in WEATHER:
        text = text.replace(city, "")
    return text


def drills(n: int, seed: int) -> list[str]:
    """Short conversations that put copying from the prompt into most of the loss: tool exchanges
    without the tools prompt, echo requests, a few questions."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        out.append(tool_dialogue(rng, tools_prompt=False) if r < 0.5 else echo_dialogue(rng) if r < 0.85
                   else qa_dialogue(rng))
    return out


def stdlib_files(max_chars: int = 8000) -> tuple[list[str], list[str]]:
    """(train, held-out) sources of the top-level stdlib modules, each cut to its first
    `max_chars` characters (enough code to specialise experts without crowding out the chats)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    train, held = [], []
    for p in sorted(stdlib.glob("*.py")):
        text = p.read_text(errors="ignore")[:max_chars]
        if len(text) < 500:
            continue
        (held if int(hashlib.sha1(p.name.encode()).hexdigest(), 16) % 20 == 0 else train).append(text)
    return train, held


def conversations(n: int, seed: int, tool_share: float = 0.6) -> list[str]:
    rng = random.Random(seed)
    return [tool_dialogue(rng) if rng.random() < tool_share else qa_dialogue(rng) for _ in range(n)]


def held_out_tool_requests(n: int, seed: int) -> list[tuple[str, str, dict, str]]:
    """n tool requests whose texts the training never saw (see held_out)."""
    rng = random.Random(seed + 1)
    out = []
    while len(out) < n:
        req = tool_request(rng)
        if held_out(req[0]):
            out.append(req)
    return out
