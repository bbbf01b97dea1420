"""Thesis-style result tables: mean ± 95 % confidence interval over seeds, grouped by any columns.

`results_table(results, group_by=[...])` aggregates the finished jobs of a `SweepResults` (or a jobs
frame) per group, appends the thesis' published figures where a group's setting matches, and renders
the result as Markdown, CSV (numbers, for machines) or LaTeX (booktabs, for the paper).
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from metamanip.atomic import atomic_write_text
from metamanip.results.loader import KEY_COLUMNS, SweepResults
from metamanip.results.reference import THESIS_RESULTS, ReferenceResult, matching_references

log = logging.getLogger(__name__)

#: The thesis' metrics, always tabulated when present; success per trial index follows them.
HEADLINE_METRICS: tuple[str, ...] = ("average_reward", "ratio_reward_found", "episode_length")

_DISPLAY = {"average_reward": "avg reward", "ratio_reward_found": "reward found", "episode_length": "ep. length",
            "total_reward": "total reward", "train_loss": "train loss", "val_loss": "val loss",
            "samples_per_s": "samples/s"}
_DIGITS = {"episode_length": 1, "total_reward": 1, "samples_per_s": 1, "steps": 0}

SUCCESS_RE = re.compile(r"success_trial_(\d+)")


def mean_ci(values: Sequence[float] | np.ndarray | pd.Series, confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean, half-width of the two-sided `confidence` interval (Student t, n-1 dof) and n.

    NaNs are ignored. With one value the half-width is NaN (no spread to estimate), with none the
    mean is NaN too.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}; e.g. 0.95 for a 95 % interval")
    x = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").dropna(), dtype=float)
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, 1
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    return mean, float(stats.t.ppf(0.5 + confidence / 2.0, n - 1) * sem), n


def success_metrics(columns: Sequence[str]) -> list[str]:
    """`success_trial_k` columns in trial order."""
    found = [(int(m.group(1)), c) for c in columns if (m := SUCCESS_RE.fullmatch(str(c)))]
    return [c for _, c in sorted(found)]


def default_metrics(jobs: pd.DataFrame, metrics: Sequence[str] | None = None) -> list[str]:
    """The headline metrics and success per trial present in `jobs`; else every metric column given."""
    cols = [c for c in (*HEADLINE_METRICS, *success_metrics(jobs.columns)) if c in jobs.columns
            and jobs[c].notna().any()]
    if cols:
        return cols
    return [m for m in (metrics or []) if m in jobs.columns and jobs[m].notna().any()]


def default_group_by(jobs: pd.DataFrame) -> list[str]:
    """Columns that tell the groups apart: setting and num_objs, key columns and overrides that vary.

    The seed is never a default group column (seeds are what a group aggregates over).
    """
    chosen: list[str] = []
    for col in KEY_COLUMNS:
        if col == "seed" or col not in jobs.columns or jobs[col].isna().all():
            continue
        if col in ("setting", "num_objs") or _nunique(jobs[col]) > 1:
            chosen.append(col)
    for col in sorted(c for c in jobs.columns if c.startswith("override.")):
        key = col[len("override."):]
        if key == "seed" or key.split(".")[-1] in KEY_COLUMNS or key.endswith("seed"):
            continue
        if _nunique(jobs[col]) > 1:
            chosen.append(col)
    return chosen


def resolve_columns(jobs: pd.DataFrame, names: Sequence[str]) -> list[str]:
    """Map user-given names to columns: exact, else `override.`, `choice.` or `cfg.` + name."""
    out = []
    for name in names:
        for cand in (name, f"override.{name}", f"choice.{name}", f"cfg.{name}"):
            if cand in jobs.columns:
                out.append(cand)
                break
        else:
            known = [c for c in jobs.columns if not c.startswith("cfg.")]
            raise KeyError(f"unknown column {name!r} to group by; use one of {', '.join(known)} "
                           f"or any cfg.<dotted.key> of the job config")
    return out


def aggregate(jobs: pd.DataFrame, group_by: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
              confidence: float = 0.95) -> pd.DataFrame:
    """Tidy statistics: one row per group × metric with mean, ci (half-width), ci_low, ci_high, std, n.

    Only jobs with results count; a group's n for a metric is the number of its jobs that report it.
    """
    done = jobs[jobs["has_results"]] if "has_results" in jobs.columns else jobs
    group_by = list(group_by) if group_by is not None else default_group_by(done)
    metrics = list(metrics) if metrics is not None else default_metrics(done)
    missing = [m for m in metrics if m not in done.columns]
    if missing:
        raise KeyError(f"metric(s) {', '.join(missing)} not in the results; available: "
                       f"{', '.join(c for c in done.columns if pd.api.types.is_numeric_dtype(done[c]))}")
    rows = []
    for key, group in _groups(done, group_by):
        for metric in metrics:
            mean, ci, n = mean_ci(group[metric], confidence)
            vals = pd.to_numeric(group[metric], errors="coerce").dropna()
            rows.append({**key, "metric": metric, "mean": mean, "ci": ci, "ci_low": mean - ci,
                         "ci_high": mean + ci, "std": float(vals.std(ddof=1)) if n > 1 else math.nan,
                         "n": n, "jobs": len(group)})
    return pd.DataFrame(rows, columns=[*group_by, "metric", "mean", "ci", "ci_low", "ci_high", "std", "n", "jobs"])


def _groups(done: pd.DataFrame, group_by: list[str]):
    if not group_by:
        yield {}, done
        return
    keyed = done.copy()
    for col in group_by:  # lists/tuples in cells (unlikely keys) must be hashable; NaN groups kept
        keyed[col] = keyed[col].map(lambda v: tuple(v) if isinstance(v, list) else v)
    try:
        grouped = keyed.groupby(group_by, dropna=False, sort=True)
        items = list(grouped)
    except TypeError:  # mixed types in a key column cannot be sorted
        items = list(keyed.groupby(group_by, dropna=False, sort=False))
    for values, group in items:
        values = values if isinstance(values, tuple) else (values,)
        yield {c: (None if _isnan(v) else v) for c, v in zip(group_by, values)}, group


@dataclass
class ResultTable:
    """A grouped table: `frame` holds numbers (mean `<metric>`, half-width `<metric>_ci`, `<metric>_n`)."""

    frame: pd.DataFrame
    group_by: list[str]
    metrics: list[str]
    confidence: float = 0.95
    common: dict[str, Any] = field(default_factory=dict)
    references: list[ReferenceResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def display_frame(self) -> pd.DataFrame:
        """One string per cell: 'mean ± ci', '(n=k)' where a metric has fewer values than the group."""
        out = pd.DataFrame()
        out["source"] = self.frame["source"]
        for col in self.group_by:
            out[_short(col)] = self.frame[col].map(_cell)
        out["n"] = self.frame["n"].map(lambda v: "" if _isnan(v) else str(int(v)))
        for m in self.metrics:
            out[_display(m)] = [
                _fmt(mean, ci, mn, total, _DIGITS.get(m, 4 if "loss" in m else 2))
                for mean, ci, mn, total in zip(self.frame[m], self.frame[f"{m}_ci"], self.frame[f"{m}_n"],
                                               self.frame["n"])]
        return out

    def caption(self) -> str:
        pct = f"{self.confidence * 100:g}"
        text = f"mean ± {pct} % CI (Student t) over seeds; n = jobs per group"
        if self.common:
            text += "; every metamanip row: " + ", ".join(f"{_short(k)}={_cell(v)}" for k, v in self.common.items())
        return text

    def to_markdown(self) -> str:
        df = self.display_frame()
        header = "| " + " | ".join(df.columns) + " |"
        sep = "|" + "|".join("---" if i < len(self.group_by) + 1 else "---:" for i in range(len(df.columns))) + "|"
        lines = [header, sep]
        for row in df.itertuples(index=False):
            lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
        notes = [f"_{self.caption()}_", *[f"_note: {n}_" for n in self.notes]]
        for ref in self.references:
            notes.append(f"_{ref.label}: {ref.source}, {ref.note}_")
        return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"

    def to_latex(self) -> str:
        df = self.display_frame()
        ncols = len(df.columns)
        align = "l" * (len(self.group_by) + 1) + "r" * (ncols - len(self.group_by) - 1)
        lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
                 " & ".join(_latex_escape(c) for c in df.columns) + r" \\", r"\midrule"]
        ours = (self.frame["source"] == "metamanip").tolist()
        for i, row in enumerate(df.itertuples(index=False)):
            if i > 0 and ours[i - 1] and not ours[i]:
                lines.append(r"\midrule")
            lines.append(" & ".join(_latex_cell(str(v)) for v in row) + r" \\")
        caption = " ".join([self.caption() + ".", *[f"{ref.label}: {ref.note}." for ref in self.references],
                            *[f"Note: {n}." for n in self.notes]])
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_latex_escape(caption)}}}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        return self.frame.to_csv(index=False)

    def write(self, stem: str | os.PathLike) -> dict[str, str]:
        """Write `<stem>.md`, `<stem>.csv` and `<stem>.tex` atomically; returns format -> path."""
        stem = os.fspath(stem)
        paths = {"markdown": f"{stem}.md", "csv": f"{stem}.csv", "latex": f"{stem}.tex"}
        atomic_write_text(paths["markdown"], self.to_markdown())
        atomic_write_text(paths["csv"], self.to_csv())
        atomic_write_text(paths["latex"], self.to_latex())
        return paths


def results_table(results: SweepResults | pd.DataFrame, group_by: Sequence[str] | None = None,
                  metrics: Sequence[str] | None = None, confidence: float = 0.95,
                  reference: bool = True) -> ResultTable:
    """Mean ± CI over seeds per group, plus the thesis' figures where a group's setting matches.

    `group_by` takes any job column (short names resolve to `override.`/`choice.`/`cfg.` columns);
    by default the columns that tell groups apart (`default_group_by`). `metrics` defaults to the
    thesis' metrics and success per trial index.
    """
    jobs = results.jobs if isinstance(results, SweepResults) else results
    all_metrics = results.metrics if isinstance(results, SweepResults) else None
    done = jobs[jobs["has_results"]] if "has_results" in jobs.columns else jobs
    if done.empty:
        raise ValueError("no job has results yet (all failed, running or not started); see the missing-jobs "
                         "listing for their status and log paths")
    group_by = resolve_columns(done, group_by) if group_by is not None else default_group_by(done)
    metrics = list(metrics) if metrics is not None else default_metrics(done, all_metrics)
    if not metrics:
        raise ValueError("the finished jobs report no numeric metric to tabulate; check their metrics.json")
    missing = [m for m in metrics if m not in done.columns]
    if missing:
        raise KeyError(f"metric(s) {', '.join(missing)} not in the results; available: "
                       f"{', '.join(all_metrics or default_metrics(done))}")
    # a job reporting none of these metrics (a train job in an eval table) is not part of any group
    done = done[done[metrics].notna().any(axis=1)]
    rows = []
    notes: list[str] = []
    for key, group in _groups(done, group_by):
        row: dict[str, Any] = {"source": "metamanip", **key, "n": len(group)}
        if "seed" in group.columns and "seed" not in group_by:
            seeds = group["seed"].dropna()
            repeated = sorted({_cell(v) for v in seeds[seeds.duplicated()]})
            if repeated:
                where = ", ".join(f"{_short(c)}={_cell(v)}" for c, v in key.items()) or "all jobs"
                notes.append(f"{where}: seed(s) {', '.join(repeated)} ran more than once; the interval counts "
                             f"each run as an independent sample")
        for m in metrics:
            row[m], row[f"{m}_ci"], row[f"{m}_n"] = mean_ci(group[m], confidence)
        rows.append(row)
    refs: list[ReferenceResult] = []
    if reference:
        for key, group in _groups(done, group_by):
            for ref in matching_references(_known(group, key)):
                if ref not in refs:
                    refs.append(ref)
        for ref in refs:
            row = {"source": ref.label, **{c: ref.match.get(c) for c in group_by}, "n": ref.n}
            for m in metrics:
                mean, ci, n = mean_ci(ref.runs.get(m, ()), confidence)
                row[m], row[f"{m}_ci"], row[f"{m}_n"] = mean, ci, n
            rows.append(row)
    frame = pd.DataFrame(rows, columns=["source", *group_by, "n",
                                        *[c for m in metrics for c in (m, f"{m}_ci", f"{m}_n")]])
    common = {c: _only(done[c]) for c in KEY_COLUMNS
              if c in done.columns and c not in group_by and c != "seed" and _nunique(done[c]) == 1
              and done[c].notna().all()}
    return ResultTable(frame=frame, group_by=group_by, metrics=metrics, confidence=confidence,
                       common=common, references=refs, notes=notes)


def trial_figures(trials: pd.DataFrame, by: Sequence[str] = ("sweep", "job", "group")) -> pd.DataFrame:
    """The thesis figures and success per trial recomputed from trials.csv rows, one row per `by` key.

    Same definitions as summary.json: average_reward = rewarded trials per episode, ratio_reward_found =
    episodes with a rewarded trial, episode_length = steps per episode, success_trial_k = episodes whose
    trial k (1-based) was rewarded.
    """
    need = {"episode", "trial", "reward", "steps", *by}
    if trials.empty or not need <= set(trials.columns):
        raise ValueError(f"no per-trial rows with columns {sorted(need)}: per-combination figures come from the "
                         "trials.csv of eval jobs")
    by = list(by)
    episodes = trials.groupby([*by, "episode"], dropna=False).agg(reward=("reward", "sum"), steps=("steps", "sum"))
    out = episodes.groupby(by, dropna=False).agg(
        episodes=("reward", "size"), total_reward=("reward", "sum"), average_reward=("reward", "mean"),
        ratio_reward_found=("reward", lambda r: float((r > 0).mean())), episode_length=("steps", "mean"))
    per_trial = (trials.assign(hit=trials["reward"] > 0)
                 .groupby([*by, "trial"], dropna=False)["hit"].sum().unstack("trial", fill_value=0))
    for k in sorted(per_trial.columns):
        out[f"success_trial_{int(k)}"] = per_trial[k] / out["episodes"]
    return out.reset_index()


def combination_table(results: SweepResults, group_by: Sequence[str] | None = None,
                      metrics: Sequence[str] | None = None, confidence: float = 0.95) -> ResultTable:
    """Like `results_table`, per object combination (Explore) or task pair (Combi) as well: the thesis'
    CSV columns, now with mean ± CI over seeds."""
    done = results.finished
    if done.empty:
        raise ValueError("no job has results yet; see the missing-jobs listing")
    group_by = resolve_columns(done, group_by) if group_by is not None else default_group_by(done)
    trials = results.trials
    if not trials.empty and {"sweep", "job"} <= set(trials.columns):  # finished jobs only
        keys = set(zip(done["sweep"], done["job"]))
        trials = trials[[k in keys for k in zip(trials["sweep"], trials["job"])]]
    figures = trial_figures(trials)
    extra = [c for c in group_by if c not in figures.columns]
    figures = figures.merge(done[["sweep", "job", *extra]], on=["sweep", "job"], how="left")
    figures["has_results"] = True
    return results_table(figures, group_by=[*group_by, "group"], metrics=metrics, confidence=confidence,
                         reference=False)


def _known(group: pd.DataFrame, key: dict[str, Any]) -> dict[str, Any]:
    """What a group's jobs agree on, for matching reference results."""
    known = {c: _only(group[c]) for c in KEY_COLUMNS if c in group.columns and _nunique(group[c]) == 1}
    known.update({k: v for k, v in key.items() if k in KEY_COLUMNS})
    if known.get("num_trials") is None:
        trials = success_metrics([c for c in group.columns if group[c].notna().any()])
        if trials:
            known["num_trials"] = len(trials)
    return known


