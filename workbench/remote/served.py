"""What a server serves: its model ids, which engine it is, and the spec and tokenizer of the model
where the workbench can know them (a released Qwen3.5 name, or files on this machine)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import WorkbenchError
from ..spec import ModelSpec
from .http import Endpoint, ServerError, request_json

ENGINES = {"vllm": "vLLM", "sglang": "SGLang", "llamacpp": "llama.cpp server", "me": "llama-cpp-python server",
           "mlx": "mlx_lm.server"}


@dataclass(frozen=True)
class Served:
    """One model a server lists under /v1/models."""

    id: str
    engine: str                  # "vllm" | "sglang" | "llamacpp" | "llama-cpp-python" | "mlx_lm" | "unknown"
    max_model_len: int | None    # the server's context limit where it says (vLLM, SGLang)


def list_models(endpoint: Endpoint) -> list[Served]:
    """GET /v1/models, checked to be an OpenAI-style list."""
    body = request_json(endpoint, "GET", "/models")
    data = body.get("data")
    if not isinstance(data, list):
        raise ServerError(f"{endpoint.url}/models answered without a 'data' list ({str(body)[:120]}): this is not an "
                          "OpenAI-compatible server, or the URL misses its API prefix (usually /v1).")
    out = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        owner = str(entry.get("owned_by", "")).lower()
        engine = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llamacpp", "me": "llama-cpp-python"}.get(owner)
        if engine is None:
            engine = "mlx_lm" if "created" in entry and "owned_by" not in entry else "unknown"
        limit = entry.get("max_model_len") or entry.get("context_length")
        out.append(Served(entry["id"], engine, int(limit) if isinstance(limit, int) and limit > 0 else None))
    if not out:
        raise ServerError(f"{endpoint.url} serves no model (its /models list is empty). mlx_lm.server lists a model "
                          "only with HF_HUB_OFFLINE=1 and HF_HUB_CACHE set to an existing folder; start it with "
                          "workbench.serve(...), which does that.")
    return out


def pick(models: list[Served], model: str | None, url: str) -> Served:
    names = ", ".join(repr(m.id) for m in models)
    if model is None:
        if len(models) > 1:
            raise WorkbenchError(f"{url} serves several models ({names}): name one, connect(url, model=...).")
        return models[0]
    for m in models:
        if m.id == model:
            return m
    raise WorkbenchError(f"{url} does not serve {model!r}; it serves {names}. Pass one of those as model=.")


def describe(model_id: str, spec: ModelSpec | str | None = None) -> tuple[ModelSpec | None, object | None]:
    """(spec, tokenizer) of a served model id, each None where the workbench cannot know it.

    The spec: `spec` when given; else the id as a released Qwen3.5 name ("Qwen/Qwen3.5-35B-A3B",
    "Qwen3.5-35B-A3B-FP8"), a bundled name, or a checkpoint folder / .gguf file that exists here (a
    local server). The tokenizer only from local files (it gives the routing views their token texts)."""
    from ..spec import spec as lookup
    from ..tokenizer import Tokenizer

    if isinstance(spec, ModelSpec):
        given = spec
    elif spec is not None:
        given = lookup(spec)
    else:
        given = None
    from .. import hub

    path = Path(model_id).expanduser()
    try:  # a bundled GGUF tag ("tiny:Q8_0", the alias workbench.serve gives llama.cpp's server)
        path = hub.resolve_gguf(model_id) or path if ":" in model_id and not path.exists() else path
    except WorkbenchError:
        pass
    if path.suffix == ".gguf" and path.is_file():
        from ..gguf.metadata import spec_from_gguf, tokenizer_from_gguf
        from ..gguf.reader import read_header
        header = read_header(path)
        return given or spec_from_gguf(header), tokenizer_from_gguf(header)
    try:
        found = lookup(model_id)
    except WorkbenchError:
        found = None
    tokenizer = None
    try:
        folder = hub.resolve(model_id) if path.is_dir() or model_id in hub.bundled_names() else None
        tokenizer = Tokenizer(folder) if folder is not None else None
    except (WorkbenchError, OSError):
        tokenizer = None
    return given or found, tokenizer
