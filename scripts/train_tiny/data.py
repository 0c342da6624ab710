"""Training data for the trained tiny model, built locally (nothing downloaded):
(a) Python source of this interpreter's standard library; (b) synthetic conversations in the
Qwen3.5 chat format rendered through the bundled chat template: requests in many phrasings
(phrasing.py) for calculator / get_weather / convert_units, answered with a call, the tool's
response and an answer, and requests that need no tool, answered plainly (some with thinking);
(c) drills: the same exchanges without the tools prompt and echo requests, where copying from the
prompt is most of the loss (see train.py).

Held out: stdlib files whose name hashes into the last 5%; requests in the held-out phrasing
(phrasing.py: frames, fillers and a fifth of the cities that training never sees); the hand-written
requests of handwritten.json.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import sys
import sysconfig
from pathlib import Path

import jinja2

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]
import phrasing  # noqa: E402

from workbench.demo_tools import TOOLS, UNIT_NAMES, WEATHER  # noqa: E402
from workbench.tools import as_tool  # noqa: E402

TEMPLATE = ROOT / "workbench" / "templates" / "qwen3_5_chat.jinja"


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


def run_tool(name: str, args: dict) -> str:
    """The tool's own answer, as the chat loop would get it."""
    fn = {f.__name__: f for f in TOOLS}[name]
    try:
        return fn(**args)
    except ValueError as e:
        return json.dumps({"error": str(e)})


def final_answer(rng: random.Random, name: str, args: dict, result: str) -> str:
    """The assistant's answer after the tool's response: it carries the result (or the error)."""
    if result.startswith('{"error"'):
        error = json.loads(result)["error"]
        if error.startswith("unknown city"):
            return rng.choice(["Sorry, I have no weather for {c}.", "I don't know the weather in {c}."]).format(
                c=args["city"])
        return rng.choice(["Sorry, the tool could not do that: {e}", "The tool said: {e}"]).format(e=error)
    if name == "calculator":
        return rng.choice(["{e} = {r}.", "The answer is {r}.", "It comes to {r}.", "That's {r}.",
                           "{r}."]).format(e=args["expression"], r=result)
    if name == "get_weather":
        data = json.loads(result)
        return rng.choice(["It is {s} in {c}, {t} °C.", "{c}: {s}, {t} degrees Celsius.",
                           "Right now {c} is {s} at {t} °C.", "In {c} it's {s} and {t} °C."]).format(
            s=data["sky"], c=data["city"], t=data["celsius"])
    return rng.choice(["{v} {f} is {r} {t}.", "That is {r} {t}.", "It comes to {r} {t}."]).format(
        v=args["value"], f=args["from_unit"], t=args["to_unit"], r=result)


REASONS = {"calculator": "The user wants {what}. I'll use the calculator.",
           "get_weather": "The user asks about the weather in {what}. I'll call get_weather.",
           "convert_units": "The user wants a unit conversion. I'll call convert_units."}


def exchange(rng: random.Random, req: phrasing.Request, thinking: bool = False) -> list[dict]:
    """The messages of one request: a call, the tool's response and the answer; or a plain answer."""
    if req.name is None:
        reply = {"role": "assistant", "content": req.answer}
        if thinking:
            reply["reasoning_content"] = "No tool is needed for this; I can answer directly."
        return [{"role": "user", "content": req.text}, reply]
    result = run_tool(req.name, req.arguments)
    call = {"role": "assistant", "content": "", "tool_calls": [_call(req.name, **req.arguments)]}
    if thinking:
        what = req.arguments.get("expression") or req.arguments.get("city") or ""
        call["reasoning_content"] = REASONS[req.name].format(what=what)
    answer = {"role": "assistant", "content": final_answer(rng, req.name, req.arguments, result)}
    if thinking:  # thinking on, the answer thinks too: an empty block would be "<think>" "\n\n", not the
        # "<think>\n" a thinking prompt ends with, and the model would not know how to go on from there
        answer["reasoning_content"] = f"The tool returned {result}. I'll answer with it."
    return [{"role": "user", "content": req.text}, call, {"role": "tool", "content": result}, answer]


ASIDE_SHARE = 0.3  # of the training split's requests


def asides() -> list[str]:
    """Plain sentences from the training stdlib files' docstrings and comments ("Split a pathname
    into drive and path."): words the model has read in code, none a place."""
    if not hasattr(asides, "sentences"):
        pattern = re.compile(r"(?<![\w.])([A-Z][a-z]+(?: [a-z][a-z,']*){3,11}\.)(?=\s)")
        asides.sentences = sorted({m.group(1) for text in stdlib_files()[0] for m in pattern.finditer(text)})
    return asides.sentences


def with_aside(rng: random.Random, req: phrasing.Request, split: str) -> phrasing.Request:
    """`req` with, in ASIDE_SHARE of the training split, a sentence about something else before or
    after it. Measured on stage 6: held-out requests had their one unfamiliar word copied as the
    city ("What are the skies like over Dubai" -> "skies", "... at the moment" -> "Dubai Moment");
    asides put many words that are not the place beside the one that is."""
    if split != "train" or rng.random() >= ASIDE_SHARE:
        return req
    aside = rng.choice(asides())
    text = f"{aside} {req.text}" if rng.random() < 0.5 else f"{req.text} {aside}"
    return phrasing.Request(text, req.name, req.arguments, req.answer)


