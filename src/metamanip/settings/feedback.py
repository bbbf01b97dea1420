"""`train_feedback`: the terse feedback strings of the original, reproduced character for character.

These strings are the language input the distilled policies were trained on, so their format (including
the trailing "; " after a rewarded trial and the "None " of an empty Combi list) is kept verbatim.
Only the content of "explored objects" differs: see settings/README.md.
"""
from __future__ import annotations

from typing import Sequence

from metamanip.settings.objects import object_text, task_instruction


def objects_text(objects: Sequence[str]) -> str:
    """`['red_block', 'led']` -> `'red block, led'` (the listed order is kept)."""
    return ", ".join(object_text(o) for o in objects)


# Explore
def explore_first_trial(objects: Sequence[str]) -> str:
    return "first trial. episode objects: {0}".format(objects_text(objects))


def explore_rewarded(meta_task: str) -> str:
    return task_instruction(meta_task) + " " + "was rewarding last trial" + "; "


def explore_unrewarded(objects: Sequence[str], explored: Sequence[str], earlier_meta_task: str | None = None) -> str:
    """After a trial without reward; `earlier_meta_task` when the reward was found in an earlier trial."""
    explored_str = objects_text(explored) if explored else "none"
    if earlier_meta_task is not None:
        return "no reward last trial. episode objects: {0}. explored objects: {1}. {2} was rewarding in previous trials".format(
            objects_text(objects), explored_str, task_instruction(earlier_meta_task))
    return "no reward last trial. episode objects: {0}. explored objects: {1}".format(objects_text(objects), explored_str)


# Combi-Explore
def combi_first_trial(objects: Sequence[str]) -> str:
    return "first trial. episode objects: {0}.".format(objects_text(objects))


def combi_task_done(objects: Sequence[str]) -> str:
    """Mid-trial, after each completed subtask; it carries no reward information."""
    return "You completed a task. Episode objects: {0}".format(objects_text(objects))


def _instructions(tasks: Sequence[str]) -> str:
    return "; ".join(task_instruction(t) for t in tasks) if tasks else "None "


def combi_trial_end(trial: int, rewarding: Sequence[str], unrewarding: Sequence[str], objects: Sequence[str]) -> str:
    """`trial` is the 1-based number of the trial that just ended."""
    return "Trial {0} completed. Completed rewarding tasks last trial: {1}. Completed unrewarding tasks last trial: {2}. Episode objects: {3}".format(
        trial, _instructions(rewarding), _instructions(unrewarding), objects_text(objects))
