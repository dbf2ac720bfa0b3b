"""Every notebook runs top to bottom with its small defaults, and its last cell, which asserts the
notebook's headline numbers against the theory, passes."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# heavier runs kept out of the default suite (-m slow runs them): what each computes is tested end to end elsewhere
SLOW = {"07_pretraining_scale": "pretraining_scale.compute on the tiny model: tests/test_experiments.py"}


def test_there_are_seven_notebooks() -> None:
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW else p for p in NOTEBOOKS],
                         ids=lambda p: p.stem)
def test_notebook_runs_and_its_headline_numbers_hold(path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    at = next(i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    assert cells[-1].cell_type == "code" and "assert" in cells[-1].source, "the last cell must assert the headline numbers"
    # outputs (compare's resumable state) go to a fresh folder, never to a previous run's
    cells.insert(at + 1, nbformat.v4.new_code_cell(f"OUT = pathlib.Path({str(tmp_path / 'out')!r})"))
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
