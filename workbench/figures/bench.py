"""Benchmark tables -> plotly figures."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import layout


def results(df: pd.DataFrame) -> go.Figure:
    """t/s per test (mean with ±std error bars), one colour per backend (and per number of MTP drafts
    where rows with speculative decoding are among them)."""
    fig = go.Figure()
    runs = df["backend"]
    if "speculative" in df and (df["speculative"] > 0).any():
        runs = runs + df["speculative"].map(lambda k: f", MTP k={k}" if k else ", plain")
    for backend, part in df.groupby(runs, sort=False):
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
    """A serving benchmark (one row per concurrency level), against concurrency: output tok/s (bars
    labelled with requests/s); time to first token; time per output token and inter-chunk latency.
    Medians solid, p99 dashed; each latency on its own axis (TTFT is often 100x TPOT)."""
    df = df.sort_values("concurrency")
    x = [str(c) for c in df.concurrency]  # categorical: levels 1, 4, 16 evenly spaced
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09,
                        subplot_titles=("output tok/s", "TTFT (ms)", "TPOT and ITL (ms)"))
    fig.add_trace(go.Bar(x=x, y=_none_for_nan(df.output_throughput), name="output tok/s",
                         text=[f"{r:,.2f} req/s" if r == r else "" for r in df.request_throughput],
                         textposition="inside", hovertemplate="concurrency %{x}: %{y:,.1f} tok/s<extra></extra>"),
                  row=1, col=1)
    lines = (("ttft", "TTFT", "#1f77b4", 2), ("tpot", "TPOT", "#d62728", 3), ("itl", "ITL", "#2ca02c", 3))
    for name, label, colour, col in lines:
        for stat, dash in (("median", "solid"), ("p99", "dash")):
            fig.add_trace(go.Scatter(x=x, y=_none_for_nan(df[f"{name}_ms_{stat}"]), mode="lines+markers",
                                     line={"dash": dash, "color": colour}, name=f"{label} {stat}",
                                     hovertemplate=f"concurrency %{{x}}: {label} {stat} %{{y:,.2f}} ms<extra></extra>"),
                          row=1, col=col)
    fig.update_xaxes(title_text="concurrent requests", type="category")
    fig.update_yaxes(rangemode="tozero")
    backend = df.backend.iloc[0] if len(df) else ""
    fig = layout(fig, f"Serving benchmark, {backend} (bars labelled with requests/s)", height=440)
    fig.update_layout(margin={"t": 90})
    return fig
