"""Plots draw the aggregated numbers and are written as PNG + PDF; the report writes every file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from results_sweeps import EPISODES, EVAL_REWARDS

from metamanip.results import (load_results, plot_average_reward, plot_loss_curves, plot_success_by_trial,
                               save_figure, write_report)


def test_success_by_trial_draws_group_means(eval_sweep: Path, tmp_path: Path) -> None:
    res = load_results(eval_sweep)
    fig = plot_success_by_trial(res, group_by=["decoder"])
    ax = fig.axes[0]
    lines = {c.get_label(): c.lines[0] for c in ax.containers}
    assert set(lines) == {"decoder=fc", "decoder=lstm"}
    expected = res.trials[res.trials.decoder == "lstm"].groupby("trial")["reward"].mean()
    assert np.allclose(lines["decoder=lstm"].get_ydata(), expected.to_numpy())
    paths = save_figure(fig, tmp_path / "plots" / "sbt")
    assert [Path(p).suffix for p in paths] == [".png", ".pdf"]
    assert Path(paths[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(paths[1]).read_bytes()[:5] == b"%PDF-"
    assert not list((tmp_path / "plots").glob(".*"))  # no temp files left behind


def test_average_reward_bars_with_errors_and_reference(eval_sweep: Path) -> None:
    jobs = load_results(eval_sweep).jobs.copy()
    jobs["num_objs"] = 5  # a setting the thesis published figures for
    fig = plot_average_reward(jobs, group_by=["decoder"])
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    lstm = np.mean([round(EVAL_REWARDS[("lstm", s)] * EPISODES) / EPISODES for s in (1, 2, 3)])
    assert len(heights) == 3 and heights[1] == pytest.approx(lstm)
    assert heights[2] == pytest.approx(np.mean([2.78, 1.89, 1.33]))
    assert "thesis" in ax.get_xticklabels()[2].get_text()


def test_loss_curves_one_line_per_job_plus_validation(train_run: Path, tmp_path: Path) -> None:
    res = load_results(train_run)
    ax = plot_loss_curves(res).axes[0]
    solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(solid) == 1 and len(dashed) == 1
    assert list(solid[0].get_ydata()) == [1.0, 0.6, 0.4, 0.3]
    assert list(dashed[0].get_xdata()) == [10, 20] or list(dashed[0].get_xdata()) == [10, 30]
    with pytest.raises(ValueError, match="no training logs"):
        plot_loss_curves(pd.DataFrame())


def test_plots_without_their_data_say_why(train_run: Path) -> None:
    res = load_results(train_run)
    with pytest.raises(ValueError, match="success_trial"):
        plot_success_by_trial(res)
    with pytest.raises(ValueError, match="average_reward"):
        plot_average_reward(res)


def test_report_writes_tables_listings_and_plots(half_sweep: Path, train_run: Path, tmp_path: Path) -> None:
    res = load_results([half_sweep, train_run])
    report = write_report(res, tmp_path / "rep", group_by=["decoder"], metrics=["average_reward"])
    names = {Path(p).name for paths in report.files.values() for p in paths}
    assert {"table.md", "table.csv", "table.tex", "table_by_group.csv", "table_by_group.tex", "jobs.csv", "trials.csv", "train_logs.csv", "missing.md",
            "missing.csv", "success_by_trial.png", "success_by_trial.pdf", "average_reward.png",
            "average_reward.pdf", "loss_curves.png", "loss_curves.pdf"} <= names
    missing = (tmp_path / "rep" / "missing.md").read_text()
    assert "`2` · failed" in missing and "CUDA out of memory" in missing and "777_2_0_log.err" in missing
    assert "`3` · not started" in missing and "decoder=fc seed=2" in missing
    assert len(pd.read_csv(tmp_path / "rep" / "jobs.csv")) == 5
