# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Results of a sweep
#
# Loads one or several sweep (or run) directories with `metamanip.results`, shows the thesis-style
# table (mean ± 95 % CI over seeds, the thesis' figures as reference rows where the setting matches),
# the jobs that have no results, and the plots. Everything is computed by the module; this notebook
# only calls it. The files (Markdown, CSV, LaTeX, PNG, PDF) are written to `OUT_DIR`.
#
# Parameters come from the environment so the notebook runs headless (tests, `jupyter nbconvert`):
# `METAMANIP_SWEEP` (directories separated by `:`; default: the newest sweep under `logs/`),
# `METAMANIP_GROUP_BY` (space-separated columns; default: what differs between jobs),
# `METAMANIP_METRICS` (space-separated; default: the thesis' metrics and success per trial),
# `METAMANIP_RESULTS_OUT` (default: `<first sweep>/results`).

# %% tags=["parameters"]
import os
from pathlib import Path

SWEEP_DIRS = [p for p in os.environ.get("METAMANIP_SWEEP", "").split(os.pathsep) if p]
GROUP_BY = os.environ.get("METAMANIP_GROUP_BY", "").split() or None
METRICS = os.environ.get("METAMANIP_METRICS", "").split() or None
OUT_DIR = os.environ.get("METAMANIP_RESULTS_OUT") or None
LOG_DIR = Path(os.environ.get("METAMANIP_ROOT", Path.cwd().parent)) / "logs"

# %%
import pandas as pd
from IPython.display import Image, Markdown, display

from metamanip.results import latest_sweep, load_results, missing_markdown, write_report

if not SWEEP_DIRS:
    SWEEP_DIRS = [str(latest_sweep(LOG_DIR))]
OUT_DIR = OUT_DIR or str(Path(SWEEP_DIRS[0]) / "results")
results = load_results(SWEEP_DIRS)
print(f"{len(results.finished)} of {len(results.jobs)} job(s) with results under {', '.join(SWEEP_DIRS)}")
for warning in results.warnings:
    print("warning:", warning)

# %% [markdown]
# ## Jobs
#
# One row per job: what it ran (setting, objects, backbone, decoder, seed, overrides), how it ended,
# and its metrics. `results.jobs` also holds the whole config under `cfg.*` and Hydra's choices under
# `choice.*`.

# %%
shown = [c for c in ["job", "status", "overrides", "setting", "num_objs", "decoder", "seed", *results.metrics]
         if c in results.jobs.columns]
with pd.option_context("display.max_columns", 30, "display.width", 200):
    display(results.jobs[shown])

# %%
display(Markdown(missing_markdown(results) or "Every job has results."))

# %% [markdown]
# ## Table
#
# Mean ± 95 % confidence interval (Student t) over the seeds of each group.

# %%
report = write_report(results, OUT_DIR, group_by=GROUP_BY, metrics=METRICS)
if report.table is not None:
    display(Markdown(report.table.to_markdown()))

# %% [markdown]
# Per object combination (Explore) or task pair (Combi-Explore), as the thesis' CSV columns:

# %%
if report.combinations is not None:
    display(Markdown(report.combinations.to_markdown()))

# %% [markdown]
# ## Plots

# %%
for name in ("success_by_trial", "average_reward", "loss_curves", "rl_curves"):
    png = [p for p in report.files.get(name, []) if p.endswith(".png")]
    if png:
        display(Markdown(f"**{name.replace('_', ' ')}**"))
        display(Image(filename=png[0]))
    else:
        display(Markdown(f"_{name.replace('_', ' ')}: {report.skipped.get(name, 'not drawn')}_"))

# %%
print(f"files written to {OUT_DIR}:")
for name, paths in report.files.items():
    print(f"  {name}: {', '.join(Path(p).name for p in paths)}")
