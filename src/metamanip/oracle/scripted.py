"""The scripted oracle's decisions: which task to do next, with the reasoning text the thesis' LLM wrote.

Explore: explore the listed objects in order, one per trial, until one is rewarded, then repeat that task
in every remaining trial. Combi-Explore: try the first two listed objects; the trial-end feedback says
which completed subtasks were rewarding, so keep a rewarding one and pair it with the next untried object,
or move to the untried pair; once a pair is rewarded, repeat it. The decider only uses what the feedback
reveals (completed tasks and which of them were rewarding), never the hidden meta task directly.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """A decider's choice: the task to execute, its instruction phrase, and the full oracle text."""

    task: str
    instruction: str
    text: str
    source: str = "scripted"  # "scripted" | "llm" | "fallback"


def oracle_text(explanation: str, notes: str, instruction: str) -> str:
    """The thesis' reply template."""
    return f"Explanation: {explanation} Notes: {notes} Instruction: {instruction}"


def _names(objects: Sequence[str]) -> str:
    return ", ".join(o.replace("_", " ") for o in objects) if objects else "none"


def _revealed_rewarding(info: Mapping[str, Any]) -> set[str]:
    """Completed tasks that the trial-end feedback called rewarding (all trials so far)."""
    meta = info.get("meta_task")
    meta_set = set(meta) if isinstance(meta, (list, tuple)) else {meta}
    done = {t for r in info.get("trial_results", []) for t in r.get("completed_tasks", [])}
    return done & meta_set


class ScriptedDecider:
    """Plays Explore and Combi-Explore optimally (see the module docstring)."""

    def reset_episode(self, env: Any, info: Mapping[str, Any]) -> None:
        pass

    def decide(self, env: Any, info: Mapping[str, Any]) -> Decision:
        """The next task at a decision point (trial start, or Combi mid-trial)."""
        if getattr(env, "setting", "explore") == "combi_explore":
            return self._decide_combi(env, info)
        return self._decide_explore(env, info)

    # ---- Explore --------------------------------------------------------------------------------
    def _decide_explore(self, env: Any, info: Mapping[str, Any]) -> Decision:
        objects = list(info["episode_objects"])
        feasible = env.feasible_tasks
        results = info.get("trial_results", [])
        explored = list(info.get("explored_objects", []))
        phrase = env.task_instruction
        rewarded = [r for r in results if r.get("reward", 0) > 0 and r.get("completed_tasks")]
        trial = len(results) + 1
        if rewarded:
            task = _last_rewarded_task(rewarded[-1], feasible)
            lost = results[-1].get("reward", 0) <= 0
            explanation = (f"{phrase(task)} was rewarding in an earlier trial"
                           + (" but was not completed last trial" if lost else "")
                           + ", so I repeat it in this trial as in every remaining trial.")
            notes = (f"trial {trial}; episode objects: {_names(objects)}; explored objects: {_names(explored)}; "
                     f"rewarding task: {phrase(task)}.")
            return Decision(task, phrase(task), oracle_text(explanation, notes, phrase(task)))
        todo = [o for o in objects if o not in explored and feasible.get(o)]
        if not todo:  # everything explored without reward (an execution failed): start over in order
            todo = [o for o in objects if feasible.get(o)]
        obj = todo[0]
        task = feasible[obj]
        if not results:
            explanation = (f"This is the first trial, so nothing is known yet about which object is rewarding. "
                           f"I explore the listed objects in order, one per trial, starting with the "
                           f"{obj.replace('_', ' ')}.")
        else:
            last = results[-1].get("completed_tasks") or []
            did = ", ".join(phrase(t) for t in last) if last else "no task was completed"
            explanation = (f"The last trial was not rewarding ({did}). The next unexplored object in the list "
                           f"is the {obj.replace('_', ' ')}, so I explore it in this trial.")
        notes = (f"trial {trial}; episode objects: {_names(objects)}; explored objects: {_names(explored)}; "
                 f"rewarding task: unknown.")
        return Decision(task, phrase(task), oracle_text(explanation, notes, phrase(task)))

    # ---- Combi-Explore --------------------------------------------------------------------------
    def _decide_combi(self, env: Any, info: Mapping[str, Any]) -> Decision:
        objects = list(info["episode_objects"])
        feasible = env.feasible_tasks
        tasks = [feasible[o] for o in objects if feasible.get(o)]
        results = info.get("trial_results", [])
        phrase = env.task_instruction
        rewarding = _revealed_rewarding(info)
        done_all = {t for r in results for t in r.get("completed_tasks", [])}
        unrewarding = done_all - rewarding
        tried_pairs = {frozenset(r["completed_tasks"]) for r in results if len(r.get("completed_tasks", [])) == 2}
        # this trial's tasks so far; at a trial start `completed_tasks` still lists the trial that just ended
        now = [] if info.get("trial_done") else list(info.get("completed_tasks", []))
        won = [r for r in results if r.get("reward", 0) > 0]
        if won:
            pair = [t for t in tasks if t in set(won[-1]["completed_tasks"])]
            why = (f"{' and '.join(phrase(t) for t in pair)} were rewarding together, so I repeat that pair.")
        else:
            pair = None
            for a, b in itertools.combinations(tasks, 2):  # listed order: (0,1), (0,2), ..., (2,3)
                cand = {a, b}
                if rewarding - cand or cand & unrewarding or frozenset(cand) in tried_pairs:
                    continue
                pair = [a, b]
                break
            if pair is None:  # inconsistent history (an execution went wrong): any pair not tried yet
                pair = next(([a, b] for a, b in itertools.combinations(tasks, 2)
                             if frozenset((a, b)) not in tried_pairs), tasks[:2])
            if rewarding:
                why = (f"{' and '.join(phrase(t) for t in sorted(rewarding))} was rewarding, so I keep it and pair "
                       f"it with an object I have not ruled out.")
            elif results:
                why = "No completed task was rewarding so far, so I try a pair of objects not ruled out yet."
            else:
                why = ("This is the first trial; two tasks are rewarding together. I try the objects in the listed "
                       "order, two per trial.")
        remaining = [t for t in pair if t not in now]
        if not remaining:  # both done already (trial should have ended): pick any other feasible task
            remaining = [t for t in tasks if t not in now] or pair
        task = remaining[0]
        stage = "first" if not now else "second"
        explanation = f"{why} For the {stage} task of this trial I do {phrase(task)}."
        notes = (f"trial {len(results) + 1}; episode objects: {_names(objects)}; rewarding tasks: "
                 f"{', '.join(phrase(t) for t in sorted(rewarding)) or 'unknown'}; not rewarding: "
                 f"{', '.join(phrase(t) for t in sorted(unrewarding)) or 'none'}; planned pair: "
                 f"{' + '.join(phrase(t) for t in pair)}.")
        return Decision(task, phrase(task), oracle_text(explanation, notes, phrase(task)))


def _last_rewarded_task(result: Mapping[str, Any], feasible: Mapping[str, str | None]) -> str:
    done = list(result["completed_tasks"])
    usable = [t for t in done if t in set(feasible.values())]
    return (usable or done)[-1]
