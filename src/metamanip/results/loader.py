"""Load one or several sweep (or single-run) directories into tidy pandas frames.

A *job* is a directory Hydra ran a task in (it holds `.hydra/`), or, outside Hydra, a directory with a
`status.json`, `metrics.json` or `summary.json`. Each job becomes one row: where it lives, its status,
the config choices that identify it (setting, num_objs, backbone, decoder, trial limits, seed,
overrides), the whole config flattened under `cfg.`, Hydra's recorded choices under `choice.`, and
every metric it wrote. Pipeline jobs keep their stages in `collect/`, `train/`, `eval/` subdirs; their
files are attributed to the pipeline job. Jobs without results stay in the frame (listed by
`SweepResults.missing` with their status and log path) so that a half-finished sweep is visible, and a
multirun whose `multirun.yaml` promises jobs that never started gets a row for each of those too.
"""
from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
import yaml

from metamanip.errors import UserError

log = logging.getLogger(__name__)

#: Columns that identify what a job ran; filled from summary.json, Hydra's choices, then the config.
KEY_COLUMNS: tuple[str, ...] = (
    "setting", "num_objs", "backbone", "decoder", "trial_limits", "split", "feedback", "agent",
    "num_trials", "trial_steps", "num_resets", "seed",
)

#: Columns that describe where a job is and how it ended.
JOB_COLUMNS: tuple[str, ...] = (
    "sweep", "job", "job_num", "job_id", "task_name", "status", "has_results", "error", "log_path",
    "overrides", "attempt", "job_dir",
)

#: Stage subdirectories of a pipeline job, searched (in this order) for files the job itself lacks.
STAGE_DIRS: tuple[str, ...] = ("eval", "eval_after", "train", "collect")  # eval_after: an RL job's final evaluation

_SKIP_DIRS = {".hydra", ".submitit", "wandb", "checkpoints", "videos", "__pycache__", "results"}
_JOB_MARKERS = ("status.json", "metrics.json", "summary.json")


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: big sweeps load faster


class NoRunsError(UserError, ValueError):
    """Raised when a directory holds no job at all (nothing to tabulate)."""


@dataclass
class SweepResults:
    """Everything loaded from the given directories.

    `jobs`: one row per job (with or without results). `trials`: every `trials.csv` row, tagged with
    the job's key columns. `train_logs`: every `train_log.csv` row, tagged likewise. `rl_logs`: every
    `rl_log.csv` row of `metamanip-rl` jobs (one per PPO iteration), tagged likewise. `metrics`: the
    metric column names. `warnings`: human-readable notes (different metric sets, unreadable files).
    """

    roots: list[Path]
    jobs: pd.DataFrame
    trials: pd.DataFrame
    train_logs: pd.DataFrame
    metrics: list[str]
    warnings: list[str] = field(default_factory=list)
    rl_logs: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def finished(self) -> pd.DataFrame:
        """Jobs that wrote results (the rows tables aggregate)."""
        return self.jobs[self.jobs["has_results"]].reset_index(drop=True)

    @property
    def missing(self) -> pd.DataFrame:
        """Jobs without results, with their status, error and log path (never hidden)."""
        cols = [c for c in ("sweep", "job", "job_num", "status", "error", "overrides", "log_path", "job_dir")
                if c in self.jobs.columns]
        return self.jobs.loc[~self.jobs["has_results"], cols].reset_index(drop=True)


