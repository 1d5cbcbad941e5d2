"""Notebooks: Colab twins in sync, and papermill runs with non-default parameters."""

from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_twin_is_in_sync_and_output_free(source):
    twin = source.with_suffix(".ipynb")
    assert twin.exists(), f"run `jupytext --to ipynb {source.relative_to(REPO)}`"
    nb, py = nbformat.read(twin, as_version=4), jupytext.read(source)
    assert [c.source for c in nb.cells] == [c.source for c in py.cells], \
        f"{twin.name} is out of date: run `jupytext --sync {source.relative_to(REPO)}`"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_a_parameters_cell(source):
    cells = jupytext.read(source).cells
    assert any("parameters" in c.metadata.get("tags", []) for c in cells)


def test_ablations_notebook_runs_with_small_parameters(tmp_path):
    out = tmp_path / "ablations.ipynb"
    papermill.execute_notebook(
        jupytext.read(REPO / "notebooks" / "ablations.py"), str(out), kernel_name="python3",
        parameters={"n_per_class": 40, "k_grid": [1, 2, 4], "strengths": [0.0, 0.7], "ipc": 2},
        progress_bar=False, cwd=str(REPO))
    text = out.read_text()
    assert "d_eff" in text and "teacher agreement" in text
