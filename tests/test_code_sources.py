"""The committed tutorials hold exactly the cells of their sources in notebooks/src (jupytext percent
format): same kinds, sources, tags and ids, in order. Fails when a notebook was edited without its
source, or a source without rebuilding (`python scripts/build_notebooks.py NAME`)."""
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
jupytext = pytest.importorskip("jupytext")
from build_notebooks import SOURCES, notebook_from_source  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def cells(nb):
    return [(c.cell_type, c.source, c.metadata.get("tags", []), c.get("id")) for c in nb.cells]


def test_every_notebook_has_a_source_and_back():
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(p.stem for p in SOURCES.glob("*.py"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_cells_are_rebuilt_from_the_source(path):
    committed = nbformat.read(path, as_version=4)
    built = notebook_from_source(SOURCES / f"{path.stem}.py")
    assert cells(built) == cells(committed)


def test_the_code_is_linted():
    """ruff (config in pyproject.toml) over the package, tests, scripts and tutorial sources."""
    import shutil
    import subprocess
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    out = subprocess.run([ruff, "check", "workbench", "tests", "scripts", "notebooks/src"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
