"""RL jobs in the results layer: rl_log.csv rows load, the final evaluation is the job's, the curve plots."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from metamanip.results import load_results, plot_rl_curves, write_report

LOG = ("iteration,env_steps,episodes,rollout_reward,success_by_trial,phase,loss_objective,loss_critic,kl_approx,"
       "clip_fraction,explained_variance,std,epochs,rollout_s,update_s,env_steps_per_s\n")


def rl_job(root: Path, name: str, rewards: list[float], bc: float, rl: float) -> Path:
    job = root / name
    (job / "eval_after").mkdir(parents=True)
    (job / "eval_before").mkdir()
    rows = "".join(f"{i + 1},{(i + 1) * 1000},8,{r},0.5 0.5 0.5,ppo,0,0,0.01,0.1,0.5,0.03,4,2.0,1.0,500\n"
                   for i, r in enumerate(rewards))
    (job / "rl_log.csv").write_text(LOG + rows)
    (job / "status.json").write_text(json.dumps({"status": "done"}))
    metrics = {"bc": {"average_reward": bc, "success_by_trial": [0.4, 0.8, 0.8], "episodes": 8},
               "rl": {"average_reward": rl, "success_by_trial": [0.5, 0.9, 0.9], "episodes": 8},
               "average_reward": rl, "env_steps": 1000 * len(rewards), "rollout_overhead_ratio": 1.1}
    (job / "metrics.json").write_text(json.dumps(metrics))
    for stage, value in (("eval_before", bc), ("eval_after", rl)):
        (job / stage / "summary.json").write_text(json.dumps(
            {"average_reward": value, "success_by_trial": [value / 3] * 3, "episodes": 8, "complete": True,
             "config": {"setting": "explore", "num_objs": 3, "agent": "policy", "split": "train"}}))
    return job


def test_rl_logs_load_and_the_curve_shows_rollouts_bc_and_rl(tmp_path: Path) -> None:
    rl_job(tmp_path, "seed0", [1.5, 1.7, 1.9], bc=2.0, rl=2.2)
    rl_job(tmp_path, "seed1", [1.4, 1.6], bc=1.9, rl=2.1)
    res = load_results(tmp_path)
    assert len(res.rl_logs) == 5 and set(res.rl_logs["job"]) == {"seed0", "seed1"}
    assert sorted(res.finished["average_reward"]) == [2.1, 2.2]          # the RL evaluation, not the BC one
    assert res.finished["setting"].tolist() == ["explore", "explore"]   # key columns from eval_after
    ax = plot_rl_curves(res).axes[0]
    curves = [ln for ln in ax.get_lines() if ln.get_marker() == "."]
    assert [list(c.get_ydata()) for c in curves] == [[1.5, 1.7, 1.9], [1.4, 1.6]]
    bc_lines = sorted(float(ln.get_ydata()[0]) for ln in ax.get_lines() if ln.get_linestyle() == "--")
    assert bc_lines == [1.9, 2.0]
    dots = sorted((float(ln.get_xdata()[0]), float(ln.get_ydata()[0])) for ln in ax.get_lines()
                  if ln.get_marker() == "o")
    assert dots == [(2000.0, 2.1), (3000.0, 2.2)]
    report = write_report(res, tmp_path / "report")
    assert "rl_curves" in report.files and "rl_logs" in report.files
    assert np.isclose(float(res.finished["bc.average_reward"].mean()), 1.95)


def test_no_rl_jobs_no_rl_curve(tmp_path: Path) -> None:
    job = tmp_path / "plain"
    job.mkdir()
    (job / "metrics.json").write_text(json.dumps({"average_reward": 1.0}))
    res = load_results(tmp_path)
    assert res.rl_logs.empty
    with pytest.raises(ValueError, match="no RL logs"):
        plot_rl_curves(res)
    assert "rl_curves" in write_report(res, tmp_path / "r").skipped
