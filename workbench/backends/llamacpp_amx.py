"""llama.cpp's AMX weight repacking, kept off on the CPUs where it crashes.

On Intel CPUs with AMX tiles (Sapphire Rapids and later) llama.cpp repacks quantized weights into
its "AMX" buffer and multiplies them with `ggml_backend_amx_mul_mat`, which segfaults in the first
forward (ggml-org/llama.cpp#20824, closed unfixed; seen here on the bundled Q8_0 and Q4_0 copies).
Weights then stay in plain CPU buffers (`use_extra_bufts = False`, llama.cpp's `--no-repack`): a
little slower on such CPUs, and nothing changes elsewhere.

Run as a module, it is llama-cpp-python's server with that setting (`workbench.serve` starts it):

    python -m workbench.backends.llamacpp_amx --model file.gguf ...   # = python -m llama_cpp.server
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """Whether this CPU has Intel AMX tiles (Linux's /proc/cpuinfo flags, read once; False where
    unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_tile" in line for line in f)
    except OSError:
        return False


def keep_repack_off(params) -> bool:
    """Turn llama.cpp's weight repacking off in `params` (llama_model_params) on an AMX CPU; whether
    it did."""
    if not cpu_has_amx():
        return False
    params.use_extra_bufts = False
    return True


def patch_default_params() -> None:
    """Make llama-cpp-python's `Llama` (which builds its params from `llama_model_default_params`)
    load with repacking off on an AMX CPU: for its server and for benchmarks that run it directly."""
    import llama_cpp.llama_cpp as bindings  # the module `Llama` calls through

    default = bindings.llama_model_default_params
    if getattr(default, "_workbench", False):
        return

    def params():
        p = default()
        keep_repack_off(p)
        return p

    params._workbench = True
    bindings.llama_model_default_params = params


if __name__ == "__main__":
    patch_default_params()
    from llama_cpp.server.__main__ import main

    main()
