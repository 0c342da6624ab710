"""MessageBox: a text box that sends on Ctrl+Enter (Cmd+Enter on a Mac), as chat apps do.

ipywidgets' Textarea has no key events, so this is a small anywidget: the browser side is a plain
<textarea> that syncs `value` as the user types and sends a "submit" message on Ctrl/Cmd+Enter;
JupyterLab's own Ctrl+Enter (run the cell) is suppressed while the box has focus.
"""
from __future__ import annotations

from typing import Callable

import anywidget
import traitlets

_ESM = """
function render({ model, el }) {
  el.dataset.lmSuppressShortcuts = "true";   // keep JupyterLab's Ctrl+Enter (run cell) out of the box
  const area = document.createElement("textarea");
  area.className = "wb-message";
  area.placeholder = model.get("placeholder");
  area.value = model.get("value");
  area.style.cssText = "width:100%;height:60px;box-sizing:border-box;font-family:inherit";
  const push = () => { model.set("value", area.value); model.save_changes(); };
  area.addEventListener("input", push);
  area.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      e.stopPropagation();
      push();
      model.send({ event: "submit" });
    }
  });
  model.on("change:value", () => {
    if (area.value !== model.get("value")) area.value = model.get("value");
  });
  model.on("change:disabled", () => { area.disabled = model.get("disabled"); });
  el.appendChild(area);
}
export default { render };
"""


class MessageBox(anywidget.AnyWidget):
    """`value` is the text; `on_submit(fn)` runs `fn()` when the user presses Ctrl/Cmd+Enter."""

    _esm = _ESM
    value = traitlets.Unicode("").tag(sync=True)
    placeholder = traitlets.Unicode("").tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._submit: list[Callable[[], None]] = []
        self.on_msg(self._on_msg)

    def on_submit(self, fn: Callable[[], None]) -> None:
        self._submit.append(fn)

    def submit(self) -> None:
        """What Ctrl/Cmd+Enter does (also for scripts and tests)."""
        for fn in self._submit:
            fn()

    def _on_msg(self, _widget, content, _buffers) -> None:
        if isinstance(content, dict) and content.get("event") == "submit":
            self.submit()
