"""Live tokens/s while a generation streams (`TokensPerSecondMeter`), and `SpeedDashboard`, which
runs a llama-bench-style sweep with a progress bar and plots it."""
from __future__ import annotations

import html
import time

import ipywidgets as w

from ..benchmark import bench, markdown, parse_int_list
from ..figures import bench as fb
from .common import FigureArea, Status, busy, guarded


class TokensPerSecondMeter(w.HTML):
    """A one-line readout: tokens so far, time to first token, decode tok/s, updated per token.
    Drive it with `start()` / `tick()` / `finish(stats)`, or let `run(stream)` do it."""

    def __init__(self):
        super().__init__(value="<span style='color:#777'>tokens/s: -</span>")
        self._start = self._first = None
        self.tokens = 0

    def start(self) -> None:
        self._start, self._first, self.tokens = time.perf_counter(), None, 0
        self.value = "<span style='color:#777'>waiting for the first token ...</span>"

    def tick(self, n: int = 1) -> None:
        now = time.perf_counter()
        if self._first is None:
            self._first = now
        self.tokens += n
        first = f"first token after {1e3 * (self._first - self._start):,.0f} ms"
        if self.tokens < 2 or now <= self._first:  # a rate needs two tokens
            self.value = f"<b>- tok/s</b> (from the second token) | {self.tokens} token | {first}"
            return
        decode = (self.tokens - 1) / (now - self._first)
        self.value = f"<b>{decode:,.1f} tok/s</b> | {self.tokens} tokens | {first}"

    def tick_to(self, tokens: int) -> None:
        """Tick up to `tokens` in all (a chunk's `Chunk.tokens`): several chunks can come from one
        token and none from another, and a token id can repeat, so chunks are not counted."""
        if tokens > self.tokens:
            self.tick(tokens - self.tokens)

    def finish(self, stats) -> None:
        rate = "-" if stats.decode_tokens_per_s != stats.decode_tokens_per_s else f"{stats.decode_tokens_per_s:,.1f}"
        reused = getattr(stats, "reused_prompt_tokens", 0)
        self.value = (f"<b>{rate} tok/s</b> decode | {stats.new_tokens} tokens | "
                      f"TTFT {1e3 * stats.time_to_first_token_s:,.0f} ms | prefill "
                      f"{stats.prefill_tokens_per_s:,.0f} tok/s"
                      + (f" ({reused:,} prompt tokens from the cache)" if reused else ""))

    def run(self, stream, on_text=None):
        """Consume a `model.stream(...)`, ticking per token; returns its Generation."""
        self.start()
        for chunk in stream:
            self.tick_to(chunk.tokens)
            if on_text is not None:
                on_text(chunk)
        self.finish(stream.generation.stats)
        return stream.generation


class StreamingMeter(w.VBox):
    """A prompt box, a Generate button, the streamed text and the live meter."""

    def __init__(self, model, prompt: str = "def fibonacci(n):", max_new_tokens: int = 64):
        self.model = model
        self.prompt = w.Textarea(value=prompt, layout={"width": "100%"})
        self.max_new_tokens = w.IntSlider(value=max_new_tokens, min=1, max=1024, description="max tokens")
        self.button = w.Button(description="Generate", button_style="primary")
        self.text = w.HTML()
        self.meter = TokensPerSecondMeter()
        self.status = Status()
        self.button.on_click(guarded(self.status, lambda _b: self.generate()))
        super().__init__([self.prompt, w.HBox([self.max_new_tokens, self.button]), self.meter, self.text,
                          self.status.widget])

    def generate(self):
        self.text.value = ""
        pieces: list[str] = []

        def show(chunk):
            pieces.append(chunk)
            self.text.value = f"<pre style='white-space:pre-wrap'>{html.escape(''.join(pieces))}</pre>"

        with busy(self.button):
            gen = self.meter.run(self.model.stream(self.prompt.value, max_new_tokens=self.max_new_tokens.value,
                                                   ignore_eos=True), on_text=show)
        self.status.info(f"finish: {gen.finish_reason}")
        return gen


