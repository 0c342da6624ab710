"""Export the README's pictures from the bundled model (kaleido + Chromium, offline):
    python scripts/make_readme_figures.py    -> docs/images/*.png"""
from __future__ import annotations

import os
from pathlib import Path

import workbench
from workbench import DeltaNetCapture, Trace
from workbench.analysis.deltanet import longest_memory
from workbench.figures import deltanet as fd
from workbench.figures import planner as fp
from workbench.figures import routing as fr

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> None:
    os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")  # kaleido drives Chromium
    OUT.mkdir(parents=True, exist_ok=True)
    model = workbench.load("tiny")
    code = "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n"
    gen = model.generate(code, max_new_tokens=24, ignore_eos=True,
                         trace=Trace(routing=True, router_probs=True, deltanet=DeltaNetCapture(states="all", inputs=True),
                                     attention=True))
    # The head that remembers longest: one that forgets within a token would show a blank state.
    layer, head = longest_memory(gen.deltanet)
    figures = {
        "routing_token_map": fr.token_map(gen.routing, selected=5),
        "routing_expert_load": fr.expert_load(gen.routing),
        "deltanet_half_lives": fd.half_lives(gen.deltanet),
        "deltanet_state": fd.state_matrix(gen.deltanet, layer=layer, head=head, token=20),
        "planner_35b": fp.memory_bars([workbench.plan("Qwen/Qwen3.5-35B-A3B", f, 32_768, device="RTX 4090")
                                       for f in ("bf16", "fp8", "gguf-q8_0", "gguf-q4_k_m")]),
    }
    for name, fig in figures.items():
        path = OUT / f"{name}.png"
        fig.write_image(path, width=900, height=450, scale=1)
        print("wrote", path.relative_to(OUT.parents[1]))


if __name__ == "__main__":
    main()
