"""The README's Python snippets run as written (on the bundled model: loads of Hub models that
this offline machine cannot fetch are replaced by the bundled 'tiny', GGUF files it does not have by
the bundled 'tiny:Q4_0', nothing else is changed)."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
HUB_LOAD = re.compile(r'workbench\.load\("(Qwen/[^"]+|/path/to/checkpoint)"[^)]*\)')
GGUF_LOAD = re.compile(r'workbench\.load\("(/models/[^"]+\.gguf|[\w-]+/[\w.-]+-GGUF)"[^)]*\)')


def snippets():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_python_runs_as_written(tmp_path, monkeypatch):
    import workbench
    monkeypatch.chdir(tmp_path)
    code = "\n".join(snippets())
    assert "workbench.load" in code and "workbench.plan" in code
    code = HUB_LOAD.sub('workbench.load("tiny")', code)
    code = GGUF_LOAD.sub('workbench.load("tiny:Q4_0")', code)  # a GGUF file this machine has
    namespace = {}
    try:
        exec(compile(code, str(README), "exec"), namespace)
    except Exception as exc:  # pragma: no cover - the message says which line
        pytest.fail(f"README snippet failed: {type(exc).__name__}: {exc}")
    assert isinstance(namespace["gen"], workbench.Generation)
