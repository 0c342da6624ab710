"""One look for every figure, and readable token labels."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


def layout(fig: go.Figure, title: str, x: str | None = None, y: str | None = None,
           height: int = 420) -> go.Figure:
    fig.update_layout(title={"text": title, "font": {"size": 14}}, template="plotly_white", height=height,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50}, xaxis_title=x, yaxis_title=y)
    return fig


def token_labels(tokens) -> list[str]:
    """Token texts made visible: spaces as '·', newlines as '⏎', tabs as '⇥'; quoted."""
    out = []
    for t in np.asarray(tokens).tolist():
        t = str(t).replace(" ", "·").replace("\n", "⏎").replace("\t", "⇥")
        out.append(f"'{t}'")
    return out


def token_axis(fig: go.Figure, tokens, axis: str = "x", max_labels: int = 40, **where) -> go.Figure:
    """Token positions on `axis`, labelled with the token text (every k-th past `max_labels`, so the
    labels stay readable). `where`: row=, col= of a subplot."""
    labels = token_labels(tokens)
    step = max(1, -(-len(labels) // max_labels))
    ticks = list(range(0, len(labels), step))
    update = fig.update_xaxes if axis == "x" else fig.update_yaxes
    update(tickmode="array", tickvals=ticks, ticktext=[labels[i] for i in ticks],
           tickangle=-60 if axis == "x" else 0, **where)
    return fig


def hover_labels(tokens) -> list[str]:
    """'#i 'text'' for each token: position and visible text, for hovers."""
    return [f"#{i} {t}" for i, t in enumerate(token_labels(tokens))]


def blank_outside(z: np.ndarray, keep: np.ndarray) -> list:
    """`z` as nested lists with None where `keep` is False: plotly leaves those cells empty, and None
    (unlike NaN) survives the widget's JSON messages."""
    out = np.asarray(z, dtype=object)
    out[~np.asarray(keep, dtype=bool)] = None
    return out.tolist()
