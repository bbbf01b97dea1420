"""Experiment loggers the trainer reports to: Weights & Biases (offline by default) or none.

A logger is started once per process with the run's output dir and resolved config; only rank 0
actually logs. The W&B run id is derived from the output dir (or taken from the checkpoint being
resumed), and the run is opened with ``resume="allow"``, so a requeued or restarted job continues the
same W&B run instead of creating a new one. Offline runs land in ``<output dir>/wandb/`` and are
uploaded later with ``wandb sync <output dir>/wandb/offline-run-*``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)


def stable_run_id(output_dir: str | os.PathLike) -> str:
    """A W&B-safe id that is the same every time the same output dir is used (requeue, restart)."""
    path = Path(output_dir).resolve()
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{path.parent.name}-{path.name}").strip("-")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    return f"{readable[:40]}-{digest}"


class NoLogger:
    """`logger=none`: the trainer's own train_log.csv and metrics.json only."""

    run_id: str | None = None

    def start(self, output_dir: str | os.PathLike, config: dict[str, Any] | None = None,
              run_id: str | None = None, enabled: bool = True) -> None:
        pass

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def finish(self, summary: dict[str, Any] | None = None, exit_code: int = 0) -> None:
        pass


class WandbLogger(NoLogger):
    """Weights & Biases, offline unless `mode` (or WANDB_MODE) says otherwise."""

    def __init__(self, project: str = "metamanip", entity: str | None = None, mode: str = "offline",
                 group: str | None = None, tags: Sequence[str] = (), name: str | None = None,
                 id: str | None = None, job_type: str = "train") -> None:
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode={mode!r}; use offline, online or disabled")
        self.project, self.entity, self.mode = project, entity, mode
        self.group, self.tags, self.name = group, list(tags or []), name
        self.fixed_id, self.job_type = id, job_type
        self.run: Any = None
        self.run_id = None

    def start(self, output_dir: str | os.PathLike, config: dict[str, Any] | None = None,
              run_id: str | None = None, enabled: bool = True) -> None:
        """Open (or re-open) the run; `run_id` from a resumed checkpoint wins over the derived one."""
        self.run_id = self.fixed_id or run_id or stable_run_id(output_dir)
        if not enabled:
            return
        import wandb

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=self.project, entity=self.entity, mode=self.mode, group=self.group, tags=self.tags,
            name=self.name or Path(output_dir).resolve().name, id=self.run_id, resume="allow",
            dir=str(out), config=config or {}, job_type=self.job_type,
            settings=wandb.Settings(console="off", x_disable_stats=True))
        log.info("wandb run %s (%s) in %s", self.run_id, self.mode, out / "wandb")

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self, summary: dict[str, Any] | None = None, exit_code: int = 0) -> None:
        if self.run is None:
            return
        try:
            if summary:
                self.run.summary.update(summary)
        finally:
            self.run.finish(exit_code=exit_code)
            self.run = None
