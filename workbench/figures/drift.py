"""Figures of a DriftReport (pure functions: report -> plotly figure)."""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from ..comparison import DriftReport
from ..errors import WorkbenchError
from .style import layout, token_labels

FLOOR = 1e-6   # KLD below this is drawn at it (a log axis has no 0)


def kld_distributions(report: DriftReport) -> go.Figure:
    """Per candidate, the distribution of per-token KLD (log axis), mean marked."""
    fig = go.Figure()
    for name in report.candidates:
        kld = np.maximum(report.per_token[name].kld, FLOOR)
        fig.add_trace(go.Box(x=kld, name=name, boxmean=True, orientation="h", boxpoints="outliers",
                             hovertemplate="KLD %{x:.4g}<extra>" + html.escape(name) + "</extra>"))
    fig.update_xaxes(type="log")
    n = len(report.per_token[report.candidates[0]].kld)
    return layout(fig, f"KL divergence from {report.reference}: {n} scored tokens ({report.chunks} chunk(s) of "
                       f"{report.context}, second halves)", x=f"KLD (nats; below {FLOOR:g} drawn at it)",
                  height=160 + 70 * len(report.candidates))


def routing_heatmap(report: DriftReport, metric: str = "top-k set agreement") -> go.Figure:
    """MoE layer x candidate: how often the candidate routes a token to the reference's experts."""
    if report.routing is None:
        raise WorkbenchError("this report has no routing (a dense model, or drift(..., routing=False)).")
    if metric not in report.routing.columns or metric in ("candidate", "layer"):
        raise WorkbenchError(f"unknown metric {metric!r}; choose one of "
                             f"{', '.join(c for c in report.routing.columns if c not in ('candidate', 'layer'))}.")
    table = report.routing.pivot(index="candidate", columns="layer", values=metric).loc[report.candidates]
    z = table.to_numpy()
    low_is_good = metric == "weight shift"
    fig = go.Figure(go.Heatmap(z=z, x=[f"L{layer}" for layer in table.columns], y=list(table.index), zmin=0,
                               zmax=1 if not low_is_good else max(float(z.max()), 1e-3),
                               colorscale="Viridis" if not low_is_good else "Viridis_r",
                               text=np.round(z, 3), texttemplate="%{text}",
                               hovertemplate="%{y}, layer %{x}: %{z:.4f}<extra></extra>",
                               colorbar={"title": metric}))
    return layout(fig, f"Expert routing against {report.reference}: {metric} per MoE layer", x="MoE layer",
                  height=160 + 60 * len(report.candidates))


def text_by_kld(report: DriftReport, candidate: str, layer: int | None = None, max_tokens: int = 320,
                per_line: int = 16) -> go.Figure:
    """The scored text, each token coloured by the KLD of the distribution that predicted it; the
    hover shows both models' top tokens and (MoE) both expert sets at `layer`."""
    if candidate not in report.per_token:
        raise WorkbenchError(f"unknown candidate {candidate!r}; this report has {', '.join(report.candidates)}.")
    d = report.per_token[candidate]
    n = min(len(d.kld), max_tokens)
    labels = token_labels(report.predicted[:n])
    ref_top, cand_top = report.top_text[report.reference], report.top_text[candidate]
    hover = []
    if report.experts:
        layer = report.moe_layers[-1] if layer is None else layer
        if layer not in report.moe_layers:
            raise WorkbenchError(f"layer {layer} is not an MoE layer; choose one of {list(report.moe_layers)}.")
        li = report.moe_layers.index(layer)
        ref_e, cand_e = report.experts[report.reference][li], report.experts[candidate][li]
    for i in range(n):
        text = (f"#{i} predicts {labels[i]}: KLD {d.kld[i]:.4g}<br>top-1 reference {token_labels([ref_top[i]])[0]}"
                f" · {html.escape(candidate)} {token_labels([cand_top[i]])[0]}")
        if report.experts:
            text += (f"<br>experts L{layer}: reference {sorted(ref_e[i].tolist())} · "
                     f"candidate {sorted(cand_e[i].tolist())}")
        hover.append(text)
    x, y = np.arange(n) % per_line, -(np.arange(n) // per_line)
    kld = np.log10(np.maximum(d.kld[:n], FLOOR))
    fig = go.Figure(go.Scatter(
        x=x, y=y, mode="markers+text", text=[html.escape(t.strip("'")) for t in labels], textfont={"size": 10},
        marker={"symbol": "square", "size": 34, "color": kld, "colorscale": "YlOrRd", "cmin": np.log10(FLOOR),
                "cmax": max(float(kld.max()), -2.0), "colorbar": {"title": "log10 KLD"}},
        hovertext=hover, hoverinfo="text"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return layout(fig, f"{candidate} vs {report.reference}: each token coloured by the KLD of its prediction "
                       f"(first {n} scored tokens)", height=120 + 42 * (1 + (n - 1) // per_line))
