"""Benchmark tables -> plotly figures."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import layout


def results(df: pd.DataFrame) -> go.Figure:
    """t/s per test (mean with ±std error bars), one colour per backend."""
    fig = go.Figure()
    for backend, part in df.groupby("backend", sort=False):
        fig.add_trace(go.Bar(x=part["test"], y=part["t/s"], error_y={"type": "data", "array": _none_for_nan(part["t/s std"])},
                             name=backend, hovertemplate="%{x}: %{y:,.1f} tok/s<extra></extra>"))
    fig.update_layout(barmode="group")
    return layout(fig, "Tokens per second (mean ± std over repeats)", "test", "tok/s")


def depth_sweep(df: pd.DataFrame) -> go.Figure:
    """Decode tok/s and peak memory against context depth (tg rows)."""
    tg = df[(df.n_gen > 0) & (df.n_prompt == 0)].sort_values("depth")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for backend, part in tg.groupby("backend", sort=False):
        fig.add_trace(go.Scatter(x=part.depth, y=part["t/s"], error_y={"type": "data", "array": _none_for_nan(part["t/s std"])},
                                 mode="lines+markers", name=f"{backend}: decode tok/s"), secondary_y=False)
        fig.add_trace(go.Scatter(x=part.depth, y=part.peak_memory_MiB, mode="lines+markers", line={"dash": "dot"},
                                 name=f"{backend}: peak memory (MiB)"), secondary_y=True)
    fig.update_yaxes(title_text="tok/s", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="MiB", secondary_y=True)
    return layout(fig, "Decode speed and memory as the context fills", "context depth (tokens)")


def _none_for_nan(values) -> list:
    """A std is NaN with one repeat; None draws no error bar and survives the widget's JSON."""
    return [None if v != v else float(v) for v in values]
