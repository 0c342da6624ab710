"""Start a serving engine on loopback with a checkpoint: mlx_lm.server (safetensors folders, from the
mlx extra) or llama.cpp's server as llama-cpp-python ships it (GGUF files, from the gguf extra).

`serve(...)` returns a running `LocalServer`: `.url` to connect to, `.stop()` (also on leaving a
`with` block, when the object is collected, and at interpreter exit), `.log()` for its output.
"""
from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

from ..errors import BackendNotInstalled, WorkbenchError

ENGINES = ("mlx", "llamacpp")
_RUNNING: "weakref.WeakSet[LocalServer]" = weakref.WeakSet()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalServer:
    """A server process this session started. Stopped whatever happens: `stop()`, a `with` block,
    garbage collection, interpreter exit, or (Linux) the death of the process that started it."""

    def __init__(self, engine: str, command: list[str], env: dict, host: str, port: int, model_id: str):
        self.engine, self.command, self.host, self.port, self.model_id = engine, command, host, port, model_id
        self._log = tempfile.NamedTemporaryFile(prefix=f"workbench-{engine}-server-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        self._finalizer = weakref.finalize(self, _terminate, self.process, self._log)
        _RUNNING.add(self)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log(self, tail: int = 40) -> str:
        """The last `tail` lines the server wrote."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    def stop(self) -> None:
        self._finalizer()

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else f"stopped (exit {self.process.returncode})"
        return f"LocalServer({self.engine}, {self.url}, {state})"

    def wait_ready(self, timeout: float) -> None:
        """Until /v1/models lists the model; raise with the log's tail if the process dies or time runs out."""
        from .http import Endpoint
        from .served import list_models

        endpoint = Endpoint.parse(self.url, timeout=5)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.running:
                self.stop()
                raise WorkbenchError(f"the {self.engine} server exited with code {self.process.returncode} before "
                                     f"it was ready. Its log:\n{self.log()}")
            try:
                if list_models(endpoint):
                    return
            except WorkbenchError as exc:
                last = exc
            time.sleep(0.25)
        self.stop()
        raise WorkbenchError(f"the {self.engine} server did not answer within {timeout:g} s ({last}). Its log:\n"
                             f"{self.log()}")


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM when the process that started it dies, even by
    SIGKILL (a killed kernel), so no server outlives its session."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _terminate(process: subprocess.Popen, log) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    log.close()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()


def serve(model: str | Path = "tiny", engine: str = "auto", port: int | None = None, host: str = "127.0.0.1",
          context: int = 4096, timeout: float = 180.0, extra_args: tuple[str, ...] = ()) -> LocalServer:
    """Start `engine` serving `model` and wait until it answers.

    model:  a bundled name, a checkpoint folder (mlx_lm.server), a .gguf file or a bundled GGUF copy
            such as "tiny:Q8_0" (llama.cpp).
    engine: "mlx", "llamacpp", or "auto" (GGUF -> llamacpp, else mlx).
    context: llama.cpp's context size (n_ctx); mlx_lm.server sizes its cache as it goes.
    extra_args: more command-line flags for the server (e.g. llama.cpp's
            ("--chat_template_kwargs", '{"enable_thinking": false}'), which that server takes at start only).
    """
    from .. import hub

    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("WORKBENCH_ALLOW_PUBLIC_SERVER"):
        raise WorkbenchError(f"host={host!r}: these servers have no authentication, so the workbench starts them on "
                             "loopback (127.0.0.1) only; set WORKBENCH_ALLOW_PUBLIC_SERVER=1 to override.")
    port = free_port(host) if port is None else port
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise WorkbenchError(f"port={port!r} is invalid: give a number in 1..65535 (or None for a free one).")
    gguf = hub.resolve_gguf(model)
    engine = ("llamacpp" if gguf is not None else "mlx") if engine == "auto" else engine
    if engine not in ENGINES:
        raise WorkbenchError(f"engine={engine!r} is not one the workbench starts: use 'mlx' or 'llamacpp' (vLLM and "
                             "SGLang need CUDA GPUs: start them yourself and workbench.connect to them).")
    env = dict(os.environ)
    if engine == "llamacpp":
        if gguf is None:
            raise WorkbenchError(f"llama.cpp's server runs GGUF files and {model!r} is not one: pass a .gguf file or "
                                 "a bundled copy such as 'tiny:Q8_0'.")
        _need("llama_cpp.server", "llama-cpp-python[server]", "gguf")
        alias = str(model) if ":" in str(model) and not Path(str(model)).exists() else gguf.name
        # llama_cpp.server itself, with llama.cpp's AMX repacking off where it crashes (llamacpp_amx.py)
        command = [sys.executable, "-m", "workbench.backends.llamacpp_amx", "--model", str(gguf), "--model_alias", alias,
                   "--host", host, "--port", str(port), "--n_ctx", str(int(context)),
                   # Queue concurrent requests instead of cutting the running stream short (its default).
                   "--interrupt_requests", "False"]
        model_id = alias
    else:
        if gguf is not None:
            raise WorkbenchError("mlx_lm.server loads safetensors checkpoints, not GGUF files: use engine='llamacpp'.")
        _need("mlx_lm.server", "mlx-lm", "mlx")
        folder = hub.resolve(model)
        # mlx_lm.server lists a model under /v1/models only offline with an existing Hub cache folder.
        cache = env.get("HF_HUB_CACHE")
        if not cache or not Path(cache).is_dir():
            env["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="workbench-hf-cache-")
        env["HF_HUB_OFFLINE"] = "1"
        command = [sys.executable, "-m", "mlx_lm.server", "--model", str(folder), "--host", host,
                   "--port", str(port)]
        model_id = str(folder)
    server = LocalServer(engine, command + [str(a) for a in extra_args], env, host, port, model_id)
    server.wait_ready(timeout)
    return server


def _need(module: str, package: str, extra: str) -> None:
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise BackendNotInstalled(f"{module} is not installed: pip install '{package}' (the workbench's "
                                  f"'{extra}' extra).")
    if module == "llama_cpp.server":
        for dep in ("fastapi", "uvicorn", "sse_starlette", "pydantic_settings", "starlette_context"):
            if importlib.util.find_spec(dep) is None:
                raise BackendNotInstalled(f"llama.cpp's server needs {dep}: pip install 'llama-cpp-python[server]' "
                                          "(the workbench's 'gguf' extra installs it).")