def tool_dialogue(rng: random.Random, tools_prompt: bool = True, split: str = "train") -> str:
    """One conversation under one tools system prompt (the prompt is ~450 tokens the model does not
    learn from; sharing it puts more of each row into calls): 1-4 requests of varied phrasing, most
    needing a tool, some not (answered without a call). A quarter think first (one request, so its
    thinking is rendered). Without `tools_prompt`: the same exchanges alone, a drill (see train.py)."""
    if rng.random() < 0.25:
        return _render(exchange(rng, with_aside(rng, phrasing.request(rng, split), split), thinking=True),
                       tools=tool_schemas() if tools_prompt else None, thinking=True)
    msgs = []
    for _ in range(rng.choice([1, 1, 2, 3, 4])):
        msgs += exchange(rng, with_aside(rng, phrasing.request(rng, split), split))
    return _render(msgs, tools=tool_schemas() if tools_prompt else None)


def qa_dialogue(rng: random.Random, split: str = "train") -> str:
    """A request that needs no tool, answered, sometimes with thinking, sometimes under the tools prompt."""
    thinking = rng.random() < 0.4
    return _render(exchange(rng, with_aside(rng, phrasing.plain_request(rng, split), split), thinking=thinking),
                   tools=tool_schemas() if rng.random() < 0.5 else None, thinking=thinking)


def echo_dialogue(rng: random.Random) -> str:
    """The user asks for some cities, numbers, units or an expression back, word for word: copying
    from the prompt is what every tool call needs, and here every answer token is a copy."""
    parts = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.3:
            parts.append(_echo_word(rng))
        elif kind < 0.6:
            parts.append(phrasing._math(rng)[1])
        elif kind < 0.8:
            parts.append(str(rng.choice([rng.randint(1, 9999), round(rng.uniform(0.1, 999), rng.choice([1, 2]))])))
        else:
            parts.append(rng.choice([n for names in UNIT_NAMES.values() for n in names]))
    text = rng.choice([" ", ", ", " and "]).join(parts)
    q = rng.choice(["Repeat after me: {t}", "Say {t}", "Write back exactly: {t}", "Echo this: {t}",
                    "Copy: {t}", "Please repeat {t}"]).format(t=text)
    return _render([{"role": "user", "content": q}, {"role": "assistant", "content": text}])


def _echo_word(rng: random.Random) -> str:
    """A word or name to copy: a training city, a made-up place or a word of the training code's
    docstrings, as written or in lower case (people type names in lower case; measured on stage 7,
    held-out "beirut" came back "sirut" and "glasgow" with a broken byte)."""
    kind = rng.random()
    if kind < 0.25:
        w = rng.choice(phrasing.CITIES["train"])
    elif kind < 0.6:
        w = phrasing.made_up_city(rng)
    else:
        w = rng.choice(aside_words())
        w = w.capitalize() if rng.random() < 0.5 else w
    return w.lower() if rng.random() < 0.3 else w


def aside_words() -> list[str]:
    """The words of `asides()` of three letters or more, none a table city's name."""
    if not hasattr(aside_words, "words"):
        cities = {c.lower() for c in WEATHER}
        aside_words.words = sorted({w.strip(",.'").lower() for s in asides() for w in s.split()
                                    if len(w.strip(",.'")) >= 3 and w.strip(",.'").isalpha()} - cities)
    return aside_words.words


def _pieces_word(rng: random.Random) -> str:
    """A word of the tokenizer's letter pieces drawn evenly (phrasing.name_pieces), as written or in lower case."""
    w = phrasing._pieces_name(rng)
    return w.lower() if rng.random() < 0.3 else w


def list_echo_dialogue(rng: random.Random, word=_echo_word) -> str:
    """The user gives a few names or words in a sentence; the answer writes each on a line of its
    own, as a call writes its argument. A word after a space and the same word at the start of a
    line are different tokens (" Man"+"chester" is not "Manch"+"ester"), so each line drills the
    copy a call needs (measured on stage 7: held-out cities lost their first piece, "Manchester" ->
    "Aanchester", "Lviv" -> "Oviv"), and ends where the name ends."""
    words = [word(rng) for _ in range(rng.randint(2, 5))]
    listed = rng.choice([", ", " and ", "; "]).join(words)
    q = rng.choice(["Put each of these on its own line: {t}", "One per line, please: {t}",
                    "List these, one per line: {t}", "Write each on a new line: {t}", "Split into lines: {t}",
                    "{t}. One per line.", "Give me these one per line: {t}"]).format(t=listed)
    return _render([{"role": "user", "content": q}, {"role": "assistant", "content": "\n".join(words)}])


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
    without the tools prompt, echo requests (word for word, and a word a line, some of words made of
    the tokenizer's rarer pieces: see phrasing.name_pieces), a few questions (15%: at 12%, in stage 11,
    more requests that need no tool got a call, 16/19 -> 13/19 held-out)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        out.append(tool_dialogue(rng, tools_prompt=False) if r < 0.42 else echo_dialogue(rng) if r < 0.55
                   else list_echo_dialogue(rng) if r < 0.67 else list_echo_dialogue(rng, _pieces_word) if r < 0.85
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


def conversations(n: int, seed: int, tool_share: float = 0.6, split: str = "train") -> list[str]:
    rng = random.Random(seed)
    return [tool_dialogue(rng, split=split) if rng.random() < tool_share else qa_dialogue(rng, split)
            for _ in range(n)]


def heldout_requests(n: int, seed: int) -> list[phrasing.Request]:
    """n requests in the held-out phrasing (frames, fillers and a fifth of the cities training
    never saw; see phrasing.py), most needing a tool, some not."""
    rng = random.Random(seed + 1)
    return [phrasing.request(rng, "heldout") for _ in range(n)]


def handwritten_requests() -> list[phrasing.Request]:
    """The hand-written requests of handwritten.json: never used for training."""
    rows = json.loads((Path(__file__).with_name("handwritten.json")).read_text())
    return [phrasing.Request(r["text"], r["name"], r.get("arguments", {})) for r in rows]
