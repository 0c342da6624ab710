"""Serving engines (vLLM, SGLang, llama.cpp's server, mlx_lm.server) behind the workbench's Model
interface: `connect` to one, `workbench.serve` a local one (servers.py), and measure it like vLLM's serving benchmark."""
from __future__ import annotations

from .model import RemoteModel

__all__ = ["connect", "RemoteModel"]


def connect(url: str, model: str | None = None, api_key: str | None = None, *, spec=None,
            timeout: float = 60.0, chat_template: str = "auto") -> RemoteModel:
    """A model served at `url` ("http://host:port/v1"; a bare host:port means its /v1).

    model:   the served model id (None: the one the server serves; several: name one).
    api_key: sent as a Bearer token (vLLM --api-key, SGLang --api-key).
    spec:    the released name of the served model ("Qwen/Qwen3.5-397B-A17B") or a ModelSpec, when its
             id does not say (a local path, an alias); the routing views and the planner need it.
    timeout: seconds to wait for the server to connect or send the next bytes.
    chat_template: "server" (send messages; the server renders them), "local" (render them here with
             the checkpoint's template, needs its files on this machine) or "auto" (local only for
             llama-cpp-python's server, which takes thinking on/off only at start).
    The server is asked what it serves at once: a wrong address fails here, with what to fix."""
    from .http import Endpoint
    from .served import describe, list_models, pick

    endpoint = Endpoint.parse(url, api_key, timeout)
    served = pick(list_models(endpoint), model, endpoint.url)
    found, tokenizer = describe(served.id, spec)
    return RemoteModel(endpoint, served, found, tokenizer, chat_template)

