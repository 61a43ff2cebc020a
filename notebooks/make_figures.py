"""Run ``quickstart.ipynb`` with its full budget and save its three plots as PNG.

    python notebooks/make_figures.py [--output docs/images] [--executed PATH.ipynb]

Writes ``curriculum.png``, ``memory_projection.png`` and ``retrieval_grid.png`` in ``--output``
(the README's figures); ``--executed`` also keeps the executed notebook. Takes a few minutes
on a CPU. Headless: the plots are rendered with matplotlib's Agg backend.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent
REPO = NOTEBOOKS.parent


def execute_notebook(path: Path, env: dict[str, str], timeout: int = 1800) -> nbformat.NotebookNode:
    """Execute the notebook at ``path`` in its folder, with ``env`` added to the kernel's environment."""
    notebook = nbformat.read(path, as_version=4)
    saved = dict(os.environ)
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return notebook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "images", help="folder of the PNGs")
    parser.add_argument("--executed", type=Path, help="also write the executed notebook here")
    args = parser.parse_args()
    start = time.perf_counter()
    env = {"MEMVIR_FIGURES_DIR": str(args.output.resolve()), "MEMVIR_CACHE": os.environ.get("MEMVIR_CACHE", str(REPO / ".cache"))}
    notebook = execute_notebook(NOTEBOOKS / "quickstart.ipynb", env)
    if args.executed:
        nbformat.write(notebook, args.executed)
    print(f"figures in {args.output} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
