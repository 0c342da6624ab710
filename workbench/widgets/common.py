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
    """The figure of a panel; `on_click(fn)` gets (trace_index, x, y).

    A figure of another kind (`key`, e.g. the view's name) gets a new FigureWidget: plotly.js applies
    a new layout as a diff, so the previous view's lines, annotations and axes would stay drawn in the
    browser. A figure of the same kind (a slider step) is updated in place, without a redraw flash."""

    def __init__(self):
        self._figure = go.FigureWidget()
        self.widget = w.Box([self._figure], layout={"width": "100%", "display": "block"})
        self._key: object = None
        self._click: Callable | None = None

    def show(self, fig: go.Figure, clickable: bool = False, key: object = None) -> None:
        self.dim(False)
        if key is None or key != self._key:
            old, self._figure = self._figure, go.FigureWidget(fig)
            self.widget.children = (self._figure,)
            old.close()  # its model in the kernel and the browser goes too
        else:
            with self._figure.batch_update():
                self._figure.data = []
                self._figure.add_traces(list(fig.data))
                self._figure.layout = fig.layout
        self._key = key
        if clickable and self._click is not None:
            for i, trace in enumerate(self._figure.data):
                trace.on_click(lambda tr, points, _sel, i=i: points.xs and self._click(i, points.xs[0], points.ys[0]))

    def on_click(self, fn: Callable) -> None:
        self._click = fn

    def dim(self, on: bool = True) -> None:
        """Grey the figure out: after an error it no longer shows the controls' current state."""
        self.widget.layout.opacity = "0.35" if on else "1"

    @property
    def figure(self) -> go.FigureWidget:
        """The FigureWidget shown now."""
        return self._figure


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


def guarded(status: Status, fn: Callable, area: "FigureArea | None" = None) -> Callable:
    """Wrap a widget callback so any exception lands in `status` and the panel stays usable; the
    figure in `area`, if given, is dimmed (it shows the last good result, not the current controls)."""

    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - shown to the user, not swallowed
            status.error(exc)
            if area is not None:
                area.dim()
    return run


class busy:
    """Disable `buttons` while a block runs (the widget state reaches the browser at once)."""

    def __init__(self, *buttons):
        self.buttons = buttons

    def __enter__(self):
        for b in self.buttons:
            b.disabled = True

    def __exit__(self, *exc):
        for b in self.buttons:
            b.disabled = False
        return False
