"""Where a checkpoint lives: a bundled name, a local folder, or a Hugging Face Hub snapshot.

Hub ids go through huggingface_hub into its standard cache, so `HF_HOME`, `HF_HUB_CACHE`,
`HF_HUB_OFFLINE`, revisions and its progress bars behave as in transformers and mlx-lm. Only
the files a model needs are fetched: configs, tokenizer, chat template and safetensors weights
(no README images, no duplicate tokenizer formats, no other frameworks' weights).
"""
from __future__ import annotations

import functools
import hashlib
import re
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


# ---- GGUF files ------------------------------------------------------------------------------
# GGUF copies of the bundled model, made once at set-up by scripts/make_gguf_copies.py (llama.cpp's
# converter and quantizer) into the cache, named like llama.cpp's `-hf repo:TYPE`.
BUNDLED_GGUF = {"tiny": ("F32", "Q8_0", "Q4_0")}


def bundled_gguf(name: str, kind: str) -> Path:
    """Where the bundled checkpoint `name`'s GGUF copy `kind` lives in the cache. The name carries a
    fingerprint of the weights and tokenizer, so a retrained checkpoint never opens a copy of the old one."""
    from .gguf.convert import cache_dir
    return cache_dir() / "gguf" / f"{name}-{checkpoint_fingerprint(CHECKPOINTS / name)}-{kind}.gguf"


def checkpoint_fingerprint(folder: Path) -> str:
    """The first 10 hex digits of the SHA-256 of what a GGUF copy is made from: the weight files and
    the tokenizer and chat template it embeds (hashed once per process and file version)."""
    files = sorted(Path(folder).glob("*.safetensors")) + [
        f for f in (Path(folder) / n for n in ("tokenizer.json", "chat_template.jinja")) if f.exists()]
    return _fingerprint(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=16)
def _fingerprint(files: tuple) -> str:
    digest = hashlib.sha256()
    for path, _, _ in files:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:10]


def resolve_gguf(model, file: str | None = None, revision: str | None = None) -> Path | None:
    """The GGUF file `model` (and `file=`) name, or None when they name a safetensors checkpoint.

    A path to a .gguf file; a bundled name with a type ("tiny:Q4_0"); a local folder or Hub id
    with `file=` a glob ("*Q4_K_M.gguf") that must match exactly one file (or one split set,
    whose first part llama.cpp opens); from the Hub only that file is downloaded."""
    if isinstance(model, (str, Path)) and str(model).lower().endswith(".gguf"):
        if file is not None:
            raise WorkbenchError("file= picks a GGUF file inside a folder or Hub repository; "
                                 f"{model} is already a file.")
        path = Path(model).expanduser()
        if not path.is_file():
            raise WorkbenchError(f"{path} does not exist: pass the path of a .gguf file.")
        return path.resolve()
    if isinstance(model, str) and ":" in model and model.split(":")[0] in BUNDLED_GGUF:
        name, kind = model.split(":", 1)
        kinds = BUNDLED_GGUF[name]
        if kind.upper() not in kinds:
            raise WorkbenchError(f"{model!r}: the bundled GGUF copies of {name!r} are "
                                 f"{', '.join(f'{name}:{k}' for k in kinds)}.")
        path = bundled_gguf(name, kind.upper())
        if not path.exists():
            raise WorkbenchError(
                f"{model!r} has not been made on this machine yet: run `python scripts/make_gguf_copies.py` "
                "(`./dev setup` does it once the gguf extra is installed).")
        return path
    if file is None:
        return None
    if not isinstance(file, str) or not file:
        raise WorkbenchError(f"file={file!r}: give a file name or glob such as '*Q4_K_M.gguf'.")
    if isinstance(model, Path) or (isinstance(model, str) and _looks_local(model)):
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise WorkbenchError(f"{folder} is not a folder: with file=, pass the folder that holds the GGUF files.")
        return _one_match(sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.gguf")), file,
                          str(folder), lambda name: folder / name)
    return _hub_gguf(model, file, revision)


def _one_match(names: list[str], pattern: str, where: str, path_of) -> Path:
    import fnmatch

    matches = [n for n in names if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(n.split("/")[-1], pattern)]
    firsts = [n for n in matches if not re.search(r"-\d{5}-of-\d{5}\.gguf$", n) or "-00001-of-" in n]
    if len(firsts) == 1:
        return path_of(firsts[0])
    if not matches:
        listed = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "") if names else "none"
        raise WorkbenchError(f"file={pattern!r} matches no GGUF file in {where} (it holds: {listed}).")
    raise WorkbenchError(f"file={pattern!r} matches {len(firsts)} GGUF files in {where}: "
                         f"{', '.join(firsts[:8])}. Give a pattern that picks one, e.g. '*Q4_K_M.gguf'.")


def _hub_gguf(repo_id: str, pattern: str, revision: str | None) -> Path:
    import os

    try:
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:
        raise WorkbenchError("loading from the Hub needs huggingface_hub: pip install huggingface_hub") from None
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise WorkbenchError(f"{repo_id!r} is not a Hub id of the form 'Org/Name' holding GGUF files.")
    try:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=[pattern]))
            names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.gguf"))
            return _one_match(names, pattern, f"the cached {repo_id}", lambda name: folder / name)
        names = sorted(n for n in HfApi().list_repo_files(repo_id, revision=revision) if n.endswith(".gguf"))
        chosen = _one_match(names, pattern, repo_id, lambda name: name)
        parts = [n for n in names if re.sub(r"-\d{5}-of-(\d{5})\.gguf$", "", n) ==
                 re.sub(r"-\d{5}-of-(\d{5})\.gguf$", "", str(chosen))] if "-of-" in str(chosen) else [str(chosen)]
        paths = [Path(hf_hub_download(repo_id, n, revision=revision)) for n in parts]
        return paths[0]
    except LocalEntryNotFoundError:
        raise WorkbenchError(
            f"{repo_id!r} is not in the Hugging Face cache and the Hub cannot be reached (HF_HUB_OFFLINE is set "
            f"or there is no network). Download the file once (`hf download {repo_id} --include '{pattern}'`) "
            "or pass the local .gguf path.") from None
    except RepositoryNotFoundError:
        raise WorkbenchError(f"{repo_id!r} is not a repository on the Hub (or it is gated/private: "
                             "`hf auth login`).") from None
