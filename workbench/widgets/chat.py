"""ChatPanel: chat with a model in JupyterLab, with thinking shown apart, native tool calls shown as
they happen, a live tokens/s readout, Qwen's recommended sampling presets, and a Stop button that
works while a reply streams (generation runs in a background thread, so the kernel stays free to
receive the click)."""
from __future__ import annotations

import html
import threading
import time
from typing import Callable, Sequence

import ipywidgets as w

from ..chat import ChatEvent, ChatLoop
from .common import Status
from .message_box import MessageBox
from .speed import TokensPerSecondMeter

# The Qwen3.5 model card's recommended settings.
PRESETS = {
    "thinking: general": dict(thinking=True, temperature=1.0, top_p=0.95, top_k=20, presence_penalty=1.5),
    "thinking: precise coding": dict(thinking=True, temperature=0.6, top_p=0.95, top_k=20, presence_penalty=0.0),
    "non-thinking: general": dict(thinking=False, temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5),
    "greedy (reproducible)": dict(thinking=False, temperature=0.0, top_p=1.0, top_k=0, presence_penalty=0.0),
}


def _pre(text: str) -> str:
    return f"<pre style='white-space:pre-wrap;margin:2px 0'>{html.escape(text)}</pre>"


class _Turn:
    """The assistant turn being streamed: thinking, text, tool calls and results, in order."""

    def __init__(self):
        self.parts: list[list] = []   # [kind, text]

    def add(self, kind: str, text: str) -> None:
        if self.parts and self.parts[-1][0] == kind and kind in ("thinking", "text"):
            self.parts[-1][1] += text
        else:
            self.parts.append([kind, text])

    def html(self, live: bool) -> str:
        out = []
        for kind, text in self.parts:
            if kind == "thinking":
                out.append(f"<details {'open' if live else ''} class='wb-thinking'><summary>thinking</summary>"
                           f"<div style='color:#666'>{_pre(text)}</div></details>")
            elif kind == "text":
                # Tool calls are shown as calls (below), not as the XML the model wrote for them.
                answer, call = text.split("<tool_call>", 1)[0], "<tool_call>" in text
                if answer.strip() or not call:
                    out.append(f"<div class='wb-answer'>{_pre(answer)}</div>")
                if call and live:
                    out.append("<div class='wb-tool-call' style='color:#1a5fb4'>&#128295; calling a tool ...</div>")
            elif kind == "tool_call":
                out.append(f"<div class='wb-tool-call' style='color:#1a5fb4'>&#128295; {html.escape(text)}</div>")
            else:
                out.append(f"<div class='wb-tool-result' style='color:#26a269'>&#8627; {html.escape(text)}</div>")
        return "<div class='wb-assistant'><b>assistant</b>" + "".join(out) + "</div>"


