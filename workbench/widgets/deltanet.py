"""DeltaNetExplorer: a prompt in, then layer and head selectors, a token slider (with play) that
animates the recurrent state, and the views of `figures.deltanet`.

`DeltaNetSession` holds the state and makes the figures (tests drive it without a browser).
Full states are kept for the selected layer only (all heads when they fit the capture budget,
else the selected head), so the explorer works on real models; changing layer re-runs the prompt.
"""
from __future__ import annotations

import ipywidgets as w
import plotly.graph_objects as go

from ..analysis import deltanet as da
from ..errors import WorkbenchError
from ..figures import deltanet as fd
from ..figures.style import token_labels
from ..generation import Generation
from ..planner.caches import cache_growth
from ..records import DeltaNetTrace
from ..spec import spec
from ..trace import DeltaNetCapture, Trace
from .common import FigureArea, Status, busy, guarded

# view -> which controls it reads: (layer, head, token)
VIEW_USES = {"state matrix": (True, True, True), "state norm": (True, False, False),
             "effective rank": (True, False, False), "half-life (heads)": (False, False, False),
             "half-life over tokens": (True, False, False), "write strength β": (True, False, False),
             "effective attention": (True, True, False), "memory vs context": (False, False, False)}
VIEWS = tuple(VIEW_USES)
REAL_MODELS = ("Qwen3.5-0.8B", "Qwen3.5-27B", "Qwen3.5-35B-A3B", "Qwen3.5-397B-A17B")


class DeltaNetSession:
    """The explorer's state: the model, the last run, what it kept."""

    def __init__(self, model):
        self.model = model
        self.gen: Generation | None = None
        self._prompt = ""
        self._new_tokens = 0

    @property
    def layers(self) -> list[int]:
        return list(self.model.spec.linear_layers)

    @property
    def trace(self) -> DeltaNetTrace:
        if self.gen is None:
            raise WorkbenchError("run a prompt first.")
        return self.gen.deltanet

    def run(self, prompt: str, max_new_tokens: int = 0, layer: int | None = None, head: int = 0) -> DeltaNetTrace:
        if not prompt.strip():
            raise WorkbenchError("type a prompt first.")
        layer = self.layers[0] if layer is None else layer
        n = max(1, max_new_tokens)
        short = len(self.model.encode(prompt)) <= 256   # attention maps and inputs only for short prompts
        maps = short and self.model.engine.traces_attention  # llama.cpp: the DeltaNet side alone
        try:
            capture = DeltaNetCapture(states="all", layers=[layer], inputs=short)
            gen = self.model.generate(prompt, max_new_tokens=n, ignore_eos=True,
                                      trace=Trace(deltanet=capture, attention=maps))
        except WorkbenchError as exc:
            if "budget" not in str(exc):
                raise
            capture = DeltaNetCapture(states="all", layers=[layer], heads=[head], inputs=short)
            gen = self.model.generate(prompt, max_new_tokens=n, ignore_eos=True,
                                      trace=Trace(deltanet=capture, attention=maps))
        self.gen, self._prompt, self._new_tokens = gen, prompt, max_new_tokens
        return gen.deltanet

    def longest_memory(self, prompt: str, max_new_tokens: int = 0) -> tuple[int, int]:
        """(layer, head) with the longest median half-life on `prompt` (summaries only: cheap)."""
        gen = self.model.generate(prompt, max_new_tokens=max(1, max_new_tokens), ignore_eos=True,
                                  trace=Trace(deltanet=True))
        return da.longest_memory(gen.deltanet)

    def ensure(self, layer: int, head: int) -> None:
        """Re-run the last prompt when `layer` / `head` states were not kept."""
        t = self.trace
        if layer not in t.state_layers or head not in t.state_heads:
            self.run(self._prompt, self._new_tokens, layer, head)

    def figure(self, view: str, layer: int, head: int, token: int) -> go.Figure:
        if view not in VIEWS:
            raise WorkbenchError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}.")
        if view == "memory vs context":
            return fd.memory(self.memory_curves())
        self.ensure(layer, head)
        t = self.trace
        if view == "state matrix":
            return fd.state_matrix(t, layer, head, token)
        if view == "state norm":
            return fd.state_norm(t, layer)
        if view == "effective rank":
            return fd.effective_rank(t, layer)
        if view == "half-life (heads)":
            return fd.half_lives(t)
        if view == "half-life over tokens":
            return fd.half_life_over_tokens(t, layer)
        if view == "write strength β":
            return fd.write_strength(t, layer)
        att = self.gen.attention
        return fd.effective_attention(t, layer, head, att)

    def memory_curves(self):
        ctx = self.model.context_length
        curves = [cache_growth(self.model.spec, ctx, f"loaded ({self.model.path.name})")]
        for name in REAL_MODELS:
            curves.append(cache_growth(spec(name), 262_144, name))
        return curves