def load_results(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> SweepResults:
    """Load every job under one or several sweep / run directories.

    Raises `FileNotFoundError` for a path that does not exist and `NoRunsError` when no directory
    holds a job. Directories that hold none while others do are reported in `warnings`.
    """
    roots = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not roots:
        raise NoRunsError("no directory given: pass one or more sweep or run directories")
    rows: list[dict[str, Any]] = []
    trials: list[pd.DataFrame] = []
    train_logs: list[pd.DataFrame] = []
    rl_logs: list[pd.DataFrame] = []
    warnings: list[str] = []
    seen_dirs: dict[Path, Path] = {}
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"results directory {root} does not exist; pass a sweep dir "
                                    f"(e.g. logs/eval/multiruns/<date>) or a run dir")
        if not root.is_dir():
            raise NotADirectoryError(f"{root} is a file; pass the directory that holds the runs")
        found = _load_root(root, warnings)
        if not found:
            warnings.append(f"{root}: no jobs found (no .hydra/, status.json or metrics.json below it)")
        for row, job_trials, job_log in found:
            real = Path(row["job_dir"]).resolve()
            if real in seen_dirs:  # overlapping arguments (a sweep and its parent dir): count each job once
                warnings.append(f"{row['job_dir']}: already loaded from {seen_dirs[real]}; counted once")
                continue
            seen_dirs[real] = root
            rows.append(row)
            if job_trials is not None:
                trials.append(job_trials)
            if job_log is not None:
                train_logs.append(job_log)
            rl_log = _read_csv(_find_file(real, "rl_log.csv", stages=False), warnings)
            if rl_log is not None:
                rl_log.insert(0, "job", row["job"])
                rl_log.insert(0, "sweep", row["sweep"])
                rl_logs.append(rl_log)
    if not rows:
        raise NoRunsError(
            f"no runs found under {', '.join(map(str, roots))}: expected job directories with .hydra/ "
            f"(Hydra runs), or status.json / metrics.json; point at a sweep dir such as "
            f"logs/<task>/multiruns/<date> or a run dir")
    jobs = pd.DataFrame(rows)
    metrics = _metric_columns(rows)
    jobs = _order_columns(jobs, metrics)
    warnings.extend(_metric_set_warnings(jobs, metrics))
    jobs = jobs.drop(columns="_metric_keys")
    for w in warnings:
        log.warning(w)
    key_cols = [c for c in ("sweep", "job", *KEY_COLUMNS) if c in jobs.columns]
    return SweepResults(
        roots=roots,
        jobs=jobs,
        trials=_tag(trials, jobs, key_cols),
        train_logs=_tag(train_logs, jobs, key_cols),
        metrics=metrics,
        warnings=warnings,
        rl_logs=_tag(rl_logs, jobs, key_cols),
    )


# ----------------------------------------------------------------------------------------- discovery


def latest_sweep(log_dir: str | os.PathLike) -> Path:
    """The newest sweep (`<log_dir>/<task>/multiruns/<date>`) or, failing that, run dir under `log_dir`.

    For notebooks opened without a sweep named: show the last thing that ran.
    """
    log_dir = Path(log_dir)
    for pattern in ("*/multiruns/*", "*/runs/*"):
        cands = [p for p in log_dir.glob(pattern) if p.is_dir()]
        if cands:
            return max(cands, key=lambda p: (p.name, p.stat().st_mtime))
    raise NoRunsError(f"no sweep or run under {log_dir} (expected <task>/multiruns/<date> or <task>/runs/<date>); "
                      f"run one, or name the directory (METAMANIP_SWEEP=... for the notebook)")


def find_job_dirs(root: str | os.PathLike) -> list[Path]:
    """Job directories under `root` (itself included), in a stable, numeric-aware order."""
    return _walk(Path(root))[0]


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """(job dirs, sweep dirs holding a multirun.yaml) under `root`, without entering job dirs."""
    found: list[Path] = []
    sweeps: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if (here / ".hydra").is_dir() or any(m in filenames for m in _JOB_MARKERS):
            found.append(here)
            dirnames[:] = []  # stages of a pipeline job belong to it
            continue
        if "multirun.yaml" in filenames:
            sweeps.append(here)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
    order = lambda p: _natural_key(p.relative_to(root).as_posix())  # noqa: E731
    return sorted(found, key=order), sorted(sweeps, key=order)


