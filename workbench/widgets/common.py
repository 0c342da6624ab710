"""Pieces every panel uses: a plotly FigureWidget whose content is swapped in place, and a status
line that shows errors instead of letting a callback die silently."""
from __future__ import annotations

import html
import traceback
from typing import Callable

import ipywidgets as w
import plotly.graph_objects as go

from ..errors import WorkbenchError


class FigureArea:
    """A FigureWidget showing one figure at a time; `on_click(fn)` gets (trace_index, x, y)."""

    def __init__(self):
        self.widget = go.FigureWidget()
        self._click: Callable | None = None

    def show(self, fig: go.Figure, clickable: bool = False) -> None:
        with self.widget.batch_update():
            self.widget.data = []
            self.widget.add_traces(list(fig.data))
            self.widget.layout = fig.layout
        if clickable and self._click is not None:
            for i, trace in enumerate(self.widget.data):
                trace.on_click(lambda tr, points, _sel, i=i: points.xs and self._click(i, points.xs[0], points.ys[0]))

    def on_click(self, fn: Callable) -> None:
        self._click = fn

    @property
    def figure(self) -> go.FigureWidget:
        return self.widget


class Status:
    """One line under a panel: progress, results, or the error that stopped an action."""

    def __init__(self):
        self.widget = w.HTML(value="")

    def info(self, text: str) -> None:
        self.widget.value = f"<span style='color:#555'>{html.escape(text)}</span>"

    def error(self, exc: BaseException) -> None:
        if isinstance(exc, WorkbenchError):
            text = str(exc)
        else:  # unexpected: keep the type and the last frame, the session goes on
            text = f"{type(exc).__name__}: {exc} ({traceback.extract_tb(exc.__traceback__)[-1].name})"
        self.widget.value = f"<span style='color:#b00020'><b>Error:</b> {html.escape(text)}</span>"

    @property
    def text(self) -> str:
        import re
        return html.unescape(re.sub("<[^>]+>", "", self.widget.value))


def guarded(status: Status, fn: Callable) -> Callable:
    """Wrap a widget callback so any exception lands in `status` and the panel stays usable."""

    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - shown to the user, not swallowed
            status.error(exc)
    return run
