"""Execute the tutorial notebooks in place and strip the noise (widget state, timings, ids),
so what is committed is exactly what nbval compares against."""
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


# Cells whose outputs depend on the machine and its load (timings): committed without outputs.
MACHINE_DEPENDENT = "machine-dependent"


def clean(nb) -> None:
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if MACHINE_DEPENDENT in cell.metadata.get("tags", []):
            cell.outputs, cell.execution_count = [], None
        for out in cell.get("outputs", []):
            out.get("metadata", {}).clear() if "metadata" in out else None


def main(paths) -> None:
    for path in paths or sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        clean(nb)
        nbformat.write(nb, path)
        print("executed", Path(path).name)


if __name__ == "__main__":
    main(sys.argv[1:])
