"""Write a sweep's whole report into one directory: tables, job listings and plots.

This is what `metamanip-results` and `notebooks/results.ipynb` call, so that both produce the same
files from the same code.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from metamanip.atomic import atomic_write_text
from metamanip.results.loader import SweepResults
from metamanip.results.plots import (plot_average_reward, plot_loss_curves, plot_rl_curves, plot_success_by_trial,
                                     plot_success_vs_compute, save_figure)
from metamanip.results.tables import ResultTable, combination_table, results_table

log = logging.getLogger(__name__)


@dataclass
class Report:
    """What `write_report` produced: the tables (overall, and per combination or pair), the files by
    name, and what it had to skip (why)."""

    table: ResultTable | None
    combinations: ResultTable | None = None
    files: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def missing_markdown(results: SweepResults) -> str:
    """The jobs without results as a Markdown list (status, error, log), or '' when there are none."""
    missing = results.missing
    if missing.empty:
        return ""
    lines = [f"**{len(missing)} of {len(results.jobs)} job(s) have no results:**", ""]
    for row in missing.itertuples(index=False):
        parts = [f"`{row.job}`", str(row.status)]
        if isinstance(row.overrides, str) and row.overrides:
            parts.append(f"overrides `{row.overrides}`")
        if isinstance(row.error, str) and row.error.strip():
            first = row.error.strip().splitlines()[0]  # the whole text is in missing.csv
            parts.append(f"error: {first[:300]}{' …' if len(first) > 300 else ''}")
        parts.append(f"log: `{row.log_path}`" if isinstance(row.log_path, str) and row.log_path else "no log found")
        lines.append("- " + " · ".join(parts))
    return "\n".join(lines) + "\n"


def write_report(results: SweepResults, out_dir: str | os.PathLike, group_by: Sequence[str] | None = None,
                 metrics: Sequence[str] | None = None, confidence: float = 0.95,
                 reference: bool = True) -> Report:
    """Write `table.{md,csv,tex}`, `table_by_group.{md,csv,tex}` (per combination or pair), `jobs.csv`,
    `trials.csv`, `train_logs.csv`, `missing.{md,csv}` and the plots (PNG + PDF) into `out_dir`. What the
    sweep has no data for is skipped with a reason.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(table=None)
    if results.finished.empty:
        report.skipped["table"] = "no job has results yet"
    else:
        report.table = results_table(results, group_by=group_by, metrics=metrics, confidence=confidence,
                                     reference=reference)
        report.files["table"] = list(report.table.write(out / "table").values())
        try:
            report.combinations = combination_table(results, group_by=report.table.group_by, metrics=metrics,
                                                    confidence=confidence)
            report.files["table_by_group"] = list(report.combinations.write(out / "table_by_group").values())
        except (ValueError, KeyError) as e:
            report.skipped["table_by_group"] = str(e)
    atomic_write_text(out / "jobs.csv", results.jobs.to_csv(index=False))
    report.files["jobs"] = [str(out / "jobs.csv")]
    if not results.trials.empty:
        atomic_write_text(out / "trials.csv", results.trials.to_csv(index=False))
        report.files["trials"] = [str(out / "trials.csv")]
    if not results.train_logs.empty:
        atomic_write_text(out / "train_logs.csv", results.train_logs.to_csv(index=False))
        report.files["train_logs"] = [str(out / "train_logs.csv")]
    if not results.rl_logs.empty:
        atomic_write_text(out / "rl_logs.csv", results.rl_logs.to_csv(index=False))
        report.files["rl_logs"] = [str(out / "rl_logs.csv")]
    if not results.missing.empty:
        atomic_write_text(out / "missing.md", missing_markdown(results))
        atomic_write_text(out / "missing.csv", results.missing.to_csv(index=False))
        report.files["missing"] = [str(out / "missing.md"), str(out / "missing.csv")]
    group = report.table.group_by if report.table is not None else group_by
    plots = {
        "success_by_trial": lambda: plot_success_by_trial(results, group_by=group, confidence=confidence),
        "average_reward": lambda: plot_average_reward(results, group_by=group, confidence=confidence,
                                                      reference=reference),
        "loss_curves": lambda: plot_loss_curves(results, group_by=group),
        "rl_curves": lambda: plot_rl_curves(results),
        "success_vs_compute": lambda: plot_success_vs_compute(results),
    }
    for name, make in plots.items():
        try:
            fig = make()
        except ValueError as e:
            report.skipped[name] = str(e)
            log.info("plot %s skipped: %s", name, e)
            continue
        report.files[name] = save_figure(fig, out / name)
    return report
