"""`spec(...)`: the ModelSpec of a released model by Hub id or name, of a config.json / checkpoint
folder, or of a Hub id found in the local cache - without loading any weights."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..errors import WorkbenchError
from ..model_spec import ModelSpec

CONFIGS = files("workbench") / "configs"


def known() -> dict[str, str]:
    """{Hub id: shipped config file name} of the released models the package knows."""
    return {f"Qwen/{p.name[:-5]}": p.name for p in sorted(CONFIGS.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".json")}


def spec(model: str | Path) -> ModelSpec:
    """`"Qwen/Qwen3.5-35B-A3B"`, `"Qwen3.5-35B-A3B"`, a path to a config.json or a checkpoint
    folder, a bundled name ("tiny"), or a Hub id whose config.json is in the local HF cache."""
    from .. import hub

    path = Path(str(model)).expanduser()
    if path.exists():
        return ModelSpec.from_file(path)
    name = str(model)
    table = known()
    by_name = {k.split("/", 1)[1].lower(): v for k, v in table.items()}
    base = name.split("/", 1)[-1].lower()
    for suffix in ("-fp8", "-gguf", "-instruct", "-base", "-mlx-4bit", "-4bit", "-8bit"):
        if base not in by_name and base.endswith(suffix):
            base = base[: -len(suffix)]
    if base in by_name:
        spec_ = ModelSpec.from_file(CONFIGS / by_name[base])
    elif name in hub.bundled_names():
        spec_ = ModelSpec.from_file(hub.resolve(name, None))
    else:
        spec_ = _from_cache(name, table)
    spec_.raw.setdefault("_name_or_path", name)
    return spec_


def _from_cache(repo_id: str, table: dict) -> ModelSpec:
    try:
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(repo_id, "config.json") if "/" in repo_id else None
    except Exception:  # noqa: BLE001 - a malformed id is reported below
        cached = None
    if isinstance(cached, str):
        return ModelSpec.from_file(cached)
    raise WorkbenchError(f"{repo_id!r} is not a model the workbench knows, a local config.json or a Hub id in the "
                         f"local cache. Known: {', '.join(table)}; or pass the path of any Qwen3.5-family config.json.")
