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
        parameters={"n_per_class": 40, "k_grid": [1, 2, 4], "strengths": [0.0, 0.7], "ipc": 2,
                    "train_size": 2000},
        progress_bar=False, cwd=str(REPO))
    text = out.read_text()
    assert "d_eff" in text and "teacher agreement" in text


def test_experiment_notebook_records_the_distillation_report(tmp_path, digits_teacher):
    """A DDOQ run (pixel prior, digits): the record's W2 and distill_meta come from the saved
    set's report, and the record reads back as schema 2."""
    import json

    from pqlib.distilled import DistilledSet
    from pqlib.results import read_record

    record, folder = tmp_path / "run.json", tmp_path / "set"
    papermill.execute_notebook(
        jupytext.read(REPO / "notebooks" / "experiment.py"), str(tmp_path / "run.ipynb"),
        kernel_name="python3", progress_bar=False, cwd=str(REPO),
        parameters={"dataset": "digits", "method": "ddoq", "options": {"prior": "pixel"}, "ipc": 2,
                    "epochs": 2, "test_size": 50, "teacher_epochs": 20, "run_name": "t",
                    "result_path": str(record), "distilled_dir": str(folder)})
    rec, report = read_record(record), DistilledSet.load(folder).report
    assert rec["schema"] == 2 and rec["run"] == "t" and set(rec["accuracy"]) == {"soft", "hard"}
    own = report.w2_latent
    assert rec["w2"] == {"space": "latent", "weighted": own.weighted, "uniform": own.uniform,
                         "reduction_pct": own.reduction_pct}
    meta = json.loads((folder / "meta.json").read_text())
    assert rec["distill_meta"] == {k: v for k, v in meta.items() if k != "classes"}
    assert rec["stage_seconds"] == report.stage_seconds