class ChatPanel(w.VBox):
    """Chat with `model`; `tools` are plain Python functions the model may call."""

    def __init__(self, model, tools: Sequence[Callable] = (), preset: str = "non-thinking: general",
                 max_new_tokens: int = 256, system: str | None = None, raw_control_tokens: bool = False):
        self.model, self.tools = model, list(tools)
        # Control tokens typed into a message or returned by a tool stay text unless asked otherwise.
        self.raw_control_tokens = raw_control_tokens
        self.system = system
        self.messages: list[dict] = []
        self.history = w.HTML(layout={"width": "100%"})
        self.current = w.HTML(layout={"width": "100%"})
        self.message = MessageBox(placeholder="Type a message, then Send (or Ctrl+Enter)")
        self.send_button = w.Button(description="Send", button_style="primary", icon="paper-plane")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.reset_button = w.Button(description="Reset", icon="trash")
        self.preset = w.Dropdown(options=list(PRESETS), value=preset, description="preset")
        self.thinking = w.Checkbox(value=False, description="thinking")
        self.temperature = w.FloatSlider(value=0.7, min=0, max=2, step=0.05, description="temperature")
        self.top_p = w.FloatSlider(value=0.8, min=0.05, max=1, step=0.05, description="top-p")
        self.top_k = w.IntSlider(value=20, min=0, max=200, description="top-k")
        self.presence_penalty = w.FloatSlider(value=1.5, min=-2, max=2, step=0.1, description="presence")
        self.max_new_tokens = w.IntSlider(value=max_new_tokens, min=1, max=4096, description="max tokens")
        self.meter = TokensPerSecondMeter()
        self.status = Status()
        self._thread: threading.Thread | None = None
        self._turns: list[str] = []        # rendered assistant turns, one per user message answered
        self._loop: ChatLoop | None = None
        self.last_result = None
        self.preset.observe(lambda _c: self.apply_preset(self.preset.value), names="value")
        self.send_button.on_click(lambda _b: self.send())
        self.message.on_submit(self.send)
        self.stop_button.on_click(lambda _b: self.stop())
        self.reset_button.on_click(lambda _b: self.reset())
        self.apply_preset(preset)
        tools_line = w.HTML(f"tools: {', '.join(t.__name__ for t in self.tools)}" if self.tools else "")
        super().__init__([
            self.history, self.current, self.message,
            w.HBox([self.send_button, self.stop_button, self.reset_button, self.meter]),
            w.HBox([self.preset, self.thinking, self.max_new_tokens]),
            w.HBox([self.temperature, self.top_p]), w.HBox([self.top_k, self.presence_penalty]),
            tools_line, self.status.widget])

    # ---- controls -----------------------------------------------------------------------
    def apply_preset(self, name: str) -> None:
        p = PRESETS[name]
        self.thinking.value = p["thinking"]
        self.temperature.value, self.top_p.value = p["temperature"], p["top_p"]
        self.top_k.value, self.presence_penalty.value = p["top_k"], p["presence_penalty"]

    def sampling(self) -> dict:
        return dict(temperature=self.temperature.value, top_p=self.top_p.value, top_k=self.top_k.value,
                    presence_penalty=self.presence_penalty.value)

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def send(self, text: str | None = None) -> None:
        """Send the message box's text (or `text`); the reply streams in a background thread."""
        text = self.message.value if text is None else text
        if self.busy:
            self.status.info("a reply is still streaming: press Stop first.")
            return
        if not text.strip():
            self.status.info("type a message first.")
            return
        self.message.value = ""
        if self.system and not self.messages:
            self.messages.append({"role": "system", "content": self.system})
        self.messages.append({"role": "user", "content": text})
        self._render_history()
        try:
            self._loop = ChatLoop(self.model, self.messages, self.tools, thinking=self.thinking.value,
                                  max_new_tokens=self.max_new_tokens.value,
                                  raw_control_tokens=self.raw_control_tokens, **self.sampling())
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            self.messages.pop()
            self.status.error(exc)
            return
        self.send_button.disabled, self.stop_button.disabled = True, False
        self.status.info("generating ...")
        self._thread = threading.Thread(target=self._run, args=(self._loop,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current reply is done (for scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def reset(self) -> None:
        self.stop()
        self.wait(30)
        self.messages, self._turns = [], []
        self.history.value = self.current.value = ""
        self.status.info("conversation cleared")

    # ---- the reply ----------------------------------------------------------------------
    def _run(self, loop: ChatLoop) -> None:
        turn = _Turn()
        last_draw = 0.0
        self._metering = False
        try:
            for event in loop.events():
                self._on_event(event, turn)
                now = time.perf_counter()
                if event.kind != "text" and event.kind != "thinking" or now - last_draw > 0.05:
                    self.current.value = turn.html(live=True)
                    last_draw = now
            result = loop.result
            self.last_result = result
            self.messages = result.messages
            note = ""
            if result.finish_reason == "length":
                note = (f" - the reply was cut at {self.max_new_tokens.value} tokens"
                        + (" while thinking, before any answer" if not result.text.strip() else "")
                        + ": raise 'max tokens' to let it finish")
            self.status.info(f"done: {result.finish_reason}" + (f", {len(result.calls)} tool call(s)"
                                                                  if result.calls else "") + note)
        except Exception as exc:  # noqa: BLE001 - the panel stays usable
            if self.messages and self.messages[-1]["role"] == "user":
                self.messages.pop()
            self.status.error(exc)
        finally:
            if turn.parts:
                self._turns.append(turn.html(live=False))
            self.current.value = ""
            self._render_history()
            self.send_button.disabled, self.stop_button.disabled = False, True

    def _on_event(self, event: ChatEvent, turn: _Turn) -> None:
        if event.kind in ("text", "thinking"):
            turn.add(event.kind, event.text)
            if not self._metering:
                self.meter.start()
                self._metering = True
            self.meter.tick_to(event.tokens)  # this round's tokens so far (start() set the count to 0)
        elif event.kind == "round":
            stats = event.generation.stats
            if stats.new_tokens:
                self.meter.finish(stats)
            self._metering = False
        elif event.kind == "tool_call":
            c = event.call
            args = ", ".join(f"{k}={v!r}" for k, v in c.arguments.items())
            if c.error and c.error.startswith("unknown function"):
                turn.add("tool_call", f"the model called {c.name or '?'}({args}), a tool this chat does not have")
            else:
                turn.add("tool_call", f"{c.name or '?'}({args})" + (f"  [error: {c.error}]" if c.error else ""))
        elif event.kind == "tool_result":
            turn.add("tool_result", event.text)

    def _render_history(self) -> None:
        blocks = []
        turns = iter(self._turns)
        for m in self.messages:
            if m["role"] == "user":
                blocks.append(f"<div class='wb-user'><b>you</b>{_pre(m['content'])}</div>")
            elif m["role"] == "assistant" and blocks and not blocks[-1].startswith("<div class='wb-assistant'"):
                blocks.append(next(turns, _Turn().html(False)))
        self.history.value = "".join(blocks)
