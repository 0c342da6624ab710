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
