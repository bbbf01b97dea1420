"""The notebook has something to show: a real sweep of the demo recipe (collect → train → eval, two seeds,
`metamanip-pipeline -m`) whose trained state policy succeeds and climbs from trial 1 to trial 2, checked
on the data behind the notebook's success-by-trial plot, then the notebook run on that sweep."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from results_sweeps import execute_notebook, notebook_text

pytestmark = pytest.mark.slow


def test_a_sweep_of_the_demo_recipe_learns_and_the_notebook_shows_it(tmp_path: Path) -> None:
    from metamanip.results import aggregate, load_results
    from metamanip.results.tables import success_metrics

    logs = tmp_path / "logs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    r = subprocess.run([sys.executable, "-m", "metamanip.cli.pipeline", "-m", "experiment=demo", "seed=0,1",
                        "pipeline.baseline=false", f"paths.log_dir={logs}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = next((logs / "pipeline" / "multiruns").iterdir())
    results = load_results([sweep])
    jobs = results.finished
    assert len(jobs) == 2
    trial_cols = success_metrics(list(jobs.columns))
    assert trial_cols[:2] == ["success_trial_1", "success_trial_2"]
    # the numbers plot_success_by_trial draws: mean over the seeds per trial index
    stats = aggregate(jobs, [], trial_cols).set_index("metric")["mean"]
    assert (jobs["average_reward"] > 0).all(), jobs[["seed", "average_reward"]]
    assert stats["success_trial_2"] > stats["success_trial_1"], stats
    out = tmp_path / "nb"
    nb = execute_notebook([sweep], out)
    assert "2 of 2 job(s) with results" in notebook_text(nb)
    assert (out / "success_by_trial.png").is_file()
