"""The GGUF tokenizer the workbench rebuilt must tokenize exactly as llama.cpp does, or every
prompt would reach the model as other ids than the user sees; checked once at load."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import WorkbenchError

# Code, prose with accents and emoji, digits, whitespace runs and the chat markup.
PROBE = ("<|im_start|>user\nWhat's 1234 plus 5678? Ça va, naïve café, cafe\u0301, हिन्दी 😀 — 東京\n"
         "\tdef f(x):\n        return x**2  \n\n<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>\n")


def check_tokenizer(tokenizer, engine, path: Path) -> None:
    ours = tokenizer.encode(PROBE)
    theirs = engine.tokenize(PROBE, special=True)
    if not np.array_equal(ours, theirs):
        at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        raise WorkbenchError(
            f"{path.name}: the tokenizer in its metadata disagrees with llama.cpp's from token {at} of a test "
            f"text (workbench {ours[at:at + 4].tolist()}, llama.cpp {theirs[at:at + 4].tolist()}), so prompts "
            "would not reach the model as written. The file's tokenizer metadata is damaged or of a kind the "
            "workbench does not rebuild: convert the model again with llama.cpp's converter.")
