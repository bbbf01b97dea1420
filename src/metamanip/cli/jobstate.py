"""Bookkeeping every entry point does for its job: resolved config, status.json, metrics.json.

`status.json` says running / done / failed (with the error), so a results loader can list jobs that
never finished instead of hiding them. Files are written atomically (temp file + rename).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_metrics(output_dir: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """The job's final figures, read by `metamanip.results` and the optuna sweeper."""
    write_json(Path(output_dir) / "metrics.json", metrics)


@contextmanager
def job(cfg: DictConfig, output_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """Run a job body with `status.json` and `resolved_config.yaml` kept in `output_dir`.

    Only rank 0 of a distributed job writes. A failure records the error and re-raises.
    """
    out = Path(output_dir if output_dir is not None else cfg.paths.output_dir)
    writer = int(os.environ.get("RANK", "0")) == 0
    started = time.time()
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "resolved_config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_json(out / "status.json", {"status": "running", "started": started, "pid": os.getpid(),
                                         "slurm_job_id": os.environ.get("SLURM_JOB_ID")})
    try:
        yield out
    except BaseException as e:
        if writer:
            write_json(out / "status.json", {
                "status": "failed", "started": started, "ended": time.time(),
                "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=20),
                "slurm_job_id": os.environ.get("SLURM_JOB_ID")})
        raise
    else:
        if writer:
            write_json(out / "status.json", {"status": "done", "started": started, "ended": time.time(),
                                             "slurm_job_id": os.environ.get("SLURM_JOB_ID")})
