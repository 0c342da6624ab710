"""PlannerPanel: model, weight format, context and device -> stacked memory bars against the
device's memory, and the batch-1 tokens/s ceiling (with MoE expert offload when it does not fit)."""
from __future__ import annotations

import html

import ipywidgets as w

from ..figures.planner import memory_bars
from ..planner import DEVICES, FORMATS, Device, known, plan, spec
from .common import FigureArea, Status, guarded

CONTEXTS = [2**k for k in range(10, 19)]  # 1k .. 256k
CUSTOM = "custom ..."
WIDE = {"description_width": "initial"}  # labels are never cut


class PlannerPanel(w.VBox):
    def __init__(self, model: str = "Qwen/Qwen3.5-35B-A3B", weights: str = "gguf-q4_k_m",
                 context: int = 32_768, device: str = "RTX 4090", host_memory_gb: float = 64,
                 host_bandwidth_gbs: float = 60):
        self.model = w.Dropdown(options=list(known()), value=model, description="model", style=WIDE)
        self.weights = w.Dropdown(options=list(FORMATS), value=weights, description="weights", style=WIDE)
        self.context = w.SelectionSlider(options=[(f"{c // 1024}k", c) for c in CONTEXTS], value=context,
                                         description="context", style=WIDE)
        self.device = w.Dropdown(options=list(DEVICES) + [CUSTOM], value=device, description="device", style=WIDE)
        # A device of your own: used when "custom ..." is chosen.
        self.device_memory = w.BoundedFloatText(value=24, min=1, max=4096, description="device memory (GB)",
                                                style=WIDE, layout={"width": "220px"})
        self.device_bandwidth = w.BoundedFloatText(value=1000, min=1, max=100_000,
                                                   description="device bandwidth (GB/s)", style=WIDE,
                                                   layout={"width": "240px"})
        self.host_memory = w.BoundedFloatText(value=host_memory_gb, min=1, max=65_536, description="system RAM (GB)",
                                              style=WIDE, layout={"width": "200px"})
        self.host_bandwidth = w.BoundedFloatText(value=host_bandwidth_gbs, min=1, max=10_000,
                                                 description="RAM bandwidth (GB/s)", style=WIDE,
                                                 layout={"width": "220px"})
        self.offload = w.Checkbox(value=False, description="plan expert offload even when it fits", style=WIDE)
        self.verdict = w.HTML()
        self.status = Status()
        self.area = FigureArea()
        for control in (self.model, self.weights, self.context, self.device, self.offload, self.device_memory,
                        self.device_bandwidth, self.host_memory, self.host_bandwidth):
            control.observe(guarded(self.status, lambda _c: self.update(), self.area), names="value")
        super().__init__([w.HBox([self.model, self.weights]), w.HBox([self.context, self.device]),
                          w.HBox([self.device_memory, self.device_bandwidth]),
                          w.HBox([self.host_memory, self.host_bandwidth]),
                          self.offload, self.area.widget, self.verdict, self.status.widget])
        self.update()

    def chosen_device(self) -> Device | str:
        if self.device.value == CUSTOM:
            return Device("custom device", self.device_memory.value, self.device_bandwidth.value)
        return self.device.value

    def update(self) -> None:
        custom = self.device.value == CUSTOM
        self.device_memory.disabled = self.device_bandwidth.disabled = not custom
        p = plan(spec(self.model.value), self.weights.value, self.context.value, device=self.chosen_device(),
                 offload=True if self.offload.value else None, host_memory_gb=self.host_memory.value,
                 host_bandwidth_gbs=self.host_bandwidth.value)
        self.plan = p
        self.area.show(memory_bars([p], [f"{self.model.value.split('/')[-1]}<br>{p.weights}, {p.context // 1024}k"]))
        lines = [p.verdict()] + p.notes
        self.verdict.value = "<br>".join(html.escape(x) for x in lines)
        self.status.info("")
