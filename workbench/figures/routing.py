"""Routing results -> plotly figures (pure functions, no widgets). Heatmaps carry hover text built
with numpy, so hundreds of tokens x 40 layers stay quick to draw."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from ..analysis import routing as ra
from ..records import RoutingTrace
from .style import blank_outside, hover_labels, layout, token_axis, token_labels


def expert_load(trace: RoutingTrace | Sequence[RoutingTrace], layer: int | None = None) -> go.Figure:
    """Load per expert of one MoE layer (bars) against the uniform k/E line; with `layer=None`, a
    layer x expert heatmap of the load."""
    load = ra.expert_load(trace)
    e = load.load.shape[1]
    if layer is None:
        fig = go.Figure(go.Heatmap(z=load.load, x=np.arange(e), y=[f"L{l}" for l in load.layers],
                                   colorscale="Viridis", colorbar={"title": "load"},
                                   hovertemplate="layer %{y}, expert %{x}: load %{z:.3f}<extra></extra>"))
        return layout(fig, f"Expert load per layer (uniform = {load.uniform:.3f})", "expert", "MoE layer")
    row = RoutingTrace._find(load.layers, layer, "is not a MoE layer of this trace; its MoE layers are")
    fig = go.Figure(go.Bar(x=np.arange(e), y=load.load[row], name="load",
                           hovertemplate="expert %{x}: %{y:.3f}<extra></extra>"))
    fig.add_hline(y=load.uniform, line_dash="dash", annotation_text=f"uniform k/E = {load.uniform:.3f}")
    return layout(fig, f"Layer {layer}: share of tokens routed to each expert (CV {load.cv[row]:.2f}; a random "
                       f"router over {load.n_tokens} tokens: {load.cv_random:.2f})", "expert", "load")


def load_balance(trace: RoutingTrace | Sequence[RoutingTrace]) -> go.Figure:
    """Balance figures per layer: CV, max/mean, share of unused experts (and aux loss / k)."""
    load = ra.expert_load(trace)
    x = [f"L{l}" for l in load.layers]
    fig = go.Figure([go.Bar(x=x, y=load.cv, name="coefficient of variation", marker_color="#1f77b4"),
                     go.Bar(x=x, y=load.max_over_mean, name="max / mean", marker_color="#ff7f0e"),
                     go.Bar(x=x, y=load.unused_share, name="share of experts unused", marker_color="#2ca02c")])
    # What sampling alone gives a perfectly balanced router over as many tokens.
    fig.add_trace(go.Scatter(x=x, y=[load.cv_random] * len(x), mode="lines", name="CV, random router",
                             line={"dash": "dash", "color": "#1f77b4"}))
    fig.add_trace(go.Scatter(x=x, y=[load.max_over_mean_random] * len(x), mode="lines",
                             name="max / mean, random router", line={"dash": "dash", "color": "#ff7f0e"}))
    if load.aux_loss is not None:
        k = load.load.sum(1)[0]
        fig.add_trace(go.Scatter(x=x, y=load.aux_loss / k, mode="lines+markers",
                                 name="aux loss / k (1 = balanced)"))
    fig.update_layout(barmode="group")
    return layout(fig, f"Load balance over {load.n_tokens} tokens (dashed: a random router over as many)",
                  "MoE layer", "value")


def token_map(trace: RoutingTrace, selected: int | None = None) -> go.Figure:
    """Token x layer map coloured by each token's top expert; hover gives the top-k and weights."""
    n_layers, n_tok, k = trace.experts.shape
    e, w = trace.experts, trace.weights
    weights = np.char.mod("%.2f", w) if not np.isnan(w).all() else np.full(w.shape, "weight unknown")
    parts = [np.char.add(np.char.add(e[..., j].astype(str), " ("), weights[..., j]) for j in range(k)]
    hover = parts[0]
    for p in parts[1:]:
        hover = np.char.add(np.char.add(hover, ")<br>"), p)
    hover = np.char.add(hover, ")")
    fig = go.Figure(go.Heatmap(
        z=e[..., 0], x=np.arange(n_tok), y=[f"L{l}" for l in trace.layers], text=hover,
        customdata=np.broadcast_to(np.asarray(hover_labels(trace.tokens), dtype=object), (n_layers, n_tok)),
        colorscale="Turbo", zmin=0, zmax=trace.num_experts - 1, colorbar={"title": "top expert"},
        hovertemplate="token %{customdata}, layer %{y}<br>experts (weight):<br>%{text}<extra></extra>"))
    if selected is not None:
        fig.add_vline(x=selected, line_color="white", line_width=2)
    token_axis(fig, trace.tokens)
    return layout(fig, "Each token's experts per layer (colour: top expert; click a token)", "token", "MoE layer")


