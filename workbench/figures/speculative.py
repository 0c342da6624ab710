"""Speculative decoding -> plotly figures: which tokens were accepted drafts, how often drafts are
accepted at each position and on which kind of text, and what that does to the decode ceiling."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..errors import WorkbenchError
from .style import layout, token_labels

ACCEPTED, SAMPLED = "#2ca02c", "#c7c7c7"


def drafted_tokens(tokens, drafted, per_row: int = 12) -> go.Figure:
    """The generated tokens in reading order, `per_row` to a line: green where the token was an
    accepted MTP draft, grey where the verify forward sampled it (the first token, every
    correction after a rejected draft, every token after a fully accepted run).
    tokens: [new] texts; drafted: [new] bool (`Stats.drafted`)."""
    drafted = np.asarray(drafted, dtype=bool)
    if len(tokens) != len(drafted):
        raise WorkbenchError(f"{len(tokens)} tokens but {len(drafted)} draft flags: pass the generation's own "
                             "tokens and its stats.drafted.")
    if not len(tokens):
        raise WorkbenchError("no tokens to show: generate with speculative=k first.")
    labels = token_labels(tokens)
    rows = -(-len(labels) // per_row)
    z = np.full((rows, per_row), None, dtype=object)
    text = np.full((rows, per_row), "", dtype=object)
    hover = np.full((rows, per_row), "", dtype=object)
    for i, (label, d) in enumerate(zip(labels, drafted)):
        r, c = divmod(i, per_row)
        z[r, c] = 1 if d else 0
        text[r, c] = label
        hover[r, c] = f"#{i} {label}: {'accepted draft' if d else 'sampled by the verify forward'}"
    fig = go.Figure(go.Heatmap(z=z.tolist(), text=text.tolist(), texttemplate="%{text}", customdata=hover.tolist(),
                               hovertemplate="%{customdata}<extra></extra>", zmin=0, zmax=1, showscale=False,
                               colorscale=[[0, SAMPLED], [1, ACCEPTED]], xgap=2, ygap=2))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    share = drafted.mean()
    return layout(fig, f"Generated tokens: {share:.0%} were accepted drafts (green), the rest sampled (grey)",
                  height=max(160, 38 * rows + 80))


def acceptance(by_kind: dict) -> go.Figure:
    """Share of drafts accepted at each draft position, one group of bars per kind of text.
    by_kind: {name: Stats of speculative runs (or a list of them, summed)}."""
    fig = go.Figure()
    for name, stats in by_kind.items():
        stats = stats if isinstance(stats, (list, tuple)) else [stats]
        proposed = np.sum([s.proposed_by_position for s in stats], axis=0)
        accepted = np.sum([s.accepted_by_position for s in stats], axis=0)
        if proposed is None or not np.ndim(proposed) or not proposed.sum():
            raise WorkbenchError(f"{name!r}: these runs proposed no drafts; generate with speculative=k.")
        steps = sum(s.verify_steps for s in stats)
        per_verify = (accepted.sum() + steps) / steps
        share = [float(a / p) if p else None for a, p in zip(accepted, proposed)]
        fig.add_trace(go.Bar(x=[f"draft {i + 1}" for i in range(len(share))], y=share,
                             name=f"{name}: {per_verify:.2f} tokens per verify",
                             customdata=np.stack([accepted, proposed], axis=1).tolist(),
                             hovertemplate="%{x}: %{y:.0%} accepted (%{customdata[0]} of %{customdata[1]})"
                                           "<extra></extra>"))
    fig.update_layout(barmode="group", legend={"orientation": "h", "y": -0.2})
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    return layout(fig, "Drafts accepted at each position (a draft counts only if those before it were accepted)",
                  "draft position", "accepted")


def ceiling(plans: dict, drafts=(1, 2, 3), measured: dict | None = None) -> go.Figure:
    """The batch-1 decode ceiling against the mean accepted length, for k drafts per step, one line
    per (plan, k); the plain ceiling dashed. plans: {label: MemoryPlan made with a device};
    measured: {label: tokens per verify} marked on the axis (e.g. this notebook's runs)."""
    from ..planner.speculative import speculative_ceiling

    fig = go.Figure()
    for label, plan in plans.items():
        for k in drafts:
            lengths = np.linspace(1, k + 1, 9)
            ceilings = [speculative_ceiling(plan, k, float(L)).ceiling for L in lengths]
            fig.add_trace(go.Scatter(x=lengths, y=ceilings, mode="lines", name=f"{label}, k={k}",
                                     hovertemplate=f"{label}, k={k}: %{{x:.2f}} tokens per verify -> "
                                                   "%{y:,.0f} tok/s<extra></extra>"))
        fig.add_trace(go.Scatter(x=[1, max(drafts) + 1], y=[plan.decode_ceiling] * 2, mode="lines",
                                 line={"dash": "dash"}, name=f"{label}, plain",
                                 hovertemplate=f"{label} plain: %{{y:,.0f}} tok/s<extra></extra>"))
    for label, length in (measured or {}).items():
        fig.add_vline(x=length, line={"dash": "dot", "color": "#555"}, annotation_text=label)
    fig.update_yaxes(rangemode="tozero")
    return layout(fig, "Decode ceiling with MTP drafts (bandwidth bound, batch 1)", "tokens per verify forward",
                  "tok/s ceiling")
