"""Result plots: success by trial index per group, average reward per group, training loss curves.

Figures are built with matplotlib's object API (no pyplot state, no GUI backend needed), returned to
the caller (a notebook shows them) and written as PNG + PDF by `save_figure`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from metamanip.atomic import atomic_path
from metamanip.results.loader import SweepResults
from metamanip.results.tables import (aggregate, default_group_by, resolve_columns, results_table,
                                      success_metrics)

log = logging.getLogger(__name__)


def save_figure(fig: Figure, stem: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 150) -> list[str]:
    """Write `fig` to `<stem>.<fmt>` for each format, atomically; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        paths.append(str(path))
    return paths


def _jobs(results: SweepResults | pd.DataFrame) -> pd.DataFrame:
    jobs = results.jobs if isinstance(results, SweepResults) else results
    return jobs[jobs["has_results"]] if "has_results" in jobs.columns else jobs


def _group_cols(jobs: pd.DataFrame, group_by: Sequence[str] | None) -> list[str]:
    return resolve_columns(jobs, group_by) if group_by is not None else default_group_by(jobs)


def group_label(key: dict[str, Any]) -> str:
    """'decoder=lstm, num_objs=3' for a group key; 'all jobs' for the single group."""
    parts = []
    for col, val in key.items():
        short = col.split(".", 1)[1] if col.startswith(("override.", "choice.", "cfg.")) else col
        parts.append(f"{short}={'—' if val is None or (isinstance(val, float) and np.isnan(val)) else val}")
    return ", ".join(parts) or "all jobs"


def _varying(keys: list[dict[str, Any]]) -> list[str]:
    """Group columns whose value differs between groups (the others only repeat in every label)."""
    cols = list(keys[0]) if keys else []
    varying = [c for c in cols if len({repr(k[c]) for k in keys}) > 1]
    return varying or cols