class SpeedDashboard(w.VBox):
    """Run a sweep (prompt sizes, generation lengths, depths, repeats) with a progress bar; see
    the table and the plots."""

    def __init__(self, model, prompt_tokens: str = "64,256", new_tokens: str = "32", depths: str = "0,512",
                 repeats: int = 3, concurrency: str = "1,4,16", speculative: str = "0"):
        self.model = model
        # A served model is measured per concurrency level (vLLM's serving benchmark), not per depth.
        self.serving = getattr(model, "is_remote", False)
        self.prompt_tokens = w.Text(value=prompt_tokens, description="pp")
        self.new_tokens = w.Text(value=new_tokens, description="tg")
        self.depths = w.Text(value=concurrency if self.serving else depths,
                             description="concurrency" if self.serving else "depths")
        self.repeats = w.IntSlider(value=repeats, min=1, max=64 if self.serving else 10,
                                   description="requests" if self.serving else "repeats")
        # Drafts per step to compare side by side ("0,2": plain and 2 MTP drafts); where the model has an MTP layer.
        self.speculative = w.Text(value=speculative, description="MTP k")
        if self.serving or not getattr(model, "has_mtp", False):
            self.speculative.layout.display = "none"
        self.button = w.Button(description="Run sweep", button_style="primary", icon="play")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="progress")
        self.view = w.ToggleButtons(options=["results", "depth sweep"], value="results")
        if self.serving:
            self.view.layout.display = "none"  # one serving figure: no depth view
        self.table = w.HTML()
        self.status = Status()
        self.area = FigureArea()
        self.results = None
        self.button.on_click(guarded(self.status, lambda _b: self.run(), self.area))
        self.view.observe(guarded(self.status, lambda _c: self.redraw(), self.area), names="value")
        super().__init__([w.HBox([self.prompt_tokens, self.new_tokens, self.depths, self.speculative]),
                          w.HBox([self.repeats, self.button, self.progress]), self.view, self.area.widget,
                          self.table, self.status.widget])

    def run(self):
        def progress(done, total, name):
            self.progress.max = total
            self.progress.value = done
            self.status.info(f"{done}/{total}: {name}")

        with busy(self.button):
            if self.serving:
                self.results = bench(self.model, prompt_tokens=parse_int_list(self.prompt_tokens.value, "pp")[0],
                                     new_tokens=parse_int_list(self.new_tokens.value, "tg")[0],
                                     concurrency=parse_int_list(self.depths.value, "concurrency"),
                                     requests=self.repeats.value, progress=progress)
            else:
                import pandas as pd
                drafts = parse_int_list(self.speculative.value, "MTP k") or [0]
                # Every setting runs side by side in one sweep, so they see the same machine.
                self.results = pd.concat([
                    bench(self.model, prompt_tokens=parse_int_list(self.prompt_tokens.value, "pp"),
                          new_tokens=parse_int_list(self.new_tokens.value, "tg"), repeats=self.repeats.value,
                          depth=parse_int_list(self.depths.value, "depths"), progress=progress, speculative=k)
                    for k in drafts], ignore_index=True)
        self.redraw()
        return self.results

    def redraw(self):
        if self.results is None:
            return
        if self.serving:
            self.area.show(fb.serving(self.results))
            cols = ["concurrency", "completed", "failed", "request_throughput", "output_throughput", "ttft_ms_median",
                    "ttft_ms_p99", "tpot_ms_median", "tpot_ms_p99", "itl_ms_median", "itl_ms_p99"]
            self.table.value = self.results[cols].round(2).to_html(index=False, na_rep="")
            self.status.info(f"{len(self.results)} concurrency levels on {self.results.backend[0]}")
            return
        fig = fb.results(self.results) if self.view.value == "results" else fb.depth_sweep(self.results)
        self.area.show(fig)
        cols = ["test", "speculative", "t/s", "t/s std", "tokens/verify", "ttft_ms", "latency_ms_median",
                "latency_ms_p99", "peak_memory_MiB"]
        self.table.value = self.results[cols].round(2).to_html(index=False, na_rep="")
        self.status.info(f"{len(self.results)} tests on {self.model.backend} ({self.results.device[0]})")

    def markdown(self) -> str:
        if self.serving:
            from ..remote.serving_bench import markdown as serving_markdown
            return serving_markdown(self.results)
        return markdown(self.results)
