"""Tool calling: schemas from functions, the Qwen3-Coder XML parser on well-formed, multi-call,
multi-line, typed, malformed, hostile and inside-thinking inputs, and the loop on the bundled model."""
import json
from typing import Literal

import numpy as np
import pytest

import workbench
from workbench.chat import ChatLoop
from workbench.model import Chunk
from workbench.tools import ToolBox, as_tool, parse_tool_calls


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> dict:
    """Current weather in a city.

    Args:
        city: the city's name, e.g. Paris
        unit: temperature unit
    """
    return {"city": city, "temperature": 21 if unit == "celsius" else 70, "unit": unit}


def convert_units(value: float, from_unit: str, to_unit: str) -> float:
    """Convert a value between units.

    :param value: the amount
    :param from_unit: unit of the amount
    :param to_unit: unit wanted
    """
    if (from_unit, to_unit) != ("km", "mi"):
        raise ValueError(f"cannot convert {from_unit} to {to_unit}")
    return round(value * 0.621371, 3)


def add(a: int, b: int, tags: list[str] | None = None, verbose: bool = False) -> int:
    """Add two integers."""
    return a + b


def call(_fn, **params):
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<tool_call>\n<function={_fn}>\n{body}</function>\n</tool_call>"


def test_schema_from_type_hints_and_docstrings():
    s = as_tool(get_weather).schema
    assert s["type"] == "function"
    f = s["function"]
    assert f["name"] == "get_weather" and f["description"] == "Current weather in a city."
    assert f["parameters"]["required"] == ["city"]
    assert f["parameters"]["properties"]["city"] == {"type": "string", "description": "the city's name, e.g. Paris"}
    assert f["parameters"]["properties"]["unit"]["enum"] == ["celsius", "fahrenheit"]
    p = as_tool(convert_units).schema["function"]["parameters"]["properties"]
    assert p["value"] == {"type": "number", "description": "the amount"}
    p = as_tool(add).schema["function"]["parameters"]
    assert p["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    assert p["properties"]["verbose"] == {"type": "boolean"} and p["required"] == ["a", "b"]
    with pytest.raises(workbench.WorkbenchError, match="named function"):
        as_tool(lambda x: x)


def test_well_formed_multi_call_and_multi_line():
    text = ("Let me check.\n\n" + call("get_weather", city="Paris") + "\n"
            + call("add", a="2", b="3") + "\n" + call("convert_units", value="1.5", from_unit="km", to_unit="mi"))
    content, calls = parse_tool_calls(text)
    assert content == "Let me check."
    assert [c.name for c in calls] == ["get_weather", "add", "convert_units"]
    assert calls[0].arguments == {"city": "Paris"} and all(c.error is None for c in calls)
    poem = "line one\nline two\n\nline four"
    _, [c] = parse_tool_calls(call("echo", text=poem))
    assert c.arguments["text"] == poem


def test_arguments_are_typed_per_schema():
    box = ToolBox([add, convert_units, get_weather])
    _, calls = parse_tool_calls(call("add", a="2", b=" 40 ", tags='["x", "y"]', verbose="true")
                                + call("convert_units", value="10", from_unit="km", to_unit="mi"))
    checked = [box.check(c) for c in calls]
    assert checked[0].arguments == {"a": 2, "b": 40, "tags": ["x", "y"], "verbose": True}
    assert checked[1].arguments["value"] == 10.0 and isinstance(checked[1].arguments["value"], float)
    assert box.run(checked[0]) == "42" and box.run(checked[1]) == "6.214"


@pytest.mark.parametrize("text, message", [
    (call("add", a="two", b="3"), "'a' must be an integer"),
    (call("add", a="1"), "missing required parameter(s) ['b']"),
    (call("add", a="1", b="2", c="3"), "unknown parameter(s) ['c']"),
    (call("get_weather", city="Paris", unit="kelvin"), "must be one of"),
    (call("add", a="1", b="2", tags="not json"), "JSON array"),
    (call("os.system", cmd="rm -rf /"), "unknown function 'os.system'"),
    (call("__import__", name="os"), "unknown function '__import__'"),
    ("<tool_call>\n<function=add>\n<parameter=a>\n1\n</parameter>\n", "not closed with </tool_call>"),
    ("<tool_call>\nadd(1, 2)\n</tool_call>", "no <function=NAME>"),
    ("<tool_call>\n<function=add>\n<parameter=a>\n1\n</function>\n</tool_call>", "<parameter=a> is not closed"),
    ("<tool_call>\n<function=add>\n<parameter=a>\n1\n</parameter>\n</tool_call>", "<function=add> is not closed"),
    ("<tool_call>\n<function=add>\n<parameter=a>\n1\n</parameter>\n<parameter=a>\n2\n</parameter>\n"
     "</function>\n</tool_call>", "given twice"),
], ids=["not-int", "missing", "unknown-param", "enum", "bad-json", "shell", "import", "unterminated",
        "no-function", "param-unclosed", "function-unclosed", "duplicate"])
def test_malformed_and_hostile_calls_become_tool_errors(text, message):
    box = ToolBox([add, get_weather])
    _, calls = parse_tool_calls(text)
    assert len(calls) == 1
    c = box.check(calls[0])
    assert c.error is not None and message in c.error
    assert box.run(c).startswith("Error: ")


def test_exceptions_inside_a_tool_come_back_as_errors():
    box = ToolBox([convert_units])
    c = box.check(parse_tool_calls(call("convert_units", value="1", from_unit="kg", to_unit="lb"))[1][0])
    assert box.run(c) == "Error: convert_units raised ValueError: cannot convert kg to lb"


def test_calls_inside_thinking_are_not_calls():
    thought = "<think>\nmaybe " + call("add", a="1", b="2") + "\n</think>\n\nNo tool needed."
    assert parse_tool_calls(thought) == ("No tool needed.", [])
    unfinished = "<think>\nI will " + call("add", a="1", b="2")
    assert parse_tool_calls(unfinished) == ("", [])


def test_template_renders_the_tools_the_model_sees(tiny):
    prompt = tiny.apply_chat_template([{"role": "user", "content": "weather?"}],
                                      tools=ToolBox([get_weather]).schemas, enable_thinking=False)
    assert "<tools>\n" + json.dumps(as_tool(get_weather).schema, ensure_ascii=False) in prompt


def test_the_loop_on_the_bundled_model(tiny):
    """The loop runs on real generated tokens: the random bundled model writes no tool call, so
    the loop ends after one round with its text; the conversation keeps the assistant turn."""
    res = tiny.chat([{"role": "user", "content": "What is the weather in Paris?"}], tools=[get_weather],
                    max_new_tokens=16)
    assert res.rounds == 0 and res.calls == [] and res.finish_reason in ("stop", "length")
    assert res.messages[-1]["role"] == "assistant" and res.messages[-1]["content"] == res.generations[0].text


class ScriptedModel:
    """Plays scripted assistant turns (what a tool-trained model writes), then hands over to the
    real bundled model; every prompt is rendered by the real checkpoint's template."""

    def __init__(self, real, turns):
        self.real, self.turns, self.prompts = real, list(turns), []

    def stream(self, messages, **kw):
        self.prompts.append(self.real.apply_chat_template(messages, tools=kw.get("tools"),
                                                          enable_thinking=kw.get("thinking", True)))
        if not self.turns:
            return self.real.stream(messages, **kw)
        text, finish = (self.turns.pop(0), "stop") if isinstance(self.turns[0], str) else self.turns.pop(0)
        stats = workbench.Stats(0, 0, 0.0, 0.0, 0.0, 0.0, None)
        gen = workbench.Generation(text=text, token_ids=np.zeros(0, np.int64), prompt_ids=np.zeros(0, np.int64),
                                   finish_reason=finish, stats=stats, raw_text=text)

        class Scripted:
            generation = gen

            def __iter__(self):
                yield Chunk(text, False, -1, 1)

            def stop(self):
                pass
        return Scripted()


def test_the_loop_runs_tools_and_answers(tiny):
    scripted = ScriptedModel(tiny, [call("get_weather", city="Paris") + "\n" + call("add", a="x", b="1")])
    events = []
    res = ChatLoop(scripted, [{"role": "user", "content": "Weather in Paris?"}], [get_weather, add],
                   max_new_tokens=8).run(events.append)
    assert res.rounds == 1 and [c.name for c, _ in res.calls] == ["get_weather", "add"]
    assert json.loads(res.calls[0][1]) == {"city": "Paris", "temperature": 21, "unit": "celsius"}
    assert res.calls[1][1].startswith("Error: add: argument 'a' must be an integer")
    assert [m["role"] for m in res.messages] == ["user", "assistant", "tool", "tool", "assistant"]
    kinds = [e.kind for e in events]
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("done")
    # the second round's prompt carries both tool responses, grouped into one user turn
    assert "<|im_start|>user\n<tool_response>\n{\"city\": \"Paris\"" in scripted.prompts[1]
    assert "<tool_response>\nError: add: argument 'a'" in scripted.prompts[1]
    assert res.generations[-1].token_ids.size > 0  # the final answer came from the real model


def test_round_limit_stops_a_model_that_keeps_calling(tiny):
    scripted = ScriptedModel(tiny, [call("add", a="1", b="2")] * 3)
    res = ChatLoop(scripted, [{"role": "user", "content": "add"}], [add], max_rounds=2).run()
    assert res.finish_reason == "round_limit" and res.rounds == 2 and len(res.calls) == 2


def test_a_call_cut_by_max_new_tokens_ends_the_chat_with_length(tiny):
    """A reply that max_new_tokens cut inside a call is not a malformed call: nothing runs, no tool
    error goes back (the next round would be cut the same way, until the round limit), and the chat
    ends with "length" and the text as it came. A whole call before the cut one still runs."""
    cut = call("get_weather", city="Paris")[:30]
    res = ChatLoop(ScriptedModel(tiny, [(cut, "length")]), [{"role": "user", "content": "Weather?"}],
                   [get_weather]).run()
    assert res.finish_reason == "length" and res.rounds == 0 and res.calls == [] and res.text == cut
    assert [m["role"] for m in res.messages] == ["user", "assistant"]
    whole_then_cut = call("add", a="1", b="2") + "\n" + cut
    res = ChatLoop(ScriptedModel(tiny, [(whole_then_cut, "length"), "3."]), [{"role": "user", "content": "add"}],
                   [get_weather, add]).run()
    assert [c.name for c, _ in res.calls] == ["add"] and res.calls[0][1] == "3" and res.text == "3."
    # a call the model left unclosed and then stopped is still answered as a tool error
    res = ChatLoop(ScriptedModel(tiny, [cut, "ok"]), [{"role": "user", "content": "Weather?"}], [get_weather]).run()
    assert res.calls and "not closed" in res.calls[0][1] and res.text == "ok"


def test_round_limit_and_bad_arguments(tiny):
    with pytest.raises(workbench.WorkbenchError, match="max_rounds"):
        tiny.chat([{"role": "user", "content": "hi"}], max_rounds=-1)
    with pytest.raises(workbench.WorkbenchError, match="messages"):
        tiny.chat("hi")


def test_demo_tools():
    from workbench.demo_tools import TOOLS, calculator, convert_units, get_weather
    schemas = ToolBox(TOOLS).schemas
    assert [s["function"]["name"] for s in schemas] == ["calculator", "get_weather", "convert_units"]
    assert "2 ** 10" in schemas[0]["function"]["parameters"]["properties"]["expression"]["description"]
    assert schemas[2]["function"]["parameters"]["required"] == ["value", "from_unit", "to_unit"]
    assert "km" in schemas[2]["function"]["parameters"]["properties"]["from_unit"]["description"]
    assert calculator("12 * (3 + 4)") == "84" and calculator("7 / 2") == "3.5"
    assert calculator("2 ** 10") == calculator("2^10") == "1024" and calculator("729 ** 0.5") == "27"
    assert calculator("17 % 5") == "2" and calculator("15 / 100 * 240") == "36"
    assert json.loads(get_weather("Paris")) == {"city": "Paris", "sky": "sunny", "celsius": 21}
    assert json.loads(get_weather(" buenos  AIRES "))["city"] == "Buenos Aires"  # case and spacing aside
    assert "unknown city" in get_weather("Atlantis")
    assert convert_units(100, "c", "f") == "212.00" and convert_units(1, "km", "mi") == "0.62"
    assert convert_units(12, "in", "cm") == "30.48" and convert_units(0, "c", "k") == "273.15"
    assert convert_units(100, "Fahrenheit", "degrees Celsius") == convert_units(100, "f", "c") == "37.78"
    assert "cannot convert" in convert_units(1, "km", "kg")
    assert "unknown unit parsec" in convert_units(1, "parsec", "km")


@pytest.mark.parametrize("hostile", ["__import__('os')", "9 ** 9 ** 9", "(10 ** 12) ** 1000.5", "1 / 0",
                                     "(-8) ** 0.5", "True + 1", "x + 1", "1 +", "[1] * 10 ** 9", "1e308 ** 2"])
def test_calculator_refuses_hostile_expressions_quickly(hostile):
    """Whatever a model or a user writes, the calculator answers at once or raises ValueError with
    the reason (the chat loop turns that into a tool error): nothing is eval'd, no power runs away."""
    from workbench.demo_tools import calculator
    with pytest.raises(ValueError):
        calculator(hostile)