def plot_success_by_trial(results: SweepResults | pd.DataFrame, group_by: Sequence[str] | None = None,
                          confidence: float = 0.95) -> Figure:
    """Success rate per trial index (mean ± CI over seeds), one line per group.

    A policy that learns from feedback climbs across trials; a flat line means the feedback is ignored.
    """
    jobs = _jobs(results)
    trial_cols = success_metrics([c for c in jobs.columns if jobs[c].notna().any()])
    if not trial_cols:
        raise ValueError("no success_trial_<k> metrics in these jobs: success by trial comes from eval jobs "
                         "(metrics.json / summary.json of metamanip-eval or a pipeline)")
    group_by = _group_cols(jobs, group_by)
    stats = aggregate(jobs, group_by, trial_cols, confidence)
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    keys = [dict(zip(group_by, k)) for k in stats[group_by].drop_duplicates().itertuples(index=False)] \
        if group_by else [{}]
    shown = _varying(keys)
    offsets = np.linspace(-0.08, 0.08, len(keys)) if len(keys) > 1 else [0.0]
    for off, key in zip(offsets, keys):
        sub = stats
        for c, v in key.items():
            sub = sub[sub[c].isna()] if v is None or (isinstance(v, float) and np.isnan(v)) else sub[sub[c] == v]
        sub = sub.set_index("metric").loc[trial_cols]
        x = np.arange(1, len(trial_cols) + 1) + off
        mean, ci = sub["mean"].to_numpy(float), sub["ci"].fillna(0.0).to_numpy(float)
        # a success rate lies in [0, 1]: clip the interval, not the mean
        yerr = np.vstack([mean - np.clip(mean - ci, 0.0, 1.0), np.clip(mean + ci, 0.0, 1.0) - mean])
        ax.errorbar(x, mean, yerr=yerr, marker="o", capsize=3, label=group_label({c: key[c] for c in shown}))
    ax.set_xticks(np.arange(1, len(trial_cols) + 1))
    ax.set_xlabel("trial")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Success by trial (mean ± {confidence * 100:g} % CI over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def plot_average_reward(results: SweepResults | pd.DataFrame, group_by: Sequence[str] | None = None,
                        confidence: float = 0.95, reference: bool = True,
                        metric: str = "average_reward") -> Figure:
    """`metric` per group as bars with CI error bars; the thesis' figures as grey hatched bars."""
    jobs = _jobs(results)
    if metric not in jobs.columns or jobs[metric].isna().all():
        raise ValueError(f"no {metric!r} in these jobs: it comes from eval jobs (metrics.json / summary.json)")
    table = results_table(jobs, group_by=group_by, metrics=[metric], confidence=confidence, reference=reference)
    frame = table.frame
    fig = Figure(figsize=(max(4.0, 1.1 * len(frame) + 1.5), 3.8))
    ax = fig.add_subplot()
    labels, colors, hatches = [], [], []
    ours = frame[frame["source"] == "metamanip"]
    shown = _varying([{c: row[c] for c in table.group_by} for _, row in ours.iterrows()])
    for _, row in frame.iterrows():
        if row["source"] == "metamanip":
            labels.append(group_label({c: row[c] for c in shown}))
            colors.append("tab:blue")
            hatches.append("")
        else:
            labels.append(str(row["source"]).replace("thesis: ", "thesis:\n"))
            colors.append("lightgrey")
            hatches.append("//")
    x = np.arange(len(frame))
    bars = ax.bar(x, frame[metric].fillna(0.0), yerr=frame[f"{metric}_ci"].fillna(0.0), capsize=4,
                  color=colors, edgecolor="black", linewidth=0.6)
    for bar, hatch in zip(bars, hatches):
        bar.set_hatch(hatch)
    ax.set_xticks(x)
    ax.set_xticklabels([lbl.replace(", ", "\n") for lbl in labels], fontsize=7)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{metric.replace('_', ' ')} per group (mean ± {confidence * 100:g} % CI)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_success_vs_compute(results: SweepResults | pd.DataFrame, compute: str = "lm_flops_per_action",
                            metric: str = "average_reward") -> Figure:
    """`metric` against LM compute per action, one point per eval job (a multi-exit policy's budget sweep:
    `eval.early_exit.*`), the points joined in order of compute."""
    jobs = _jobs(results)
    if compute not in jobs.columns or jobs[compute].isna().all():
        raise ValueError(f"no {compute!r} in these jobs: it comes from evaluations of multi-exit policies "
                         "(policy.early_exit)")
    pts = jobs[[compute, metric]].dropna().sort_values(compute)
    fig = Figure(figsize=(4.8, 3.6))
    ax = fig.add_subplot()
    scale, unit = (1e6, "MFLOPs") if compute == "lm_flops_per_action" else (1.0, "")
    ax.plot(pts[compute] / scale, pts[metric], marker="o", color="tab:blue")
    ax.set_xlabel(f"{compute.replace('_', ' ')}" + (f" ({unit})" if unit else ""))
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{metric.replace('_', ' ')} vs LM compute", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def plot_loss_curves(results: SweepResults | pd.DataFrame, group_by: Sequence[str] | None = None,
                     log_scale: bool = True) -> Figure:
    """Training loss against step from every job's `train_log.csv`; one colour per group, val dashed."""
    logs = results.train_logs if isinstance(results, SweepResults) else results
    if logs.empty or "loss" not in logs.columns or "step" not in logs.columns:
        raise ValueError("no training logs (train_log.csv with step and loss columns) in these jobs: loss "
                         "curves come from metamanip-train or pipeline jobs")
    if isinstance(results, SweepResults):
        jobs = results.jobs
        group_by = (resolve_columns(jobs, group_by) if group_by is not None
                    else default_group_by(results.finished if not results.finished.empty else jobs))
        extra = [c for c in group_by if c not in logs.columns]
        if extra:
            logs = logs.merge(jobs[["sweep", "job", *extra]], on=["sweep", "job"], how="left")
    else:
        group_by = resolve_columns(logs, group_by) if group_by else []
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    cmap = {}
    palette = [f"C{i}" for i in range(10)]
    for (sweep, job), run in logs.groupby(["sweep", "job"], sort=False):
        run = run.sort_values("step")
        key = {c: run[c].iloc[0] for c in group_by}
        label = group_label(key)
        first = label not in cmap
        color = cmap.setdefault(label, palette[len(cmap) % len(palette)])
        ax.plot(run["step"], run["loss"], color=color, alpha=0.8, lw=1.2, label=label if first else None)
        if "val_loss" in run.columns and run["val_loss"].notna().any():
            val = run[run["val_loss"].notna()]
            ax.plot(val["step"], val["val_loss"], color=color, ls="--", marker=".", lw=1.0, alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (dashed: validation)")
    loss = logs["loss"].dropna()
    if log_scale and len(loss) and (loss > 0).all() and loss.max() / loss.min() > 10:  # spans a decade
        ax.set_yscale("log")
    ax.set_title("Training loss", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def plot_rl_curves(results: SweepResults | pd.DataFrame, group_by: Sequence[str] | None = None) -> Figure:
    """RL fine-tuning: the rollouts' average reward per episode against env steps, from every
    `metamanip-rl` job's `rl_log.csv`; one colour per group. With a SweepResults, each job's evaluation
    before (BC, dashed line) and after (RL, dot at its last env step) is drawn in the same colour."""
    logs = results.rl_logs if isinstance(results, SweepResults) else results
    if logs.empty or "env_steps" not in logs.columns or "rollout_reward" not in logs.columns:
        raise ValueError("no RL logs (rl_log.csv with env_steps and rollout_reward) in these jobs: RL curves "
                         "come from metamanip-rl jobs")
    jobs = results.jobs if isinstance(results, SweepResults) else None
    if jobs is not None:
        group_by = resolve_columns(jobs, group_by) if group_by is not None else []
        extra = [c for c in group_by if c not in logs.columns]
        if extra:
            logs = logs.merge(jobs[["sweep", "job", *extra]], on=["sweep", "job"], how="left")
    else:
        group_by = resolve_columns(logs, group_by) if group_by else []
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    cmap: dict[str, str] = {}
    palette = [f"C{i}" for i in range(10)]
    for (sweep, job), run in logs.groupby(["sweep", "job"], sort=False):
        run = run.sort_values("env_steps")
        label = group_label({c: run[c].iloc[0] for c in group_by}) if group_by else str(job)
        first = label not in cmap
        color = cmap.setdefault(label, palette[len(cmap) % len(palette)])
        ax.plot(run["env_steps"], run["rollout_reward"], color=color, alpha=0.8, lw=1.2, marker=".",
                label=label if first else None)
        if jobs is not None:
            row = jobs[(jobs["sweep"] == sweep) & (jobs["job"] == job)]
            for col, style in (("bc.average_reward", "bc"), ("rl.average_reward", "rl")):
                if col in row.columns and row[col].notna().any():
                    value = float(row[col].iloc[0])
                    if style == "bc":
                        ax.axhline(value, color=color, ls="--", lw=0.9, alpha=0.7)
                    else:
                        ax.plot([run["env_steps"].iloc[-1]], [value], color=color, marker="o", ms=6)
    ax.set_xlabel("env steps")
    ax.set_ylabel("average reward per episode")
    ax.set_title("RL fine-tuning (line: rollouts; dashed: BC eval; dot: RL eval)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig
