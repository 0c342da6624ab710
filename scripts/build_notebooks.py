"""Write the tutorial notebooks from their cell lists in scripts/notebooks/ (one module per
notebook), then execute them in place and strip the noise: `python scripts/build_notebooks.py
[name ...]`. The committed notebooks are what nbval compares against."""
import importlib
import sys
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "notebooks"))
MODULES = ["quickstart", "expert_routing", "deltanet_state", "tokens_per_second", "memory_and_hardware"]


def build(module_name: str) -> Path:
    module = importlib.import_module(module_name)
    nb = nbf.v4.new_notebook(cells=module.cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"  # stable ids: rebuilding leaves no diff where nothing changed
    path = HERE.parent / "notebooks" / f"{module.NAME}.ipynb"
    path.write_text(nbf.writes(nb))
    return path


if __name__ == "__main__":
    from run_notebooks import main as execute

    names = sys.argv[1:] or MODULES
    execute([build(n) for n in names])
