"""notebooks/results.ipynb: paired with its jupytext .py, and runs headless against a sweep."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest
from results_sweeps import EPISODES, EVAL_REWARDS, NOTEBOOK, execute_notebook, notebook_text

REPO = Path(__file__).resolve().parents[2]


def test_notebook_is_paired_with_its_jupytext_script() -> None:
    import jupytext

    script = jupytext.read(REPO / "notebooks" / "results.py")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert [(c.cell_type, c.source) for c in script.cells] == [(c.cell_type, c.source) for c in nb.cells], \
        "notebooks/results.ipynb and results.py differ: run `jupytext --sync notebooks/results.py`"
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    # the notebook calls the module; it does not compute statistics itself
    assert "from metamanip.results import" in code
    assert not any(s in code for s in (".mean(", ".std(", "groupby(", "scipy", "read_csv"))


@pytest.mark.slow
def test_notebook_runs_headless_on_a_half_finished_sweep(half_sweep: Path, train_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "nb_out"
    nb = execute_notebook([half_sweep, train_run], out, group_by="decoder")
    text = notebook_text(nb)
    assert "3 of 5 job(s) with results" in text  # the train run counts
    assert "not started" in text and "CUDA out of memory" in text
    table = pd.read_csv(out / "table.csv")
    lstm = table[(table["source"] == "metamanip") & (table["decoder"] == "lstm")].iloc[0]
    expected = [round(EVAL_REWARDS[("lstm", s)] * EPISODES) / EPISODES for s in (1, 2)]
    assert lstm["average_reward"] == pytest.approx(sum(expected) / 2) and lstm["n"] == 2
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 3  # success by trial, average reward, loss curves
