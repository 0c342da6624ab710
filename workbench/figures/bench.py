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


def serving(df: pd.DataFrame) -> go.Figure:
    """A serving benchmark (one row per concurrency level): output tok/s and request throughput on the
    left; TTFT and TPOT (median, p99 dashed) on the right, against concurrency."""
    df = df.sort_values("concurrency")
    x = [str(c) for c in df.concurrency]  # categorical: levels 1, 4, 16 evenly spaced
    fig = make_subplots(rows=1, cols=2, specs=[[{"secondary_y": True}, {}]],
                        subplot_titles=("throughput", "latency per request (ms)"))
    fig.add_trace(go.Bar(x=x, y=df.output_throughput, name="output tok/s",
                         hovertemplate="concurrency %{x}: %{y:,.1f} tok/s<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=df.request_throughput, mode="lines+markers", name="requests/s"),
                  row=1, col=1, secondary_y=True)
    for name, colour in (("ttft", "#1f77b4"), ("tpot", "#d62728")):
        for stat, dash in (("median", "solid"), ("p99", "dash")):
            fig.add_trace(go.Scatter(x=x, y=df[f"{name}_ms_{stat}"], mode="lines+markers",
                                     line={"dash": dash, "color": colour}, name=f"{name.upper()} {stat}"),
                          row=1, col=2)
    fig.update_xaxes(title_text="concurrent requests", type="category")
    fig.update_yaxes(title_text="output tok/s", rangemode="tozero", row=1, col=1, secondary_y=False)
    fig.update_yaxes(title_text="requests/s", rangemode="tozero", row=1, col=1, secondary_y=True)
    fig.update_yaxes(title_text="ms", rangemode="tozero", row=1, col=2)
    backend = df.backend.iloc[0] if len(df) else ""
    return layout(fig, f"Serving benchmark ({backend}): throughput and latency against concurrency")
