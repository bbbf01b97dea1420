"""Results: load sweeps into pandas, build thesis-style tables and plots, write a report.

    from metamanip.results import load_results, results_table, write_report
    res = load_results(["logs/pipeline/multiruns/2026-11-21_17-00-00"])
    print(results_table(res, group_by=["decoder"]).to_markdown())
    res.missing                      # jobs without results: status, error, log path
"""
from metamanip.results.loader import NoRunsError, SweepResults, find_job_dirs, latest_sweep, load_job, load_results
from metamanip.results.plots import (plot_average_reward, plot_loss_curves, plot_rl_curves, plot_success_by_trial,
                                     save_figure)
from metamanip.results.reference import THESIS_RESULTS, ReferenceResult, matching_references
from metamanip.results.report import Report, missing_markdown, write_report
from metamanip.results.thesis_csv import load_thesis_csv
from metamanip.results.tables import (ResultTable, aggregate, combination_table, default_group_by, mean_ci,
                                      results_table, trial_figures)

__all__ = [
    "NoRunsError", "SweepResults", "find_job_dirs", "latest_sweep", "load_job", "load_results",
    "plot_average_reward", "plot_loss_curves", "plot_rl_curves", "plot_success_by_trial", "save_figure",
    "THESIS_RESULTS", "ReferenceResult", "matching_references",
    "Report", "missing_markdown", "write_report", "load_thesis_csv",
    "ResultTable", "aggregate", "combination_table", "default_group_by", "mean_ci", "results_table", "trial_figures",
]
