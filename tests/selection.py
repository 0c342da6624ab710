"""Which backends this test run selects (WORKBENCH_TEST_BACKENDS), and the bundled model's GGUF
copies for the llama.cpp tests. A module of its own (not conftest), so test files import it by a
name no other folder shares."""
from __future__ import annotations

import os

import pytest

# Every backend by default; WORKBENCH_TEST_BACKENDS=torch (or mlx, llamacpp, or a comma-separated
# list) runs the suite on those, for a machine that has only some frameworks (as einops selects its
# backends). A test that loads an unselected backend is skipped, as are cross-backend pairs and the
# tutorials (they run all three). The shared `tiny` fixtures run on torch and MLX, which load
# safetensors checkpoints; llama.cpp's tests load the bundled model's GGUF copies (gguf_copy).
LOCAL_BACKENDS = ("torch", "mlx")
ALL_BACKENDS = LOCAL_BACKENDS + ("llamacpp",)
BACKENDS = [b.strip() for b in os.environ.get("WORKBENCH_TEST_BACKENDS", ",".join(ALL_BACKENDS)).split(",")
            if b.strip()]
if not BACKENDS or set(BACKENDS) - set(ALL_BACKENDS):
    raise pytest.UsageError(f"WORKBENCH_TEST_BACKENDS={os.environ.get('WORKBENCH_TEST_BACKENDS')!r}: "
                            "name torch, mlx, llamacpp or several (comma-separated).")
BOTH = set(LOCAL_BACKENDS) <= set(BACKENDS)
EVERY = set(BACKENDS) == set(ALL_BACKENDS)


def gguf_copy(kind: str):
    """The bundled model's GGUF copy `kind` (F32, Q8_0, Q4_0); skips when llama.cpp is not selected.
    ./dev setup makes them (scripts/make_gguf_copies.py); a bare checkout makes them here, the same way."""
    from workbench.gguf.convert import bundled_copy
    from workbench.hub import BUNDLED_GGUF

    if "llamacpp" not in BACKENDS:
        pytest.skip("the llama.cpp backend is not selected (WORKBENCH_TEST_BACKENDS)")
    assert kind in BUNDLED_GGUF["tiny"]
    return bundled_copy("tiny", kind)
