"""notebooks/quantization.py runs end to end under papermill with small parameters."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quantization.py"
SMALL = {"dims": [1, 2], "k_grid": [2, 4, 8], "n_samples": 2000, "pixels": "digits",
         "pixel_samples": 500, "iters": 30, "seed": 1}


def _outputs(nb, kind: str) -> list[str]:
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") in ("execute_result", "display_data", "stream"):
                texts.append(out.get("text", "") if kind == "stream" else
                             out.get("data", {}).get(kind, ""))
    return [t for t in texts if t]


def test_notebook_runs_with_small_parameters(tmp_path):
    out = tmp_path / "quantization.ipynb"
    papermill.execute_notebook(jupytext.read(NOTEBOOK), str(out), parameters=SMALL,
                               kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "pixel_samples = 500" in injected[0].source
    assert len(_outputs(nb, "image/png")) == 4  # the four figures
    tables = "\n".join(_outputs(nb, "text/plain"))
    assert "d_eff = -2/slope" in tables and "digits pixels d=64" in tables
    assert "uniform d=4" not in tables  # the parameters were used
    identity = [t for t in _outputs(nb, "stream") if "W2² / distortion" in t]
    assert identity and float(identity[0].rsplit(":", 1)[1]) < 1e-6


def test_paired_ipynb_is_in_sync():
    paired = NOTEBOOK.with_suffix(".ipynb")
    assert paired.exists(), "run: jupytext --to ipynb notebooks/quantization.py"
    a = jupytext.read(NOTEBOOK)
    b = jupytext.read(paired)
    assert [c.source for c in a.cells] == [c.source for c in b.cells], \
        "notebooks/quantization.ipynb is stale: jupytext --sync notebooks/quantization.py"
    assert all(not c.get("outputs") for c in b.cells if c.cell_type == "code")


def test_loglog_fit_recovers_the_rate():
    import matplotlib

    matplotlib.use("Agg")  # a test, not a notebook: no display
    import matplotlib.pyplot as plt
    import numpy as np

    from pqlib.plotting import loglog_fit

    fig, ax = plt.subplots()
    k = np.array([2, 4, 8, 16])
    assert loglog_fit(ax, k, 3.0 * k**-0.5, label="d = 4") == pytest.approx(-0.5)
    assert "slope -0.50" in ax.get_legend_handles_labels()[1][0]
    with pytest.raises(ValueError, match="positive"):
        loglog_fit(ax, k, -k)
    plt.close(fig)
