"""RoutingExplorer: type a prompt, run it, see which experts each token goes to.

`RoutingSession` holds the state and makes the figures (tests drive it without a browser);
`RoutingExplorer` is the ipywidgets view over it.
"""
from __future__ import annotations

import html

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go

from ..analysis import routing as ra
from ..errors import WorkbenchError
from ..figures import routing as fr
from ..figures.style import token_labels
from ..records import RoutingTrace
from ..trace import Trace
from .common import FigureArea, Status, busy, guarded

# view name -> (needs a layer, needs the second prompt)
VIEWS = {
    "token map": (False, False),
    "token": (False, False),
    "expert load": (True, False),
    "load balance": (False, False),
    "entropy": (False, False),
    "shared gate": (False, False),
    "co-activation": (True, False),
    "flow to next layer": (True, False),
    "locality": (False, False),
    "specialisation": (False, False),
    "compare prompts": (True, True),
}


class RoutingSession:
    """The explorer's state: the model, the last traces, the selection."""

    def __init__(self, model):
        if not model.spec.is_moe:
            raise WorkbenchError("RoutingExplorer needs a MoE model; this one is dense. Load 'tiny' or a "
                                 "Qwen3.5-A*B checkpoint.")
        self.model = model
        self.trace: RoutingTrace | None = None
        self.compare_trace: RoutingTrace | None = None
        self.labels = ("prompt A", "prompt B")

    def run(self, prompt: str, compare_prompt: str = "", max_new_tokens: int = 0) -> RoutingTrace:
        """Trace `prompt` (and `compare_prompt` when given) with `max_new_tokens` greedy tokens."""
        if not prompt.strip():
            raise WorkbenchError("type a prompt first.")
        # A serving engine returns expert ids only (no router probabilities, no weights).
        trace = Trace(routing=True, router_probs=not getattr(self.model, "is_remote", False))
        gen = self.model.generate(prompt, max_new_tokens=max(1, max_new_tokens), trace=trace, ignore_eos=True)
        self.trace = gen.routing
        self.compare_trace = None
        if compare_prompt.strip():
            self.compare_trace = self.model.generate(compare_prompt, max_new_tokens=max(1, max_new_tokens),
                                                     trace=trace, ignore_eos=True).routing
        return self.trace

    @property
    def layers(self) -> list[int]:
        return list(self.model.spec.moe_layers)

    def figure(self, view: str, layer: int | None = None, token: int = 0) -> go.Figure:
        if self.trace is None:
            raise WorkbenchError("run a prompt first.")
        if view not in VIEWS:
            raise WorkbenchError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}.")
        t = self.trace
        if view in ("entropy", "shared gate") and np.isnan(t.weights).all():
            raise WorkbenchError(f"the {view} view needs router weights, and this trace comes from a serving engine, "
                                 "which returns expert ids only: load the model in-process to see it.")
        if view == "token map":
            return fr.token_map(t, selected=token)
        if view == "token":
            return fr.token_experts(t, token)
        if view == "expert load":
            return fr.expert_load(t, layer)
        if view == "load balance":
            return fr.load_balance(t)
        if view == "entropy":
            return fr.entropy(t)
        if view == "shared gate":
            return fr.shared_gate(t)
        if view == "co-activation":
            return fr.coactivation(t, layer if layer is not None else self.layers[0])
        if view == "flow to next layer":
            layer = self.layers[0] if layer is None else layer
            if layer == self.layers[-1] and len(self.layers) > 1:
                layer = self.layers[-2]  # the last layer has no next: show the flow into it
            return fr.flow(t, layer)
        if view == "locality":
            return fr.locality(t)
        if view == "specialisation":
            return fr.specialisation(t, min_count=2)
        if self.compare_trace is None:
            raise WorkbenchError("type a second prompt (B) and press Run to compare two prompts.")
        return fr.compare(ra.compare_loads(t, self.compare_trace, self.labels), layer)

    def details(self, token: int) -> str:
        """HTML table: the token's experts and weights in every MoE layer."""
        rows = self.trace.token(token)
        label = html.escape(token_labels(self.trace.tokens[token % self.trace.n_tokens:][:1])[0])
        body = "".join(
            f"<tr><td>L{r['layer']}</td><td>{', '.join(f'E{e} ({x:.2f})' for e, x in zip(r['experts'], r['weights']))}"
            f"</td><td>{r['shared_gate']:.2f}</td></tr>" for r in rows)
        return (f"<b>token {token % self.trace.n_tokens}</b> {label} ({self.trace.phase[token]})"
                f"<table><tr><th>layer</th><th>experts (weight)</th><th>shared gate</th></tr>{body}</table>")


class RoutingExplorer(w.VBox):
    """Expert routing of a prompt: pick a view and a layer; click a token (or move the token
    slider) to see its experts and weights; give a second prompt to compare the two."""

    def __init__(self, model, prompt: str = "def add(a, b):\n    return a + b",
                 compare_prompt: str = "", max_new_tokens: int = 8):
        self.session = RoutingSession(model)
        self.prompt = w.Textarea(value=prompt, description="prompt A", layout={"width": "100%", "height": "70px"})
        self.compare_prompt = w.Textarea(value=compare_prompt, description="prompt B",
                                         placeholder="optional: a second prompt to compare",
                                         layout={"width": "100%", "height": "50px"})
        self.new_tokens = w.IntSlider(value=max_new_tokens, min=0, max=128, description="new tokens")
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.view = w.Dropdown(options=list(VIEWS), value="token map", description="view")
        self.layer = w.Dropdown(options=self.session.layers, value=self.session.layers[-1], description="layer")
        self.token = w.IntSlider(value=0, min=0, max=0, description="token")
        self.details = w.HTML()
        self.status = Status()
        self.area = FigureArea()
        self.area.on_click(guarded(self.status, lambda _i, x, _y: self._select(int(x)), self.area))
        self.run_button.on_click(guarded(self.status, lambda _b: self.run(), self.area))
        for control in (self.view, self.layer):
            control.observe(guarded(self.status, lambda _c: self.redraw(), self.area), names="value")
        self.token.observe(guarded(self.status, lambda _c: self._select(self.token.value), self.area), names="value")
        super().__init__([
            self.prompt, self.compare_prompt,
            w.HBox([self.new_tokens, self.run_button]),
            w.HBox([self.view, self.layer, self.token]),
            self.area.widget, self.details, self.status.widget])
        self.run()

    def run(self) -> None:
        self.status.info("running ...")
        with busy(self.run_button):
            trace = self.session.run(self.prompt.value, self.compare_prompt.value, self.new_tokens.value)
        self.token.max = trace.n_tokens - 1
        self.token.value = min(self.token.value, trace.n_tokens - 1)
        self.redraw()

    def redraw(self) -> None:
        view = self.view.value
        self.layer.disabled = not VIEWS[view][0]
        layer = self.layer.value if VIEWS[view][0] else None
        self.area.show(self.session.figure(view, layer, self.token.value), clickable=view == "token map", key=view)
        self.details.value = self.session.details(self.token.value)
        self.status.info(repr(self.session.trace))

    def _select(self, token: int) -> None:
        if self.token.value != token:
            self.token.value = token  # observer redraws
            return
        self.redraw()
