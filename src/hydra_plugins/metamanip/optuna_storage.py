"""The persistent optuna storage the `hparams_search` presets share between sweeper processes.

Several `metamanip-train -m hparams_search=...` processes (for example one per SLURM allocation,
each with `n_jobs=1`) pointed at the same storage and `study_name` grow one study together instead of
waiting on each other's batches. The storage is built here rather than given as a bare URL so that its
folder exists before optuna opens it and so that an NFS-friendly journal file can replace SQLite.
"""
from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BACKENDS = ("sqlite", "journal")


def study_storage(path: str, backend: str = "sqlite") -> Any:
    """An optuna storage in the file `path`: `sqlite` (RDB, one file) or `journal` (append-only log,
    safe on NFS where SQLite locking is not)."""
    import optuna

    if backend not in BACKENDS:
        raise ValueError(f"optuna storage backend {backend!r} is not one of {BACKENDS}: "
                         f"set hydra.sweeper.storage.backend to one of them")
    p = Path(path).expanduser().resolve()
    p.parent.mkdir(parents=True, exist_ok=True)
    log.info("optuna study storage: %s (%s)", p, backend)
    if backend == "journal":
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(p)))
    # Processes started together would race to create the schema (UNIQUE constraint failed on
    # alembic_version): the first one creates it under a lock, the others then open it.
    with open(p.with_name(p.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            # a generous busy timeout: several sweeper processes write to one file
            return optuna.storages.RDBStorage(url=f"sqlite:///{p}",
                                              engine_kwargs={"connect_args": {"timeout": 60}})
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
