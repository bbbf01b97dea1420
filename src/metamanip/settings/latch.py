"""Which tracked tasks a trial has completed, from the simulator's start-vs-now task detection.

The simulator's detectors compare two snapshots (CALVIN style), so undoing an action un-detects it.
A trial needs events instead: a task counts as completed the first time it is detected and stays
completed (latched). When a toggle task was latched and is no longer detected, the robot has undone
it, which is itself the partner task (opened then closed the drawer = closed it); that latches the
partner, if tracked. This is the original's rule.
"""
from __future__ import annotations

from typing import Iterable

from metamanip.settings.objects import TOGGLE_PARTNERS


class TaskLatch:
    """Ordered, latched record of the tracked tasks completed since the last `reset()`."""

    def __init__(self, tracked: Iterable[str]) -> None:
        self.tracked: tuple[str, ...] = tuple(tracked)
        self.completed: list[str] = []

    def reset(self, tracked: Iterable[str] | None = None) -> None:
        if tracked is not None:
            self.tracked = tuple(tracked)
        self.completed = []

    def update(self, detected: Iterable[str]) -> list[str]:
        """Latch what `detected` (tasks seen start→now) implies; return the newly completed tasks."""
        detected = set(detected)
        new: list[str] = []
        done = set(self.completed)
        for task in self.tracked:
            if task in done:
                continue
            partner = TOGGLE_PARTNERS.get(task)
            undone = partner is not None and partner in done and partner not in detected
            if task in detected or undone:
                new.append(task)
                done.add(task)
        self.completed.extend(new)
        return new
