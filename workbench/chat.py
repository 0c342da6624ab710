"""The tool-calling chat loop: generate, parse the model's tool calls, run the registered tools,
answer with tool responses, and go on until a final answer or the round limit.

`ChatLoop.events()` yields what happens as it happens (text and thinking chunks, each call, each
result), so a panel can show it live; `Model.chat(...)` runs it to the end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .errors import WorkbenchError
from .tools import Tool, ToolBox, ToolCall, format_tool_calls, parse_tool_calls

if TYPE_CHECKING:
    from .generation import Generation
    from .model import Model


@dataclass
class ChatEvent:
    """kind: "thinking" | "text" (a streamed chunk in `text`), "tool_call" (`call`), "tool_result"
    (`call` and `text`, the tool message), "round" (one generation done: `generation`), "done"."""

    kind: str
    text: str = ""
    call: ToolCall | None = None
    generation: "Generation | None" = None
    token_id: int = -1
    tokens: int = 0         # a text or thinking chunk's Chunk.tokens: its round's tokens so far


@dataclass
class ChatResult:
    """The final answer, the whole conversation (tool turns included) and every call made."""

    text: str
    thinking: str | None
    messages: list[dict]
    calls: list[tuple[ToolCall, str]] = field(default_factory=list)
    rounds: int = 0
    finish_reason: str = "stop"   # "stop" | "length" | "interrupted" | "round_limit"
    generations: list = field(default_factory=list)

    def __str__(self) -> str:
        return self.text


class ChatLoop:
    def __init__(self, model: "Model", messages: list[dict], tools: Sequence[Callable | Tool] = (),
                 max_rounds: int = 5, thinking: bool = False, max_new_tokens: int = 512,
                 raw_control_tokens: bool = False, **sampling: Any):
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise WorkbenchError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts.")
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 0:
            raise WorkbenchError(f"max_rounds={max_rounds!r} is invalid: give a whole number >= 0.")
        self.model = model
        self.toolbox = ToolBox(tools)
        self.messages = [dict(m) for m in messages]
        self.max_rounds, self.thinking, self.max_new_tokens = max_rounds, thinking, max_new_tokens
        # Each round continues from the cache of the last (prompt_cache.py) unless told otherwise.
        self.stream_options = dict({"prompt_cache": True, **sampling}, raw_control_tokens=raw_control_tokens)
        self.result: ChatResult | None = None
        self._stream = None
        self._stopped = False

    def stop(self) -> None:
        """End the loop now (from another thread): the current generation stops after its token,
        or makes none when it has not started yet."""
        self._stopped = True
        stream = self._stream
        if stream is not None:
            stream.stop()

    def events(self) -> Iterator[ChatEvent]:
        calls: list[tuple[ToolCall, str]] = []
        generations = []
        rounds = 0
        while True:
            self._stream = self.model.stream(self.messages, max_new_tokens=self.max_new_tokens,
                                             thinking=self.thinking, tools=self.toolbox.schemas or None,
                                             **self.stream_options)
            if self._stopped:  # stopped before this stream existed (Stop right after Send)
                self._stream.stop()
            for chunk in self._stream:
                yield ChatEvent("thinking" if chunk.thinking else "text", str(chunk), token_id=chunk.token_id,
                                tokens=chunk.tokens)
            gen = self._stream.generation
            generations.append(gen)
            yield ChatEvent("round", generation=gen)
            if gen.tool_calls is not None:  # a server parsed the calls itself (structured tool_calls)
                content, found = gen.text.strip(), list(gen.tool_calls)
                message = {"role": "assistant", "content": format_tool_calls(gen.text, found)}
            else:
                # Parsed even without tools: a call to a tool this chat lacks is answered as a tool error.
                content, found = parse_tool_calls(gen.text)
                if gen.finish_reason == "length" and found and not found[-1].raw.endswith("</tool_call>"):
                    # max_new_tokens cut the call, the model did not write it wrong: there is nothing to
                    # run or to answer, and another round would be cut the same way (as vLLM and
                    # transformers do, the reply ends with "length" and its text as it came)
                    found = found[:-1]
                message = {"role": "assistant", "content": gen.text}
            if gen.thinking:
                message["reasoning_content"] = gen.thinking
            self.messages.append(message)
            reason = "interrupted" if self._stopped else gen.finish_reason
            if not found or reason == "interrupted":
                break
            if rounds == self.max_rounds:
                reason = "round_limit"
                break
            rounds += 1
            for call in found:
                self.toolbox.check(call)
                yield ChatEvent("tool_call", call=call)
                result = self.toolbox.run(call)
                calls.append((call, result))
                self.messages.append({"role": "tool", "name": call.name or "unknown", "content": result})
                yield ChatEvent("tool_result", result, call=call)
            if self._stopped:
                reason = "interrupted"
                break
        text = content if found else gen.text
        self.result = ChatResult(text=text, thinking=gen.thinking, messages=self.messages, calls=calls,
                                 rounds=rounds, finish_reason=reason, generations=generations)
        yield ChatEvent("done")

    def run(self, on_event: Callable[[ChatEvent], None] | None = None) -> ChatResult:
        for event in self.events():
            if on_event is not None:
                on_event(event)
        return self.result