def _nunique(s: pd.Series) -> int:
    return s.map(lambda v: tuple(v) if isinstance(v, list) else v).nunique(dropna=True)


def _only(s: pd.Series) -> Any:
    vals = s.dropna()
    return vals.iloc[0] if len(vals) else None


def _isnan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _cell(v: Any) -> str:
    if _isnan(v):
        return "—"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _short(col: str) -> str:
    return col.split(".", 1)[1] if col.startswith(("override.", "choice.", "cfg.")) else col


def _display(metric: str) -> str:
    m = SUCCESS_RE.fullmatch(metric)
    if m:
        return f"success T{m.group(1)}"
    return _DISPLAY.get(metric, metric)


def _fmt(mean: float, ci: float, n: float, total: float, digits: int) -> str:
    if _isnan(mean):
        return "—"
    text = f"{mean:.{digits}f}" if _isnan(ci) else f"{mean:.{digits}f} ± {ci:.{digits}f}"
    if not _isnan(n) and not _isnan(total) and int(n) < int(total):
        text += f" (n={int(n)})"
    return text


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return out.replace("±", r"$\pm$").replace("—", "--")


def _latex_cell(text: str) -> str:
    return _latex_escape(text)


__all__ = ["HEADLINE_METRICS", "ResultTable", "aggregate", "combination_table", "default_group_by", "default_metrics",
           "mean_ci", "resolve_columns", "results_table", "success_metrics", "trial_figures", "THESIS_RESULTS"]
