"""trials.csv: the append-only record of an evaluation, one row per episode x trial.

An episode's rows are appended in one write and fsynced, so a crash loses at most the episode in flight.
On open, a torn tail (a partial line or an episode with fewer rows than trials) is cut away, rewriting
the file atomically; the finished episodes are then skipped by the resumed run, never duplicated.
"""
from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

from metamanip.atomic import atomic_write_text
from metamanip.evaluation.metrics import TrialRow

log = logging.getLogger(__name__)


class TrialLog:
    """Append-only trials.csv with resume: `done` holds the (group, episode) keys already recorded."""

    def __init__(self, path: str | os.PathLike, num_trials: int):
        self.path = Path(path)
        self.num_trials = int(num_trials)
        self.rows: list[TrialRow] = []
        self._load()

    @property
    def done(self) -> set[tuple[str, int]]:
        return {(r.group, r.episode) for r in self.rows}

    def _load(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            atomic_write_text(self.path, _to_csv([], header=True))
            return
        text = self.path.read_text()
        complete_text = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(complete_text))
        if reader.fieldnames != TrialRow.columns():
            raise ValueError(
                f"{self.path} has columns {reader.fieldnames}, expected {TrialRow.columns()}: it was written "
                "by another tool or version; evaluate into a new output dir (hydra.run.dir=...)")
        rows = [TrialRow.from_strings(rec) for rec in reader]
        counts: dict[tuple[str, int], int] = {}
        for r in rows:
            counts[(r.group, r.episode)] = counts.get((r.group, r.episode), 0) + 1
        torn = {k for k, c in counts.items() if c != self.num_trials}
        kept = [r for r in rows if (r.group, r.episode) not in torn]
        if torn or complete_text != text:
            log.warning("trials.csv: dropping %d torn episode(s) %s and rewriting %s",
                        len(torn), sorted(torn), self.path)
            atomic_write_text(self.path, _to_csv(kept, header=True))
        self.rows = kept
        if kept:
            log.info("trials.csv: resuming, %d episode(s) already recorded", len(self.done))

    def check_plan(self, keys: Iterable[tuple[str, int]], setting: str, num_objs: int) -> None:
        """Refuse to resume into a file that holds another evaluation's episodes."""
        planned = set(keys)
        for r in self.rows:
            if r.setting != setting or r.num_objs != num_objs:
                raise ValueError(
                    f"{self.path} holds episodes of {r.setting} with {r.num_objs} objects, but this run evaluates "
                    f"{setting} with {num_objs}: evaluate into a new output dir (hydra.run.dir=...)")
            if (r.group, r.episode) not in planned:
                raise ValueError(
                    f"{self.path} holds episode {r.episode} of {r.group!r}, which this run's protocol does not "
                    "contain (other split or combinations): evaluate into a new output dir (hydra.run.dir=...)")

    def append_episode(self, rows: Sequence[TrialRow]) -> None:
        """Append one episode's rows in a single write, flushed to disk."""
        if len(rows) != self.num_trials:
            raise ValueError(f"an episode has {self.num_trials} trials, got {len(rows)} rows")
        key = (rows[0].group, rows[0].episode)
        if key in self.done:
            raise ValueError(f"episode {key} is already in {self.path}")
        with open(self.path, "a", newline="") as f:
            f.write(_to_csv(rows, header=False))
            f.flush()
            os.fsync(f.fileno())
        self.rows.extend(rows)


def read_trials(path: str | os.PathLike) -> list[TrialRow]:
    """All rows of a trials.csv (for summaries, tests and the results tables)."""
    with open(path, newline="") as f:
        return [TrialRow.from_strings(rec) for rec in csv.DictReader(f)]


def _to_csv(rows: Sequence[TrialRow], header: bool) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TrialRow.columns(), lineterminator="\n")
    if header:
        w.writeheader()
    for r in rows:
        w.writerow(r.as_dict())
    return buf.getvalue()