def _natural_key(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _load_root(root: Path, warnings: list[str]) -> list[tuple[dict, pd.DataFrame | None, pd.DataFrame | None]]:
    out = []
    seen_nums: dict[Path, set[int]] = {}
    job_dirs, sweep_dirs = _walk(root)
    for job_dir in job_dirs:
        row, job_trials, job_log = load_job(job_dir, root=root, warnings=warnings)
        out.append((row, job_trials, job_log))
        if row.get("job_num") is not None:
            seen_nums.setdefault(job_dir.parent, set()).add(int(row["job_num"]))
    for sweep_dir in sweep_dirs:
        for row in _unstarted_jobs(sweep_dir, root, seen_nums.get(sweep_dir, set()), warnings):
            out.append((row, None, None))
    return sorted(out, key=lambda r: _natural_key(r[0]["job"]))


# ----------------------------------------------------------------------------------------- one job


def load_job(job_dir: str | os.PathLike, root: str | os.PathLike | None = None,
             warnings: list[str] | None = None) -> tuple[dict[str, Any], pd.DataFrame | None, pd.DataFrame | None]:
    """Read one job directory: its row, its trials (or None) and its training log (or None)."""
    job_dir = Path(job_dir)
    root = Path(root) if root is not None else job_dir
    warnings = warnings if warnings is not None else []
    hydra_cfg = _read_yaml(job_dir / ".hydra" / "hydra.yaml", warnings) or {}
    hydra_node = hydra_cfg.get("hydra", {}) if isinstance(hydra_cfg, dict) else {}
    job_node = hydra_node.get("job", {}) or {}
    choices = (hydra_node.get("runtime", {}) or {}).get("choices", {}) or {}
    overrides = _read_yaml(job_dir / ".hydra" / "overrides.yaml", warnings)
    if not isinstance(overrides, list):
        overrides = list((hydra_node.get("overrides", {}) or {}).get("task", []) or [])
    config = _read_yaml(job_dir / "resolved_config.yaml", warnings)
    if not isinstance(config, dict):
        config = _read_yaml(job_dir / ".hydra" / "config.yaml", warnings)
    config = config if isinstance(config, dict) else {}

    status = _read_json(_find_file(job_dir, "status.json", stages=False), warnings) or {}
    metrics = _read_json(_find_file(job_dir, "metrics.json", stages=False), warnings)
    summary_path = _find_file(job_dir, "summary.json")
    summary = _read_json(summary_path, warnings) or {}
    if metrics is None:
        metrics = _stage_metrics(job_dir, warnings)
    metrics = _flatten(metrics or {})
    for k, v in _summary_metrics(summary).items():
        metrics.setdefault(k, v)

    rel = job_dir.relative_to(root).as_posix() if job_dir != root else "."
    job_num = job_node.get("num")
    row: dict[str, Any] = {
        "sweep": str(root),
        "job": rel,
        "job_num": int(job_num) if isinstance(job_num, (int, str)) and str(job_num).isdigit() else None,
        "job_id": None if job_node.get("id") is None else str(job_node.get("id")),
        "task_name": config.get("task_name") or job_node.get("name"),
        "job_dir": str(job_dir),
        "overrides": " ".join(str(o) for o in overrides),
    }
    state = status.get("status")
    error = status.get("error")
    folder = status.get("submitit_folder")
    row["job_id"] = str(status.get("submitit_job_id") or row["job_id"] or "") or None
    row["attempt"] = status.get("attempt")
    if state is None or state == "running":
        crashed = _submitit_error(job_dir, root, row["job_id"], folder)
        if crashed is not None:
            state, error = "failed", error or crashed
    if state == "running" and _is_gone(status):
        state = "killed"
        error = error or (f"process {status.get('pid')} on {status.get('host')} ended without recording it "
                          f"(killed, out of memory or a reboot); run the job again in its dir to resume")
    if state is None:
        state = "done" if _numeric(metrics) else "unknown"
    if state == "done" and summary.get("complete") is False:
        state = "incomplete"
        error = error or f"{summary_path}: the evaluation stopped before its last episode; rerun the job to resume it"
    # Only finished jobs count: the figures of a failed, running or cut-short job are partial.
    has_results = bool(_numeric(metrics)) and state == "done"
    if _numeric(metrics) and not has_results:
        warnings.append(f"{job_dir}: status {state!r}, its metrics are partial and left out of the tables")
    row.update(status=state, has_results=has_results, error=error,
               log_path=_log_path(job_dir, root, row["job_id"], job_node.get("name"), failed=not has_results,
                                  folder=folder))
    for group, choice in choices.items():
        if not str(group).startswith("hydra/") and group != "hydra":
            row[f"choice.{group}"] = choice
    for ov in overrides:
        key, sep, value = str(ov).partition("=")
        if sep and not key.startswith(("hydra.", "hydra/", "+hydra")):
            row[f"override.{key.lstrip('+~')}"] = _scalar(value)
    for k, v in _flatten(config).items():
        row[f"cfg.{k}"] = v
    row.update(_key_columns(summary, choices, config))
    for k, v in metrics.items():
        row[k if k not in row else f"metric.{k}"] = v
    row["_metric_keys"] = tuple(k if k not in JOB_COLUMNS and k not in KEY_COLUMNS else f"metric.{k}"
                                for k in _numeric(metrics))

    trials = _read_csv(_find_file(job_dir, "trials.csv"), warnings)
    if trials is not None:
        trials.insert(0, "job", rel)
        trials.insert(0, "sweep", str(root))
    train_log = _read_csv(_find_file(job_dir, "train_log.csv"), warnings)
    if train_log is not None:
        train_log.insert(0, "job", rel)
        train_log.insert(0, "sweep", str(root))
    return row, trials, train_log


def _find_file(job_dir: Path, name: str, stages: bool = True) -> Path | None:
    """`job_dir/name`, or for a pipeline job the first stage subdir that holds it."""
    if (job_dir / name).is_file():
        return job_dir / name
    if stages:
        for stage in STAGE_DIRS:
            if (job_dir / stage / name).is_file():
                return job_dir / stage / name
    return None


def _stage_metrics(job_dir: Path, warnings: list[str]) -> dict[str, Any] | None:
    """A pipeline job that never wrote its top metrics.json: merge its stages' (eval wins)."""
    merged: dict[str, Any] = {}
    for stage in reversed(STAGE_DIRS):
        m = _read_json(job_dir / stage / "metrics.json", warnings) if (job_dir / stage / "metrics.json").is_file() else None
        if isinstance(m, dict):
            merged.update(m)
    return merged or None


def _summary_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """Scalar metrics of an eval summary, with `success_by_trial` spread into success_trial_k."""
    out: dict[str, Any] = {}
    for k in ("total_reward", "average_reward", "ratio_reward_found", "episode_length", "mean_exit_layer",
              "lm_layers_per_action", "lm_flops_per_action"):
        if _is_number(summary.get(k)):
            out[k] = summary[k]
    sbt = summary.get("success_by_trial")
    if isinstance(sbt, list):
        for i, v in enumerate(sbt, start=1):
            if _is_number(v):
                out[f"success_trial_{i}"] = v
    return out


_SETTING_ALIASES = {
    "explore": "explore", "exploreenv": "explore", "standard": "explore",
    "combi": "combi_explore", "combi_explore": "combi_explore", "combi-explore": "combi_explore",
    "combiexplore": "combi_explore", "combiexploreenv": "combi_explore",
    "single_object": "single_object", "singleobject": "single_object", "singleobjectenv": "single_object",
}


def normalise_setting(value: Any) -> Any:
    """'CombiExploreEnv', 'combi', 'combi-explore' -> 'combi_explore'; unknown values unchanged."""
    if not isinstance(value, str):
        return value
    tail = value.rsplit(".", 1)[-1].lower()
    return _SETTING_ALIASES.get(tail, value)


def _key_columns(summary: dict[str, Any], choices: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The identifying columns, each from the first source that has it."""
    flat_cfg = _flatten(config)
    nested = {}
    for name in ("config", "choices", "meta"):
        if isinstance(summary.get(name), dict):
            nested.update(_flatten(summary[name]))

    def first(*candidates: tuple[dict, str]) -> Any:
        for src, key in candidates:
            v = src.get(key)
            if v is not None and not (isinstance(v, float) and math.isnan(v)) and not _is_interpolation(v):
                return v
        return None

    s, n, c, f = summary, nested, choices, flat_cfg
    out = {
        "setting": normalise_setting(first((s, "setting"), (n, "setting"), (c, "env"), (f, "env.name"),
                                           (f, "env._target_"))),
        "num_objs": first((s, "num_objs"), (n, "num_objs"), (f, "env.num_objs")),
        "backbone": first((s, "backbone"), (n, "backbone"), (c, "backbone"), (f, "backbone.name")),
        "decoder": first((s, "decoder"), (n, "decoder"), (c, "decoder"), (f, "decoder.name")),
        "trial_limits": first((s, "trial_limits"), (n, "trial_limits"), (c, "trial_limits")),
        "split": first((s, "split"), (n, "split"), (f, "eval.split")),
        "feedback": first((s, "feedback"), (n, "feedback"), (f, "eval.feedback")),
        "agent": first((s, "agent"), (n, "agent"), (f, "eval.agent"), (c, "eval/agent"), (c, "agent")),
        "num_trials": first((s, "num_trials"), (n, "num_trials"), (f, "env.num_trials")),
        "trial_steps": first((s, "trial_steps"), (n, "trial_steps"), (f, "env.trial_steps")),
        "num_resets": first((s, "num_resets"), (n, "num_resets"), (f, "eval.num_resets")),
        "seed": first((s, "seed"), (n, "seed"), (f, "seed")),
    }
    if isinstance(out["agent"], dict):
        out["agent"] = out["agent"].get("name") or out["agent"].get("_target_")
    for node in ("backbone", "decoder"):
        if out[node] is None:
            out[node] = _model_choice(node, f, first((n, "ckpt"), (f, "ckpt")))
    return {k: _scalar(v) if isinstance(v, str) else v for k, v in out.items()}


def _model_choice(node: str, flat_cfg: dict[str, Any], ckpt: Any) -> str | None:
    """The backbone / decoder preset of a job whose own choices do not say (an eval of a checkpoint):
    the train job's Hydra choice (`<train job>/checkpoints/x.pt`), else the module of the node's
    `_target_` (`metamanip.models.decoders.lstm.LSTMDecoder` -> `lstm`)."""
    if isinstance(ckpt, str) and ckpt:
        path = Path(ckpt)
        train_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        hydra_yaml = train_dir / ".hydra" / "hydra.yaml"
        if hydra_yaml.is_file():
            try:
                choices = ((yaml.safe_load(hydra_yaml.read_text()) or {}).get("hydra", {}).get("runtime", {})
                           .get("choices", {}) or {})
            except (yaml.YAMLError, AttributeError):
                choices = {}
            if choices.get(node):
                return str(choices[node])
    target = flat_cfg.get(f"{node}._target_")
    if isinstance(target, str) and node == "decoder" and ".decoders." in target:
        return target.split(".decoders.", 1)[1].split(".", 1)[0]
    return None


# ----------------------------------------------------------------------------------------- not started


def _unstarted_jobs(sweep_dir: Path, root: Path, seen: set[int], warnings: list[str]) -> list[dict[str, Any]]:
    """Rows for the jobs `multirun.yaml` promises that never created their directory."""
    cfg = _read_yaml(sweep_dir / "multirun.yaml", warnings)
    if not isinstance(cfg, dict):
        return []
    hydra_node = cfg.get("hydra", {}) or {}
    expected = _expected_overrides(hydra_node)
    if expected is None:
        return []
    rows = []
    subdir = str((hydra_node.get("sweep", {}) or {}).get("subdir", "${hydra.job.num}"))
    submitted = _submitted_jobs(sweep_dir) if any(n not in seen for n in range(len(expected))) else {}
    for num, overrides in enumerate(expected):
        if num in seen:
            continue
        folder = submitted.get(num)
        crashed = _submitit_error(sweep_dir, sweep_dir, None, str(folder)) if folder else None
        named = subdir.replace("${hydra.job.num}", str(num))
        # a subdir built from other interpolations (override_dirname, ...) cannot be predicted
        job_dir = sweep_dir / (named if "${" not in named else f"<job {num}>")
        rows.append({
            "sweep": str(root),
            "job": job_dir.relative_to(root).as_posix(),
            "job_num": num,
            "task_name": (hydra_node.get("job", {}) or {}).get("name"),
            "job_dir": str(job_dir),
            "overrides": " ".join(overrides),
            "job_id": folder.name if folder else None,
            "status": "failed" if crashed else "not started",
            "has_results": False,
            "error": crashed,
            "log_path": (_log_path(sweep_dir, sweep_dir, None, None, failed=True, folder=str(folder))
                         if folder else _unstarted_log(sweep_dir, num)),
            **{f"override.{o.partition('=')[0].lstrip('+~')}": _scalar(o.partition("=")[2])
               for o in overrides if "=" in o},
            "_metric_keys": (),
        })
    return rows


def _expected_overrides(hydra_node: dict[str, Any]) -> list[list[str]] | None:
    """The per-job override lists a basic sweep expands to; None for other sweepers or bad input."""
    sweeper = hydra_node.get("sweeper", {}) or {}
    target = str(sweeper.get("_target_", "BasicSweeper"))
    if "BasicSweeper" not in target:
        n = sweeper.get("n_trials")
        return [[] for _ in range(int(n))] if isinstance(n, int) else None
    args = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    args += [str(o) for o in ((hydra_node.get("overrides", {}) or {}).get("task", []) or [])]
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(args)
        return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception as e:  # glob sweeps need the config loader; then we only know what ran
        log.debug("cannot expand sweep overrides %s: %s", args, e)
        return None


# ----------------------------------------------------------------------------------------- logs


def _submitit_folders(job_dir: Path, root: Path, job_id: str | None, folder: str | None) -> list[Path]:
    """Where submitit kept this job's logs: the folder status.json names, else `.submitit/<job id>` under
    the job, next to it, or under the sweep root."""
    cands = [Path(folder)] if folder else []
    if job_id:
        cands += [job_dir / ".submitit" / job_id, job_dir.parent / ".submitit" / job_id,
                  root / ".submitit" / job_id]
    out: list[Path] = []
    for c in cands:
        if c.is_dir() and c not in out:
            out.append(c)
    return out


def _log_path(job_dir: Path, root: Path, job_id: str | None, job_name: str | None, failed: bool,
              folder: str | None = None) -> str | None:
    """The log a person should open for this job: submitit's (stderr first when it failed), else Hydra's."""
    order = ("err", "out") if failed else ("out", "err")
    for sub in _submitit_folders(job_dir, root, job_id, folder):
        for kind in order:
            logs = sorted(sub.glob(f"*_log.{kind}"))
            if logs and (kind == order[-1] or logs[0].stat().st_size > 0):
                return str(logs[0])
    if job_name and (job_dir / f"{job_name}.log").is_file():
        return str(job_dir / f"{job_name}.log")
    logs = sorted(job_dir.glob("*.log"))
    return str(logs[0]) if logs else None


def _submitted_jobs(sweep_dir: Path) -> dict[int, Path]:
    """Job number -> submitit folder, read from the submissions the launcher pickled (`*_submitted.pkl`
    holds the call with its arguments: overrides, job dir key, job number, ...). This finds the log of a
    job that died before Hydra created its directory (a local job id is a pid, unrelated to the number)."""
    out: dict[int, Path] = {}
    for pkl in sorted((sweep_dir / ".submitit").glob("*/*_submitted.pkl")):
        try:
            with open(pkl, "rb") as fh:
                args = getattr(pickle.load(fh), "args", ())
        except Exception as e:  # a launcher class we cannot import, a truncated file: no mapping
            log.debug("cannot read %s: %s", pkl, e)
            continue
        if len(args) >= 3 and isinstance(args[2], int):
            out.setdefault(args[2], pkl.parent)
    return out


def _unstarted_log(sweep_dir: Path, num: int) -> str | None:
    """SLURM array tasks are named `<array>_<index>`; a job that never started may still have a log."""
    sub = sweep_dir / ".submitit"
    if not sub.is_dir():
        return None
    for folder in sorted(sub.glob(f"*_{num}")):
        logs = sorted(folder.glob("*_log.err")) or sorted(folder.glob("*_log.out"))
        return str(logs[0] if logs else folder)
    return None


def _is_gone(status: dict[str, Any]) -> bool:
    """True when a 'running' job's process was on this host and no longer exists."""
    pid, host = status.get("pid"), status.get("host")
    if not isinstance(pid, int) or not host or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but not ours (EPERM): alive
        return False
    return False


def _submitit_error(job_dir: Path, root: Path, job_id: str | None, folder: str | None = None) -> str | None:
    """The error submitit recorded for a job that died before it could write status.json."""
    for sub in _submitit_folders(job_dir, root, job_id, folder):
        for result in sorted(sub.glob("*_result.pkl")):
            try:
                with open(result, "rb") as fh:
                    outcome, payload = pickle.load(fh)
            except Exception:  # an unreadable or foreign pickle tells us nothing
                continue
            if outcome == "error":
                lines = [ln for ln in str(payload).strip().splitlines() if ln.strip()]
                return lines[-1] if lines else "failed (submitit recorded an error)"
    return None


# ----------------------------------------------------------------------------------------- files


def _read_yaml(path: Path | None, warnings: list[str]) -> Any:
    if path is None or not path.is_file():
        return None
    try:
        with open(path) as fh:
            return yaml.load(fh, Loader=_YAML_LOADER)
    except yaml.YAMLError as e:
        warnings.append(f"{path}: unreadable YAML ({e.__class__.__name__}); ignored")
        return None


def _read_json(path: Path | None, warnings: list[str]) -> Any:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        warnings.append(f"{path}: unreadable JSON ({e}); treated as missing")
        return None


def _read_csv(path: Path | None, warnings: list[str]) -> pd.DataFrame | None:
    if path is None:
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        warnings.append(f"{path}: unreadable CSV ({e.__class__.__name__}); ignored")
        return None


# ----------------------------------------------------------------------------------------- values


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists stay as values (cells hold them as they are)."""
    out: dict[str, Any] = {}
    if not isinstance(d, dict):
        return out
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numeric(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if _is_number(v)}


def _is_interpolation(v: Any) -> bool:
    return isinstance(v, str) and "${" in v


def _scalar(value: str) -> Any:
    """Override values as Hydra reads them: '1' -> 1, '3e-4' -> 0.0003, 'true' -> True, 'lstm' -> 'lstm'."""
    text = value.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "~"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return value


# ----------------------------------------------------------------------------------------- frames


def _metric_columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for row in rows:
        for k in row.get("_metric_keys", ()):
            keys[k] = None
    return sorted(keys, key=_metric_order)


def _metric_order(name: str) -> tuple:
    known = ["total_reward", "average_reward", "ratio_reward_found", "episode_length"]
    m = re.fullmatch(r"success_trial_(\d+)", name)
    if name in known:
        return (0, known.index(name), "")
    if m:
        return (1, int(m.group(1)), "")
    return (2, 0, name)


def _order_columns(jobs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    jobs = jobs.copy()
    for col in (*JOB_COLUMNS, *KEY_COLUMNS):
        if col not in jobs.columns:
            jobs[col] = None
    jobs["has_results"] = jobs["has_results"].fillna(False).astype(bool)
    # Key columns that no job fills tell the reader nothing.
    keys = [c for c in KEY_COLUMNS if jobs[c].notna().any()]
    choices = sorted(c for c in jobs.columns if c.startswith("choice."))
    overrides = sorted(c for c in jobs.columns if c.startswith("override."))
    cfg = sorted(c for c in jobs.columns if c.startswith("cfg."))
    rest = [c for c in jobs.columns if c not in {*JOB_COLUMNS, *KEY_COLUMNS, *metrics, *choices, *overrides,
                                                  *cfg, "_metric_keys"}]
    return jobs[[*JOB_COLUMNS, *keys, *metrics, *overrides, *choices, *rest, *cfg, "_metric_keys"]]


def _metric_set_warnings(jobs: pd.DataFrame, metrics: list[str]) -> list[str]:
    done = jobs[jobs["has_results"]]
    sets = done["_metric_keys"].map(frozenset)
    if sets.nunique() <= 1:
        return []
    common = frozenset.intersection(*sets)
    out = []
    for keys, group in done.groupby(sets, sort=False):
        lacking = sorted(set(metrics) - set(keys), key=_metric_order)
        if lacking:
            shown = ", ".join(group["job"].astype(str).head(5)) + (" …" if len(group) > 5 else "")
            out.append(f"{len(group)} job(s) ({shown}) lack metric(s) {', '.join(lacking)}; their cells stay "
                       f"empty (mixed train/eval jobs or different trial counts?). Common metrics: "
                       f"{', '.join(sorted(common, key=_metric_order)) or 'none'}")
    return out


def _tag(frames: list[pd.DataFrame], jobs: pd.DataFrame, key_cols: list[str]) -> pd.DataFrame:
    """Concatenate per-job frames and attach each job's identifying columns."""
    if not frames:
        return pd.DataFrame(columns=key_cols)
    data = pd.concat(frames, ignore_index=True)
    extra = [c for c in key_cols if c not in ("sweep", "job") and c not in data.columns]
    if extra:
        data = data.merge(jobs[["sweep", "job", *extra]], on=["sweep", "job"], how="left")
    return data