def token_experts(trace: RoutingTrace, token: int) -> go.Figure:
    """One token: its k experts and weights in every MoE layer, and the shared-expert gate."""
    t = trace._check_position(token)
    fig = go.Figure()
    if np.isnan(trace.weights[:, t]).all():  # a serving engine's trace: ids only, no weights to draw
        ranks = np.arange(1, trace.top_k + 1)
        for i, layer in enumerate(trace.layers):
            fig.add_trace(go.Scatter(x=[f"L{layer}"] * trace.top_k, y=ranks, mode="markers+text",
                                     text=[f"E{x}" for x in trace.experts[i, t]], textposition="middle right",
                                     marker={"size": 9}, showlegend=False,
                                     hovertemplate="%{x}, choice %{y}: expert %{text}<extra></extra>"))
        fig.update_yaxes(autorange="reversed", tickvals=ranks)
        return layout(fig, f"Token {t} {token_labels(trace.tokens[t:t + 1])[0]}: experts in the engine's order "
                      "(weights unknown: the engine returns ids only)", "MoE layer", "choice")
    for j in range(trace.top_k):
        fig.add_trace(go.Bar(x=[f"L{l}" for l in trace.layers], y=trace.weights[:, t, j],
                             text=[f"E{x}" for x in trace.experts[:, t, j]], name=f"choice {j + 1}",
                             hovertemplate="%{x}: expert %{text}, weight %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[f"L{l}" for l in trace.layers], y=trace.shared_gate[:, t],
                             mode="lines+markers", name="shared-expert gate"))
    fig.update_layout(barmode="stack")
    return layout(fig, f"Token {t} {token_labels(trace.tokens[t:t + 1])[0]}: experts and weights",
                  "MoE layer", "weight")


def entropy(trace: RoutingTrace) -> go.Figure:
    h = ra.routing_entropy(trace)
    top = np.log(trace.num_experts if trace.probs is not None else trace.top_k)
    fig = go.Figure(go.Heatmap(z=h, x=np.arange(trace.n_tokens), y=[f"L{l}" for l in trace.layers],
                               customdata=np.broadcast_to(np.asarray(hover_labels(trace.tokens), dtype=object), h.shape),
                               zmin=0, zmax=top, colorscale="Magma", colorbar={"title": "nats"},
                               hovertemplate="token %{customdata}, %{y}: %{z:.2f} nats<extra></extra>"))
    token_axis(fig, trace.tokens)
    basis = "all experts" if trace.probs is not None else "top-k weights"
    return layout(fig, f"Routing entropy per token and layer (over {basis}; max {top:.2f})", "token", "MoE layer")


def shared_gate(trace: RoutingTrace) -> go.Figure:
    fig = go.Figure([go.Scatter(x=np.arange(trace.n_tokens), y=trace.shared_gate[i], mode="lines",
                                name=f"L{l}", text=hover_labels(trace.tokens),
                                hovertemplate="token %{text}: %{y:.3f}<extra></extra>")
                     for i, l in enumerate(trace.layers)])
    token_axis(fig, trace.tokens)
    return layout(fig, "Shared-expert gate (sigmoid) over tokens", "token", "gate")


def coactivation(trace: RoutingTrace, layer: int) -> go.Figure:
    co = ra.coactivation(trace, layer)   # rows of experts never chosen are NaN: drawn empty
    fig = go.Figure(go.Heatmap(z=blank_outside(co, ~np.isnan(co)), colorscale="Blues", zmin=0, zmax=1,
                               colorbar={"title": "P(j|i)"},
                               hovertemplate="P(expert %{x} | expert %{y}) = %{z:.2f}<extra></extra>"))
    return layout(fig, f"Layer {layer}: expert co-activation P(j | i) within a token's top-k",
                  "expert j", "expert i")


def flow(trace: RoutingTrace, layer: int, max_links: int = 40) -> go.Figure:
    """Sankey of the main paths from layer `layer`'s top expert to the next layer's."""
    counts = ra.cross_layer_flow(trace, layer)
    nxt = int(trace.layers[trace.row(layer) + 1])
    e = trace.num_experts
    src, dst = np.nonzero(counts)
    order = np.argsort(-counts[src, dst])[:max_links]
    src, dst = src[order], dst[order]
    labels = [f"L{layer} E{i}" for i in range(e)] + [f"L{nxt} E{j}" for j in range(e)]
    fig = go.Figure(go.Sankey(node={"label": labels, "pad": 8},
                              link={"source": src.tolist(), "target": (dst + e).tolist(),
                                    "value": counts[src, dst].tolist()}))
    return layout(fig, f"Top-expert flow from layer {layer} to layer {nxt} ({len(src)} main paths)")