class DeltaNetExplorer(w.VBox):
    """What the Gated DeltaNet state holds: pick a layer and a head, move (or play) the token
    slider to watch the state evolve, switch views."""

    def __init__(self, model, prompt: str = "The cat sat on the mat. The cat sat on the",
                 max_new_tokens: int = 4, layer: int | None = None, head: int | None = None):
        """`layer`, `head`: what to show first; by default the head with the longest memory on
        `prompt` (a head that forgets within a token would show an almost blank state)."""
        self.session = DeltaNetSession(model)
        spec = model.spec
        if layer is None or head is None:
            best_layer, best_head = self.session.longest_memory(prompt, max_new_tokens)
            layer = best_layer if layer is None else layer
            head = best_head if head is None else head
        self.prompt = w.Textarea(value=prompt, description="prompt", layout={"width": "100%", "height": "70px"})
        self.new_tokens = w.IntSlider(value=max_new_tokens, min=0, max=128, description="new tokens")
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.view = w.Dropdown(options=VIEWS, value="state matrix", description="view")
        self.layer = w.Dropdown(options=self.session.layers, value=layer, description="layer")
        self.head = w.Dropdown(options=list(range(spec.linear_num_value_heads)), value=head, description="head")
        self.token = w.IntSlider(value=0, min=0, max=0, description="token", continuous_update=True)
        self.play = w.Play(value=0, min=0, max=0, interval=250, description="play")
        w.jslink((self.play, "value"), (self.token, "value"))
        self.status = Status()
        self.area = FigureArea()
        self.run_button.on_click(guarded(self.status, lambda _b: self.run(), self.area))
        for control in (self.view, self.layer, self.head, self.token):
            control.observe(guarded(self.status, lambda _c: self.redraw(), self.area), names="value")
        super().__init__([
            self.prompt, w.HBox([self.new_tokens, self.run_button]),
            w.HBox([self.view, self.layer, self.head]), w.HBox([self.play, self.token]),
            self.area.widget, self.status.widget])
        self.run()

    def run(self) -> None:
        self.status.info("running ...")
        with busy(self.run_button):
            trace = self.session.run(self.prompt.value, self.new_tokens.value, self.layer.value, self.head.value)
        last = trace.n_tokens - 1
        self.token.max = self.play.max = last
        self.token.value = min(self.token.value, last)
        self.redraw()

    def redraw(self) -> None:
        uses_layer, uses_head, uses_token = VIEW_USES[self.view.value]
        self.layer.disabled, self.head.disabled = not uses_layer, not uses_head
        self.token.disabled = self.play.disabled = not uses_token
        self.area.show(self.session.figure(self.view.value, self.layer.value, self.head.value, self.token.value),
                       key=self.view.value)
        t = self.session.trace
        tok = self.token.value
        self.status.info(f"{t!r} | token {tok} {token_labels(t.tokens[tok:tok + 1])[0]}, layer {self.layer.value}, head "
                         f"{self.head.value}: decay {t.decay[t.row(self.layer.value), tok, self.head.value]:.3f}, "
                         f"β {t.beta[t.row(self.layer.value), tok, self.head.value]:.3f}")
