"""DeltaNet results -> plotly figures (pure functions, no widgets)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis import deltanet as da
from ..planner.caches import CacheGrowth
from ..records import AttentionTrace, DeltaNetTrace
from .style import blank_outside, hover_labels, layout, token_axis, token_labels


def _heads(trace: DeltaNetTrace) -> list[str]:
    return [f"h{h}" for h in range(trace.num_heads)]


def half_lives(trace: DeltaNetTrace) -> go.Figure:
    """Median memory half-life (tokens, log colour) per layer and head."""
    t = da.head_half_lives(trace)
    fig = go.Figure(go.Heatmap(z=np.log10(t), x=_heads(trace), y=[f"L{l}" for l in trace.layers],
                               text=da.readable_tokens(t), texttemplate="%{text}", colorscale="Viridis",
                               colorbar={"title": "log10 t½"},
                               hovertemplate="%{y} %{x}: half-life %{text} tokens<extra></extra>"))
    return layout(fig, "Memory half-life per head (median over tokens; t½ = ln 0.5 / ln decay)",
                  "value head", "layer")


def half_life_over_tokens(trace: DeltaNetTrace, layer: int) -> go.Figure:
    li = trace.row(layer)
    t = da.half_life(trace.decay[li])
    labels = hover_labels(trace.tokens)
    fig = go.Figure([go.Scatter(x=np.arange(trace.n_tokens), y=t[:, h], mode="lines", name=f"h{h}",
                                text=labels, hovertemplate="token %{text}: t½ %{y:.2f}<extra></extra>")
                     for h in range(trace.num_heads)])
    fig.update_yaxes(type="log")
    token_axis(fig, trace.tokens)
    return layout(fig, f"Layer {layer}: half-life per head as the tokens go by (dips = forgetting)",
                  "token", "half-life (tokens)")


def write_strength(trace: DeltaNetTrace, layer: int) -> go.Figure:
    li = trace.row(layer)
    fig = go.Figure(go.Heatmap(z=trace.beta[li].T, x=np.arange(trace.n_tokens), y=_heads(trace), zmin=0, zmax=1,
                               colorscale="Oranges",
                               customdata=np.broadcast_to(np.asarray(hover_labels(trace.tokens), dtype=object),
                                                          (trace.num_heads, trace.n_tokens)),
                               colorbar={"title": "β"},
                               hovertemplate="token %{customdata}, %{y}: β %{z:.2f}<extra></extra>"))
    token_axis(fig, trace.tokens)
    return layout(fig, f"Layer {layer}: write strength β per head and token", "token", "value head")


def state_norm(trace: DeltaNetTrace, layer: int | None = None) -> go.Figure:
    """Norm of the state after each token: per head for one layer, or mean over heads per layer."""
    x = np.arange(trace.n_tokens)
    labels = hover_labels(trace.tokens)
    if layer is None:
        norms = trace.state_norm.mean(axis=2)
        fig = go.Figure([go.Scatter(x=x, y=norms[i], mode="lines", name=f"L{l}", text=labels,
                                    hovertemplate="token %{text}: %{y:.3f}<extra></extra>")
                         for i, l in enumerate(trace.layers)])
        token_axis(fig, trace.tokens)
        return layout(fig, "State norm after each token (mean over heads)", "token", "‖S‖")
    li = trace.row(layer)
    fig = go.Figure([go.Scatter(x=x, y=trace.state_norm[li, :, h], mode="lines", name=f"h{h}", text=labels,
                                hovertemplate="token %{text}: %{y:.3f}<extra></extra>")
                     for h in range(trace.num_heads)])
    token_axis(fig, trace.tokens)
    return layout(fig, f"Layer {layer}: state norm per head after each token", "token", "‖S‖")


def effective_rank(trace: DeltaNetTrace, layer: int) -> go.Figure:
    ranks = da.rank_over_tokens(trace, layer)
    fig = go.Figure([go.Scatter(x=trace.state_tokens, y=ranks[:, i], mode="lines+markers", name=f"h{h}")
                     for i, h in enumerate(trace.state_heads)])
    d = min(trace.states.shape[-2:])
    return layout(fig, f"Layer {layer}: effective rank of the state (max {d})", "token", "effective rank")


def state_matrix(trace: DeltaNetTrace, layer: int, head: int, token: int | None = None) -> go.Figure:
    """The [Dk, Dv] state of one head after `token` (None: with a plotly slider over every kept token)."""
    si = trace.state_row(layer)
    if trace.states is None:
        trace.state(layer, 0, head)  # raises the helpful error
    hi = np.flatnonzero(trace.state_heads == head)
    if not len(hi):
        trace.state(layer, int(trace.state_tokens[0]), head)
    mats = trace.states[si, :, hi[0]]
    lim = float(np.abs(mats).max()) or 1.0
    labels = token_labels(trace.tokens)

    def heat(m):
        return go.Heatmap(z=m, colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim, colorbar={"title": "S"},
                          hovertemplate="k %{y}, v %{x}: %{z:.3f}<extra></extra>")

    if token is not None:
        m = trace.state(layer, token, head)
        fig = go.Figure(heat(m))
        return layout(fig, f"Layer {layer}, head {head}: state after token {token} {labels[token]}",
                      "value dim", "key dim", height=460)
    fig = go.Figure(heat(mats[0]), frames=[go.Frame(data=[heat(m)], name=str(t))
                                           for t, m in zip(trace.state_tokens, mats)])
    steps = [{"label": str(t), "method": "animate",
              "args": [[str(t)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}]}
             for t in trace.state_tokens]
    fig.update_layout(sliders=[{"steps": steps, "currentvalue": {"prefix": "after token "}}])
    fig.update_yaxes(autorange="reversed")
    return layout(fig, f"Layer {layer}, head {head}: the state token by token", "value dim", "key dim", height=520)


def effective_attention(trace: DeltaNetTrace, layer: int, head: int,
                        attention: AttentionTrace | None = None, attention_layer: int | None = None,
                        attention_head: int = 0) -> go.Figure:
    """The DeltaNet head's exact effective attention, beside a real attention map: query and key
    positions on the axes (a repeated token keeps its own row and column), token text as labels."""
    eff = da.effective_attention(trace, layer, head)
    n = len(eff)
    hover = hover_labels(trace.tokens)
    cols = 2 if attention is not None else 1
    titles = [f"DeltaNet L{layer} h{head}: effective weights a[t, s]"]
    if attention is not None:
        attention_layer = int(attention.layers[0]) if attention_layer is None else attention_layer
        titles.append(f"full attention L{attention_layer} h{attention_head}: softmax weights")
    fig = make_subplots(1, cols, subplot_titles=titles, horizontal_spacing=0.12)

    def heat(z, m, **style):
        pairs = np.empty((m, m, 2), dtype=object)
        pairs[..., 0] = np.asarray(hover[:m], dtype=object)[:, None]
        pairs[..., 1] = np.asarray(hover[:m], dtype=object)[None, :]
        return go.Heatmap(z=blank_outside(z[:m, :m], np.tri(m, dtype=bool)), x=np.arange(m), y=np.arange(m),
                          customdata=pairs, hovertemplate="query %{customdata[0]}, key %{customdata[1]}: "
                          "%{z:.3f}<extra></extra>", **style)

    lim = float(np.abs(eff).max()) or 1.0
    fig.add_trace(heat(eff, n, colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim,
                       colorbar={"x": 0.44 if cols == 2 else 1.0}), 1, 1)
    token_axis(fig, trace.tokens[:n], "x", row=1, col=1)
    token_axis(fig, trace.tokens[:n], "y", row=1, col=1)
    if attention is not None:
        a = attention.probs[attention.row(attention_layer), attention_head]
        m = min(n, a.shape[0])
        fig.add_trace(heat(a, m, colorscale="Blues", zmin=0, zmax=1), 1, 2)
        token_axis(fig, trace.tokens[:m], "x", row=1, col=2)
        token_axis(fig, trace.tokens[:m], "y", row=1, col=2)
    fig.update_yaxes(autorange="reversed")
    return layout(fig, "How much each earlier token's write contributes to the readout at token t",
                  height=520)


def memory(growths: Sequence[CacheGrowth]) -> go.Figure:
    """KV cache bytes against the fixed DeltaNet state as the context grows, with the crossover."""
    fig = go.Figure()
    for i, g in enumerate(growths):
        color = f"hsl({(i * 67) % 360}, 65%, 45%)"
        fig.add_trace(go.Scatter(x=g.context, y=g.kv_bytes / 2**20, mode="lines", name=f"{g.name}: KV cache",
                                 line={"color": color}, legendgroup=g.name))
        fig.add_trace(go.Scatter(x=g.context, y=np.full(len(g.context), g.state_bytes / 2**20), mode="lines",
                                 name=f"{g.name}: DeltaNet state", line={"color": color, "dash": "dash"},
                                 legendgroup=g.name))
        if g.context[0] <= g.crossover <= g.context[-1]:
            fig.add_trace(go.Scatter(x=[g.crossover], y=[g.state_bytes / 2**20], mode="markers",
                                     marker={"color": color, "size": 9}, legendgroup=g.name, showlegend=False,
                                     hovertemplate=f"{g.name}: crossover at {g.crossover:,.0f} tokens<extra></extra>"))
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return layout(fig, "Per-sequence cache: KV of the attention layers vs the DeltaNet state (dots: crossover)",
                  "context (tokens)", "MiB", height=480)
