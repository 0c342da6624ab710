"""PlannerPanel: model, weight format, context and device -> stacked memory bars against the
device's memory, and the batch-1 tokens/s ceiling (with MoE expert offload when it does not fit)."""
from __future__ import annotations

import html

import ipywidgets as w

from ..figures.planner import memory_bars
from ..planner import DEVICES, FORMATS, known, plan, spec
from .common import FigureArea, Status, guarded

CONTEXTS = [2**k for k in range(10, 19)]  # 1k .. 256k


class PlannerPanel(w.VBox):
    def __init__(self, model: str = "Qwen/Qwen3.5-35B-A3B", weights: str = "gguf-q4_k_m",
                 context: int = 32_768, device: str = "RTX 4090"):
        self.model = w.Dropdown(options=list(known()), value=model, description="model")
        self.weights = w.Dropdown(options=list(FORMATS), value=weights, description="weights")
        self.context = w.SelectionSlider(options=[(f"{c // 1024}k", c) for c in CONTEXTS], value=context,
                                         description="context")
        self.device = w.Dropdown(options=list(DEVICES), value=device, description="device")
        self.offload = w.Checkbox(value=False, description="plan expert offload even when it fits")
        self.verdict = w.HTML()
        self.status = Status()
        self.area = FigureArea()
        for control in (self.model, self.weights, self.context, self.device, self.offload):
            control.observe(guarded(self.status, lambda _c: self.update()), names="value")
        super().__init__([w.HBox([self.model, self.weights]), w.HBox([self.context, self.device]),
                          self.offload, self.area.widget, self.verdict, self.status.widget])
        self.update()

    def update(self) -> None:
        p = plan(spec(self.model.value), self.weights.value, self.context.value, device=self.device.value,
                 offload=True if self.offload.value else None)
        self.plan = p
        self.area.show(memory_bars([p], [f"{self.model.value.split('/')[-1]}<br>{p.weights}, {p.context // 1024}k"]))
        lines = [p.verdict()] + p.notes
        self.verdict.value = "<br>".join(html.escape(x) for x in lines)
        self.status.info("")
