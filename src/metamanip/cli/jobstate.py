"""Bookkeeping every entry point does for its job: resolved config, status.json, metrics.json.

`status.json` says running / done / failed (with the error), so a results loader can list jobs that
never finished instead of hiding them; it also counts attempts (a SLURM requeue or preemption restarts
the job in the same directory) and, under submitit, points at the job's submitit logs. Files are
written atomically (temp file + rename). `objective` is what an entry point's `main()` returns, so the
optuna sweeper (`hparams_search=...`) can read the metric named by `optimized_metric`.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from metamanip.atomic import atomic_write_text, write_json  # noqa: F401  (re-exported for entry points)
from metamanip.locks import dir_lock

log = logging.getLogger(__name__)


def write_metrics(output_dir: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """The job's final figures, read by `metamanip.results` and the optuna sweeper."""
    write_json(Path(output_dir) / "metrics.json", metrics)


def read_status(output_dir: str | os.PathLike) -> dict[str, Any]:
    """The job's `status.json`, or {} when it has none (never started) or it is unreadable."""
    try:
        return json.loads((Path(output_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def objective(cfg: DictConfig, metrics: dict[str, Any] | None = None,
              output_dir: str | os.PathLike | None = None) -> float | None:
    """The value an entry point's `main()` returns: `metrics[cfg.optimized_metric]`, or None when the
    config names no `optimized_metric` (plain runs and grid sweeps).

    `metrics` defaults to the job's `metrics.json`. An unknown metric name is an error naming the
    metrics the job did write, so a typo in an `hparams_search` preset fails the first trial loudly.
    """
    name = cfg.get("optimized_metric") if isinstance(cfg, DictConfig) else None
    if not name:
        return None
    if metrics is None:
        out = Path(output_dir if output_dir is not None else cfg.paths.output_dir)
        try:
            metrics = json.loads((out / "metrics.json").read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"optimized_metric={name!r} but the job wrote no {out / 'metrics.json'}; "
                                    "the entry point must write its metrics before main() returns") from None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} is not among this job's metrics {sorted(metrics)}; "
                       "set optimized_metric to one of them")
    value = float(metrics[name])
    log.info("objective %s = %g", name, value)
    return value


def _submitit_info(out: Path) -> dict[str, Any]:
    """Under submitit: the job id and its log folder, linked as `<job dir>/submitit` so the logs sit next
    to the job's own output (the folder itself is the sweep's `.submitit/<job id>`)."""
    try:
        import submitit

        env = submitit.JobEnvironment()
        folder = Path(env.paths.folder)
        job_id = str(env.job_id)
    except Exception:  # not a submitit job
        return {}
    link = out / "submitit"
    try:
        target = os.path.relpath(folder, out)
        if link.is_symlink() and os.readlink(link) != target:
            link.unlink()
        if not link.exists() and not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    except OSError as e:  # e.g. a file system without symlinks: the path in status.json still tells
        log.debug("could not link submitit logs into %s: %s", out, e)
    return {"submitit_job_id": job_id, "submitit_folder": str(folder)}


@contextmanager
def job(cfg: DictConfig, output_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """Run a job body with `status.json` and `resolved_config.yaml` kept in `output_dir`.

    Only rank 0 of a distributed job writes. A failure records the error and re-raises. A job started
    again in the same directory (requeue, preemption, a re-run to finish it) counts `attempt` up.
    """
    out = Path(output_dir if output_dir is not None else cfg.paths.output_dir)
    writer = int(os.environ.get("RANK", "0")) == 0
    # one writer per job dir: a second run with the same hydra.run.dir is refused before it writes anything
    lock = dir_lock(out / LOCK_NAME, f"job dir {out}", fix_for_locked_job_dir(out)) if writer else nullcontext()
    with lock, _job_body(cfg, out, writer):
        yield out


LOCK_NAME = ".metamanip.lock"


def fix_for_locked_job_dir(out: Path) -> str:
    return (f"wait for it to finish (it resumes from what is in {out} when run again), or give this run "
            "its own output dir (drop hydra.run.dir=... for a fresh timestamped one)")


@contextmanager
def _job_body(cfg: DictConfig, out: Path, writer: bool) -> Iterator[Path]:
    started = time.time()
    base: dict[str, Any] = {}
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "resolved_config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        previous = read_status(out)
        base = {"started": started, "attempt": int(previous.get("attempt", 0)) + 1,
                "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                **_submitit_info(out)}
        write_json(out / "status.json", {"status": "running", "pid": os.getpid(), **base})
    try:
        yield out
    except BaseException as e:
        if writer:
            write_json(out / "status.json", {
                "status": "failed", **base, "ended": time.time(),
                "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=20)})
        raise
    else:
        if writer:
            write_json(out / "status.json", {"status": "done", **base, "ended": time.time()})
