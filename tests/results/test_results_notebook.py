"""notebooks/results.ipynb: paired with its jupytext .py, and runs headless against a sweep."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from results_sweeps import EPISODES, EVAL_REWARDS

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "results.ipynb"


def execute_notebook(sweeps: list[Path], out_dir: Path, group_by: str = "", metrics: str = "",
                     timeout: int = 300) -> nbformat.NotebookNode:
    """Run notebooks/results.ipynb in a fresh kernel with the sweep given through the environment."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {"METAMANIP_SWEEP": os.pathsep.join(map(str, sweeps)), "METAMANIP_RESULTS_OUT": str(out_dir),
           "METAMANIP_GROUP_BY": group_by, "METAMANIP_METRICS": metrics, "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def notebook_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


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
