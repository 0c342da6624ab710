"""Write the tutorial notebooks from their sources, `notebooks/src/<name>.py` (jupytext percent format:
real Python, linted like the package), then execute them in place and strip the noise:
`python scripts/build_notebooks.py [name ...]`. The committed notebooks are what nbval compares
against; tests/test_code_sources.py checks that they hold exactly the cells of their sources."""
import sys
from pathlib import Path

import jupytext
import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = NOTEBOOKS / "src"
METADATA = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"}}


def notebook_from_source(source: Path) -> nbformat.NotebookNode:
    """The notebook a source describes: its cells (with their tags only), stable cell ids, no outputs."""
    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata = nbformat.from_dict(METADATA)
    for i, cell in enumerate(nb.cells):
        cell.metadata = nbformat.from_dict({k: v for k, v in cell.metadata.items() if k == "tags"})
        cell["id"] = f"cell-{i:03d}"  # stable ids: rebuilding leaves no diff where nothing changed
    return nb


def build(name: str) -> Path:
    path = NOTEBOOKS / f"{name}.ipynb"
    nbformat.write(notebook_from_source(SOURCES / f"{name}.py"), path)
    return path


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run_notebooks import main as execute

    names = sys.argv[1:] or sorted(p.stem for p in SOURCES.glob("*.py"))
    execute([build(n) for n in names])
