"""Where a checkpoint lives: a bundled name, a local folder, or a Hugging Face Hub snapshot.

Hub ids go through huggingface_hub into its standard cache, so `HF_HOME`, `HF_HUB_CACHE`,
`HF_HUB_OFFLINE`, revisions and its progress bars behave as in transformers and mlx-lm. Only
the files a model needs are fetched: configs, tokenizer, chat template and safetensors weights
(no README images, no duplicate tokenizer formats, no other frameworks' weights).
"""
from __future__ import annotations

from pathlib import Path

from .errors import WorkbenchError

CHECKPOINTS = Path(__file__).parent / "checkpoints"
BUNDLED = {
    "tiny": "Qwen3.5-MoE architecture, trained on this project's CPU (Python source, chats, tool calls): "
            "8 layers (6 Gated DeltaNet, 2 gated attention), 16 experts top-4 + shared",
    "tiny-random": "Qwen3.5-MoE architecture with random weights (test fixture): 4 layers (3 Gated DeltaNet, "
                   "1 gated attention), 16 experts top-4 + shared",
    "tiny-dense": "dense Qwen3.5 architecture with random weights (test fixture): 4 layers (3 Gated DeltaNet, "
                  "1 gated attention)",
}
NEEDED_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "chat_template.jinja", "*.safetensors", "model.safetensors.index.json"]


def bundled_names() -> list[str]:
    return sorted(BUNDLED)


def resolve(model: str | Path, revision: str | None = None) -> Path:
    """Return the local folder holding the checkpoint named by `model`."""
    if isinstance(model, Path) or (isinstance(model, str) and _looks_local(model)):
        return _local(Path(model).expanduser())
    if not isinstance(model, str) or not model:
        raise WorkbenchError(f"model={model!r}: pass a bundled name ({', '.join(bundled_names())}), "
                             "a checkpoint folder, or a Hub id like 'Qwen/Qwen3.5-35B-A3B'.")
    if model in BUNDLED:
        if revision is not None:
            raise WorkbenchError(f"revision={revision!r} does not apply to the bundled model {model!r}.")
        return CHECKPOINTS / model
    if model.count("/") == 1 and not model.startswith(("/", ".", "~")):
        return _hub_snapshot(model, revision)
    raise WorkbenchError(
        f"unknown model {model!r}: not a bundled name ({', '.join(bundled_names())}), not an existing "
        "folder, and not a Hub id of the form 'Org/Name' (e.g. 'Qwen/Qwen3.5-35B-A3B').")


def _looks_local(model: str) -> bool:
    path = Path(model).expanduser()
    return path.exists() or model.startswith(("/", "./", "../", "~")) or model.count("/") > 1


def _local(path: Path) -> Path:
    if not path.is_dir():
        raise WorkbenchError(f"{path} is not a folder: pass a checkpoint folder in the Hugging Face "
                             "layout (config.json, *.safetensors, tokenizer.json).")
    if not (path / "config.json").exists():
        raise WorkbenchError(
            f"{path} has no config.json, so it is not a checkpoint folder in the Hugging Face layout. "
            "Point at the folder that holds config.json, *.safetensors and tokenizer.json "
            "(for a Hub cache, the snapshots/<commit> folder).")
    return path.resolve()


def _hub_snapshot(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError:
        raise WorkbenchError("loading from the Hub needs huggingface_hub: pip install huggingface_hub") from None
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=NEEDED_FILES))
    except LocalEntryNotFoundError:
        raise WorkbenchError(
            f"{repo_id!r}{'@' + revision if revision else ''} is not in the Hugging Face cache and "
            "the Hub cannot be reached (HF_HUB_OFFLINE is set or there is no network). Download it "
            f"once with network access (`hf download {repo_id}`), point HF_HOME at a cache that "
            "has it, or pass the local folder instead.") from None
    except RevisionNotFoundError:
        raise WorkbenchError(f"revision {revision!r} does not exist in {repo_id!r}; use a branch, "
                             "tag or commit of that repository.") from None
    except RepositoryNotFoundError:
        raise WorkbenchError(f"{repo_id!r} is not a repository on the Hub (or it is gated/private and "
                             "you are not logged in: `hf auth login`).") from None
