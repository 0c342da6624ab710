"""Memory plans -> plotly figures: stacked bytes per part against the device's memory."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from ..planner.devices import GB
from ..planner.plan import MemoryPlan
from .style import layout

PARTS = (("weights", "weight_bytes", "#4c78a8"), ("KV cache", "kv_bytes", "#f58518"),
         ("DeltaNet state", "state_bytes", "#54a24b"), ("activations", "activation_bytes", "#b279a2"),
         ("runtime", "runtime_bytes", "#9d9d9d"))


def memory_bars(plans: Sequence[MemoryPlan], labels: Sequence[str] | None = None) -> go.Figure:
    """One stacked bar per plan (GB), with each plan's device memory as a marker line."""
    labels = list(labels or [f"{p.model} {p.weights} @{p.context:,}" for p in plans])
    fig = go.Figure([go.Bar(x=labels, y=[getattr(p, attr) / GB for p in plans], name=name, marker_color=color,
                            hovertemplate=f"{name}: %{{y:,.2f}} GB<extra></extra>")
                     for name, attr, color in PARTS])
    devices = [p.device for p in plans]
    if any(d is not None for d in devices):
        fig.add_trace(go.Scatter(x=labels, y=[d.usable_bytes / GB if d else None for d in devices],
                                 mode="markers", marker={"symbol": "line-ew-open", "size": 40, "line": {"width": 3},
                                                         "color": "crimson"},
                                 name="usable device memory", hovertemplate="%{y:,.1f} GB usable<extra></extra>"))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(automargin=True)
    return layout(fig, "Memory per part against the device", None, "GB", height=460)


def ceilings(plans: Sequence[MemoryPlan], labels: Sequence[str] | None = None) -> go.Figure:
    """Batch-1 decode ceilings (tok/s) from memory bandwidth; with offload where planned."""
    labels = list(labels or [f"{p.model} {p.weights}" for p in plans])
    fig = go.Figure(go.Bar(x=labels, y=[p.decode_ceiling if p.fits else None for p in plans], name="all on device"))
    if any(p.offload is not None for p in plans):
        fig.add_trace(go.Bar(x=labels, y=[p.offload.decode_ceiling if p.runs_with_offload else None for p in plans],
                             name="with expert offload"))
    return layout(fig, "Decode ceiling: bandwidth / bytes read per token", None, "tok/s")