def locality(trace: RoutingTrace) -> go.Figure:
    df = ra.locality(trace)
    x = [f"L{l}" for l in df.index]
    fig = go.Figure([go.Bar(x=x, y=df.observed, name="consecutive tokens sharing experts"),
                     go.Scatter(x=x, y=df.shuffled, mode="lines+markers", name="shuffled routing (same loads)",
                                line={"dash": "dash"})])
    return layout(fig, "Locality: share of a token's experts also used by the previous token, vs shuffled",
                  "MoE layer", "share")


def specialisation(traces: RoutingTrace | Sequence[RoutingTrace], min_count: int = 3) -> go.Figure:
    df = ra.specialisation(traces, min_count)
    if df.empty:
        from ..errors import WorkbenchError
        raise WorkbenchError(f"no token occurs {min_count} times or more in this text: specialisation needs "
                             "repeated tokens, so run a longer prompt (a paragraph, a code file).")
    fig = go.Figure()
    for layer, part in df.groupby("layer"):
        fig.add_trace(go.Box(x=[f"L{layer}"] * len(part), y=part.share, name="observed", legendgroup="observed",
                             showlegend=bool(layer == df.layer.min()), boxpoints="all", text=part.token,
                             marker_color="#1f77b4", hovertemplate="%{text}: %{y:.2f}<extra></extra>"))
    base = df.groupby("layer").shuffled.mean()
    fig.add_trace(go.Scatter(x=[f"L{layer}" for layer in base.index], y=base.values, mode="markers",
                             marker={"symbol": "line-ew-open", "size": 30, "color": "crimson"},
                             name="shuffled routing (mean)",
                             hovertemplate="%{x}: shuffled %{y:.2f}<extra></extra>"))
    return layout(fig, f"Specialisation: share of a token's occurrences sent to its favourite expert "
                       f"({df.token_id.nunique()} tokens seen >= {min_count} times; red: the same on shuffled "
                       "routing)", "MoE layer", "share")


def compare(cmp: ra.LoadComparison, layer: int | None = None) -> go.Figure:
    """Load difference of two prompt sets: a layer x expert heatmap, or bars for one layer."""
    a, b = cmp.labels
    if layer is None:
        d = cmp.difference
        lim = float(np.abs(d).max()) or 1.0
        control = cmp.jsd_halves if cmp.jsd_halves is not None else np.full(len(cmp.jsd), np.nan)
        fig = go.Figure(go.Heatmap(z=d, y=[f"L{l} (JSD {j:.3f}; halves {c:.3f})"
                                           for l, j, c in zip(cmp.layers, cmp.jsd, control)],
                                   colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim,
                                   colorbar={"title": f"{a} - {b}"},
                                   hovertemplate="%{y}, expert %{x}: %{z:+.3f}<extra></extra>"))
        return layout(fig, f"Which experts {a} prefers (red) and {b} prefers (blue); JSD between the sets beside "
                           "the JSD between two halves of one set (what sampling alone gives)", "expert", "MoE layer")
    row = RoutingTrace._find(cmp.layers, layer, "is not a MoE layer of these traces; their MoE layers are")
    x = np.arange(cmp.load_a.shape[1])
    fig = go.Figure([go.Bar(x=x, y=cmp.load_a[row], name=a), go.Bar(x=x, y=cmp.load_b[row], name=b)])
    control = "" if cmp.jsd_halves is None else f"; halves of one set: {cmp.jsd_halves[row]:.3f}"
    return layout(fig, f"Layer {layer}: expert load, {a} vs {b} (JSD {cmp.jsd[row]:.3f} bits{control})",
                  "expert", "load")


def intervention(effect: ra.InterventionEffect) -> go.Figure:
    labels = hover_labels(np.asarray(effect.tokens))
    changed = [a != b for a, b in zip(effect.top_token, effect.changed_top_token)]
    fig = go.Figure(go.Bar(x=np.arange(len(labels)), y=effect.kl, customdata=np.array(
        [[t, a, b] for t, a, b in zip(labels, effect.top_token, effect.changed_top_token)], dtype=object),
        marker_color=["crimson" if c else "steelblue" for c in changed],
        hovertemplate="token %{customdata[0]}: KL %{y:.3f}<br>next: %{customdata[1]} -> %{customdata[2]}"
                      "<extra></extra>"))
    token_axis(fig, np.asarray(effect.tokens))
    return layout(fig, f"Intervention: KL of the next-token distribution (mean {effect.mean_kl:.3f} nats; "
                       "red = top token changed)", "token", "KL (nats)")

