"""QuantizationExplorer: pick a reference and quantized copies, paste text, see what changed.

`QuantizationSession` runs `workbench.drift` and makes the figures (tests drive it without a browser);
`QuantizationExplorer` is the ipywidgets view over it, with a progress bar while the models run.
"""
from __future__ import annotations

from typing import Mapping

import ipywidgets as w
import plotly.graph_objects as go

from ..comparison import DriftReport, drift, model_name
from ..errors import WorkbenchError
from ..figures import drift as fd
from .common import FigureArea, Status, busy, guarded

VIEWS = ("KLD distribution", "routing agreement", "text by KLD")
CONTEXTS = (64, 128, 256, 512, 1024)
WIDE = {"description_width": "initial"}


class QuantizationSession:
    """The explorer's state: the models by name and the last report."""

    def __init__(self, models):
        if not isinstance(models, Mapping):
            models = {model_name(m): m for m in models}
        if len(models) < 2:
            raise WorkbenchError("QuantizationExplorer compares models: give a reference and at least one "
                                 "quantized copy, e.g. {'F32': load('tiny:F32'), 'Q4_0': load('tiny:Q4_0')}.")
        self.models = dict(models)
        self.report: DriftReport | None = None
        self._names: dict[str, str] = {}

    def run(self, reference: str, candidates, text: str, context: int = 256, progress=None) -> DriftReport:
        if reference not in self.models:
            raise WorkbenchError(f"unknown reference {reference!r}; choose one of {', '.join(self.models)}.")
        candidates = [c for c in candidates if c != reference]
        if not candidates:
            raise WorkbenchError("pick at least one candidate other than the reference.")
        if not text.strip():
            raise WorkbenchError("paste some text first (at least one chunk of tokens).")
        self.report = drift(self.models[reference], {c: self.models[c] for c in candidates}, text,
                            context=context, progress=progress)
        return self.report

    def figure(self, view: str, candidate: str | None = None) -> go.Figure:
        if self.report is None:
            raise WorkbenchError("press Run first.")
        if view not in VIEWS:
            raise WorkbenchError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}.")
        if view == "KLD distribution":
            return fd.kld_distributions(self.report)
        if view == "routing agreement":
            return fd.routing_heatmap(self.report)
        if candidate is None:
            candidate = self.report.tokens.sort_values("mean KLD").candidate.iloc[-1]
        return fd.text_by_kld(self.report, candidate)


class QuantizationExplorer(w.VBox):
    def __init__(self, models, reference: str | None = None, text: str = "", context: int = 256):
        self.session = QuantizationSession(models)
        names = list(self.session.models)
        self.reference = w.Dropdown(options=names, value=reference or names[0], description="reference", style=WIDE)
        self.candidates = w.SelectMultiple(options=names, value=tuple(n for n in names if n != self.reference.value),
                                           description="candidates", style=WIDE, rows=min(6, len(names)))
        self.text = w.Textarea(value=text, placeholder="paste text: it is cut into chunks of `context` tokens",
                               layout={"width": "100%", "height": "120px"})
        self.context = w.Dropdown(options=list(CONTEXTS), value=context if context in CONTEXTS else 256,
                                  description="context (tokens per chunk)", style=WIDE)
        self.run_button = w.Button(description="Run", button_style="primary")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="", layout={"width": "300px"})
        self.view = w.ToggleButtons(options=list(VIEWS), value=VIEWS[0])
        self.text_candidate = w.Dropdown(options=[], description="candidate", style=WIDE)
        self.table = w.HTML()
        self.status = Status()
        self.area = FigureArea()
        self.run_button.on_click(guarded(self.status, lambda _b: self.run(), self.area))
        for control in (self.view, self.text_candidate):
            control.observe(guarded(self.status, lambda _c: self.draw(), self.area), names="value")
        super().__init__([w.HBox([self.reference, self.candidates]), self.text,
                          w.HBox([self.context, self.run_button, self.progress]),
                          w.HBox([self.view, self.text_candidate]), self.area.widget, self.table, self.status.widget])

    def run(self) -> DriftReport:
        def progress(done, total, what):
            self.progress.max, self.progress.value = max(total, 1), done
            self.status.info(what)

        with busy(self.run_button):
            report = self.session.run(self.reference.value, self.candidates.value, self.text.value,
                                      self.context.value, progress=progress)
        # The text view opens on the copy that moved most (its colours say the most).
        worst = report.tokens.sort_values("mean KLD").candidate.iloc[-1]
        self.text_candidate.options = report.candidates
        self.text_candidate.value = worst
        self.table.value = report.tokens.round(4).to_html(index=False, border=0)
        self.status.info(f"done: {report.chunks} chunk(s) of {report.context} tokens, "
                         f"{len(report.per_token[report.candidates[0]].kld)} scored per candidate")
        self.draw()
        return report

    def draw(self) -> None:
        if self.session.report is None:
            return
        self.text_candidate.layout.visibility = "visible" if self.view.value == "text by KLD" else "hidden"
        self.area.show(self.session.figure(self.view.value, self.text_candidate.value), key=self.view.value)
