"""Native tool calling: JSON schemas from plain Python functions, the Qwen3-Coder XML tool-call
parser, typing arguments per schema, and safe execution (registered functions only; model text is
never evaluated).

The format Qwen3.5 is trained on (its chat template describes it to the model):

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>
"""
from __future__ import annotations

import inspect
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .errors import WorkbenchError
from .thinking import THINK_CLOSE, THINK_OPEN

_PY_TO_JSON = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object",
               tuple: "array"}


# ---- schemas ----------------------------------------------------------------------------
def _json_type(annotation) -> dict:
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return {"type": _PY_TO_JSON.get(type(args[0]), "string"), "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _json_type(rest[0]) if len(rest) == 1 else {"anyOf": [_json_type(a) for a in rest]}
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        out = {"type": "array"}
        if args:
            out["items"] = _json_type(args[0])
        return out
    if origin is dict or annotation is dict:
        return {"type": "object"}
    if annotation in _PY_TO_JSON:
        return {"type": _PY_TO_JSON[annotation]}
    raise WorkbenchError(f"type {annotation!r} can not be described to the model; use str, int, float, bool, "
                         "list, dict or Literal[...] in tool signatures.")


def _doc_parts(doc: str) -> tuple[str, dict[str, str]]:
    """(summary, {param: description}) from a Google- or reST-style docstring."""
    doc = inspect.cleandoc(doc or "")
    summary = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    params: dict[str, str] = {}
    for m in re.finditer(r"^\s*:param\s+(\w+):\s*(.+)$", doc, re.M):
        params[m.group(1)] = m.group(2).strip()
    section = re.search(r"^(Args|Arguments|Parameters):\s*\n((?:[ \t]+.*\n?)+)", doc, re.M)
    if section:
        for m in re.finditer(r"^\s+(\w+)(?:\s*\([^)]*\))?\s*:\s*(.+)$", section.group(2), re.M):
            params.setdefault(m.group(1), m.group(2).strip())
    if summary.startswith(("Args:", "Arguments:", "Parameters:", ":param")):
        summary = ""
    return summary, params


@dataclass(frozen=True)
class Tool:
    """A registered Python function and the schema the model sees."""

    name: str
    fn: Callable
    schema: dict   # {"type": "function", "function": {"name", "description", "parameters"}}

    @property
    def parameters(self) -> dict:
        return self.schema["function"]["parameters"]


def as_tool(fn: Callable | Tool) -> Tool:
    """Describe `fn` from its signature (type hints) and docstring."""
    if isinstance(fn, Tool):
        return fn
    if not callable(fn) or not getattr(fn, "__name__", None) or fn.__name__ == "<lambda>":
        raise WorkbenchError(f"{fn!r} can not be a tool: register a named function (def ...) with type hints.")
    hints = typing.get_type_hints(fn)
    summary, docs = _doc_parts(fn.__doc__ or "")
    props, required = {}, []
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise WorkbenchError(f"tool {fn.__name__}: *args / **kwargs can not be described; name each parameter.")
        prop = _json_type(hints.get(name, p.annotation))
        if name in docs:
            prop["description"] = docs[name]
        props[name] = prop
        if p.default is inspect.Parameter.empty:
            required.append(name)
    schema = {"type": "function", "function": {
        "name": fn.__name__, "description": summary or fn.__name__.replace("_", " "),
        "parameters": {"type": "object", "properties": props, "required": required}}}
    return Tool(fn.__name__, fn, schema)


# ---- parsing ----------------------------------------------------------------------------
@dataclass
class ToolCall:
    """One call the model asked for. `arguments` are the raw strings until typed; `error` says
    why it can not run (malformed, unknown function, bad arguments)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    raw: str = ""
    error: str | None = None


_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)
_FUNCTION = re.compile(r"<function=([^>\n]*)>(.*?)(</function>|$)", re.S)
_PARAM = re.compile(r"<parameter=([^>\n]*)>(.*?)(</parameter>|(?=<parameter=)|(?=</function>)|$)", re.S)


def strip_thinking(text: str) -> str:
    """Drop <think>...</think> blocks (and an unclosed trailing one): calls inside thinking are not
    calls. One pass over the text, whatever the model wrote."""
    out, pos = [], 0
    while True:
        start = text.find(THINK_OPEN, pos)
        if start == -1:
            out.append(text[pos:])
            break
        out.append(text[pos:start])
        end = text.find(THINK_CLOSE, start + len(THINK_OPEN))
        if end == -1:
            break
        pos = end + len(THINK_CLOSE)
    return "".join(out)


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """(content before the first call, calls) of an assistant answer in Qwen3-Coder XML.

    Thinking blocks are ignored. A call that can not be read comes back with `.error` set, so the
    model can be told what was wrong."""
    text = strip_thinking(text)
    first = text.find("<tool_call>")
    if first == -1:
        return text.strip(), []
    content = text[:first].strip()
    calls = []
    for m in _CALL.finditer(text, first):
        body, raw = m.group(1), m.group(0)
        if not raw.endswith("</tool_call>"):
            calls.append(ToolCall("", raw=raw, error="the tool call is not closed with </tool_call>"))
            continue
        fm = _FUNCTION.search(body)
        if fm is None:
            calls.append(ToolCall("", raw=raw, error="no <function=NAME> inside <tool_call>"))
            continue
        name = fm.group(1).strip()
        if not fm.group(3):
            calls.append(ToolCall(name, raw=raw, error=f"<function={name}> is not closed with </function>"))
            continue
        args: dict[str, str] = {}
        error = None
        for pm in _PARAM.finditer(fm.group(2)):
            pname = pm.group(1).strip()
            if pm.group(3) != "</parameter>":
                error = f"<parameter={pname}> is not closed with </parameter>"
                break
            if pname in args:
                error = f"parameter {pname!r} is given twice"
                break
            value = pm.group(2)
            value = value[1:] if value.startswith("\n") else value
            value = value[:-1] if value.endswith("\n") else value
            args[pname] = value
        calls.append(ToolCall(name, args, raw=raw, error=error))
    return content, calls


def format_tool_calls(content: str, calls: Sequence[ToolCall]) -> str:
    """An assistant answer with structured calls (a server's `tool_calls`) written back as the
    Qwen3-Coder XML the chat template renders for them, so the next request shows the model its own
    calls as it would have written them, on any server (some templates only accept dict arguments)."""
    parts = []
    for call in calls:
        params = "".join(f"<parameter={k}>\n{json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v}"
                         "\n</parameter>\n" for k, v in call.arguments.items())
        parts.append(f"<tool_call>\n<function={call.name}>\n{params}</function>\n</tool_call>")
    lead = content.strip()
    return (lead + "\n\n" if lead else "") + "\n".join(parts)


# ---- typing and running -----------------------------------------------------------------
# Plain ASCII numbers only: int() and float() also read other scripts' digits ('٣' is 3).
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value

def _json_matches(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, {"boolean": bool, "array": list, "object": dict, "string": str,
                              "null": type(None)}.get(kind, object))


def _coerce(value: Any, schema: dict, name: str) -> Any:
    kind = schema.get("type")
    if "enum" in schema:
        typed = _coerce(value, {"type": kind}, name) if kind else value
        if typed not in schema["enum"]:
            raise ValueError(f"argument {name!r} must be one of {schema['enum']}, got {value!r}")
        return typed
    if "anyOf" in schema:
        for option in schema["anyOf"]:
            try:
                return _coerce(value, option, name)
            except ValueError:
                pass
        raise ValueError(f"argument {name!r}: {value!r} matches none of the allowed types")
    if not isinstance(value, str):  # a server's structured call: JSON values, checked against the type
        if kind is None or _json_matches(value, kind):
            return value
        raise ValueError(f"argument {name!r} must be of JSON type {kind}, got {value!r}")
    if kind in (None, "string"):
        return value
    text = value.strip()
    try:
        if kind == "integer" and _INTEGER.fullmatch(text):
            return int(text)
        if kind == "number" and _NUMBER.fullmatch(text) and math.isfinite(float(text)):
            return float(text)
        if kind == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if kind in ("array", "object"):
            parsed = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
            if isinstance(parsed, list if kind == "array" else dict):
                return parsed
    except (ValueError, RecursionError):  # RecursionError: JSON nested past Python's stack
        pass
    expected = {"integer": "an integer", "number": "a number", "boolean": "true or false",
                "array": "a JSON array", "object": "a JSON object"}.get(kind, kind)
    raise ValueError(f"argument {name!r} must be {expected}, got {value!r}")


class ToolBox:
    """The registered tools of a chat: their schemas for the template, and safe execution."""

    def __init__(self, tools: Sequence[Callable | Tool] = ()):
        self.tools: dict[str, Tool] = {}
        for t in tools:
            tool = as_tool(t)
            if tool.name in self.tools:
                raise WorkbenchError(f"two tools are named {tool.name!r}; tool names must be unique.")
            self.tools[tool.name] = tool

    @property
    def schemas(self) -> list[dict]:
        return [t.schema for t in self.tools.values()]

    def check(self, call: ToolCall) -> ToolCall:
        """Type the call's arguments per its tool's schema; set `.error` when it can not run."""
        if call.error:
            return call
        tool = self.tools.get(call.name)
        if tool is None:
            call.error = (f"unknown function {call.name!r}; available: {', '.join(self.tools) or 'none'}")
            return call
        props, required = tool.parameters["properties"], tool.parameters["required"]
        unknown = [k for k in call.arguments if k not in props]
        missing = [k for k in required if k not in call.arguments]
        if unknown or missing:
            parts = ([f"unknown parameter(s) {unknown}"] if unknown else []) + \
                    ([f"missing required parameter(s) {missing}"] if missing else [])
            call.error = f"{call.name}: " + "; ".join(parts)
            return call
        try:
            call.arguments = {k: _coerce(v, props[k], k) for k, v in call.arguments.items()}
        except (ValueError, TypeError, RecursionError) as exc:
            call.error = f"{call.name}: {exc}"[:500]
        return call

    def run(self, call: ToolCall) -> str:
        """The tool message content for a checked call: its result, or the error."""
        if call.error:
            return f"Error: {call.error}"
        try:
            result = self.tools[call.name].fn(**call.arguments)
        except Exception as exc:  # noqa: BLE001 - a tool's failure goes back to the model
            return f"Error: {call.name} raised {type(exc).__name__}: {exc}"
        if isinstance(result, str):
            return result
        try:
            return json.dumps(result, ensure_ascii=False, default=str)
        except (ValueError, TypeError, RecursionError) as exc:  # circular, or nested past the stack
            return f"Error: {call.name} returned a value that cannot be written as JSON ({type(exc).__name__}: {exc})"
