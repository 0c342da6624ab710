"""Hub ids resolve through huggingface_hub's cache, offline, with revisions; only needed files."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from workbench.hub import CHECKPOINTS

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _fill_cache(hf_home: Path, repo: str) -> Path:
    """Lay out a Hub cache as huggingface_hub writes it: blobs, a snapshot of links, refs/main."""
    repo_dir = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo_dir / "blobs").mkdir()
    for f in CHECKPOINTS.joinpath("tiny-random").iterdir():
        blob = repo_dir / "blobs" / f"blob-{f.name}"
        shutil.copy(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)
    return snapshot


def _run(hf_home: Path, code: str) -> str:
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_loads_a_hub_id_from_an_offline_cache(tmp_path):
    snapshot = _fill_cache(tmp_path, "Qwen/Qwen3.5-Tiny-Test")
    out = _run(tmp_path, f"""
        import workbench
        m = workbench.load("Qwen/Qwen3.5-Tiny-Test", backend="torch")
        print("PATH", m.path)
        print("GEN", m.generate("def ", max_new_tokens=4).stats.new_tokens)
        m2 = workbench.load("Qwen/Qwen3.5-Tiny-Test", backend="torch", revision="{COMMIT}")
        print("REV", m2.path)
        try:
            workbench.load("Qwen/Qwen3.5-35B-A3B")
        except workbench.WorkbenchError as e:
            print("ERR", e)
    """)
    assert f"PATH {snapshot.resolve()}" in out or f"PATH {snapshot}" in out
    assert "GEN 4" in out and f"REV {snapshot}" in out
    assert "ERR 'Qwen/Qwen3.5-35B-A3B' is not in the Hugging Face cache" in out
    assert "hf download Qwen/Qwen3.5-35B-A3B" in out


def test_only_model_files_are_requested():
    import fnmatch

    from workbench.hub import NEEDED_FILES
    wanted = ["config.json", "model-00001-of-00014.safetensors", "model.safetensors.index.json",
              "tokenizer.json", "chat_template.jinja", "generation_config.json"]
    unwanted = ["README.md", "merges.txt", "vocab.json", "pytorch_model.bin", "figures/bench.png"]
    assert all(any(fnmatch.fnmatch(f, p) for p in NEEDED_FILES) for f in wanted)
    assert not any(any(fnmatch.fnmatch(f, p) for p in NEEDED_FILES) for f in unwanted)


def test_bundled_gguf_copies_follow_the_weights(tmp_path):
    """A retrained bundled checkpoint never opens the GGUF copy of its old weights: the copy's name
    carries a fingerprint of the weight and tokenizer files."""
    from workbench.hub import bundled_gguf, checkpoint_fingerprint
    (tmp_path / "model.safetensors").write_bytes(b"old weights")
    old = checkpoint_fingerprint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"new weights, retrained")
    assert checkpoint_fingerprint(tmp_path) != old
    newer = checkpoint_fingerprint(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")  # a new vocabulary with the same weights: another copy too
    assert checkpoint_fingerprint(tmp_path) != newer
    assert checkpoint_fingerprint(CHECKPOINTS / "tiny") in bundled_gguf("tiny", "Q8_0").name
