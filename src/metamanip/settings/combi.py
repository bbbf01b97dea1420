"""Combi-Explore: the rewarding task is a pair of subtasks, rewarded only when both are done in one trial.

The four static objects (slider, drawer, LED, lightbulb) are listed in a fresh random order every
episode; each affords one subtask in the initial state. A trial allows at most two completed subtasks
(each object at most once) and ends after the second, or at the step limit; it is rewarded iff both
rewarding subtasks were done in it. After the first subtask of a trial the agent gets mid-trial
feedback (with no reward information); at the trial's end it learns which completed subtasks were
rewarding. Held-out pairs never occur in training, in either order (see settings/README.md).
"""
from __future__ import annotations

import itertools
from typing import Any, ClassVar, Mapping

import numpy as np

from metamanip.settings import chat, feedback
from metamanip.settings.meta_env import Episode, Judgement, MetaEnv
from metamanip.settings.objects import (
    STATIC_OBJECTS, TASK_OBJECT, LogicalState, feasible_task, observed_state, required_state, task_instruction,
)
from metamanip.settings.splits import CombiPairs, combi_pairs

MAX_SUBTASKS_PER_TRIAL = 2
MAX_STATE_DRAWS = 500


class CombiExploreEnv(MetaEnv):
    """The Combi-Explore setting over a PlayTableEnv (see docs/DESIGN.md for reset options and info keys)."""

    setting: ClassVar[str] = "combi_explore"
    reset_option_keys = frozenset({"pair", "meta_position", "initial_state"})

    def __init__(self, sim: Any, **kwargs: Any) -> None:
        self.pairs_split: CombiPairs = combi_pairs()
        super().__init__(sim, **kwargs)

    @property
    def objects_per_episode(self) -> int:
        return len(STATIC_OBJECTS)

    def pairs(self, split: str | None = None) -> tuple[tuple[str, str], ...]:
        """The rewarding pairs of `split` (default: this env's split), each in canonical subtask order."""
        return self.pairs_split.pairs(split or self.split)

    @classmethod
    def describe_config(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        pairs = combi_pairs()
        return {"setting": cls.setting, "pool": list(STATIC_OBJECTS), "objects_per_episode": len(STATIC_OBJECTS),
                "tasks": list(pairs.subtasks), "train": [list(p) for p in pairs.train],
                "heldout": [list(p) for p in pairs.heldout]}

    # ---- episode sampling -----------------------------------------------------------------------
    def _sample_episode(self, rng: np.random.Generator, options: Mapping[str, Any]) -> Episode:
        allowed = self.pairs()
        pair = options.get("pair")
        if pair is not None:
            pair = self.pairs_split.check_pair(pair, self.split)
        given = options.get("initial_state")
        state = None
        if given is not None:
            state = given if isinstance(given, LogicalState) else LogicalState.from_dict(given)
        else:
            for _ in range(MAX_STATE_DRAWS):
                state = LogicalState(
                    slider=("left", "right")[int(rng.integers(2))], drawer=("open", "closed")[int(rng.integers(2))],
                    led=int(rng.integers(2)), lightbulb=int(rng.integers(2)))
                if pair is not None:
                    state = state.with_(**required_state(pair[0]), **required_state(pair[1]))
                if self._feasible_pairs(state, allowed):
                    break
        feasible = self._feasible_pairs(state, allowed)
        if pair is None:
            if not feasible:
                raise ValueError(f"initial_state {state.to_dict()} affords no {self.split} pair; allowed pairs: "
                                 f"{[list(p) for p in allowed]}")
            pair = feasible[int(rng.integers(len(feasible)))]
        elif pair not in feasible:
            raise ValueError(f"pair {list(pair)} is not feasible in initial_state {state.to_dict()}")
        objects = list(STATIC_OBJECTS)
        rng.shuffle(objects)
        meta_objs = [TASK_OBJECT[t] for t in pair]
        position = options.get("meta_position")
        if position is not None:
            objects = self._place(objects, meta_objs, position)
        tracked = tuple(feasible_task(o, state) for o in objects)
        meta_position = tuple(sorted(objects.index(o) for o in meta_objs))
        return Episode(objects=objects, state=state, meta_task=tuple(pair), meta_position=meta_position,
                       tracked=tracked)

    @staticmethod
    def _feasible_pairs(state: LogicalState, allowed: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
        doable = {feasible_task(o, state) for o in STATIC_OBJECTS}
        return [p for p in allowed if p[0] in doable and p[1] in doable]

    @staticmethod
    def _place(objects: list[str], meta_objs: list[str], position: Any) -> list[str]:
        pos = tuple(int(p) for p in position) if isinstance(position, (tuple, list)) else ()
        if len(pos) != 2 or len(set(pos)) != 2 or not all(0 <= p < len(objects) for p in pos):
            raise ValueError(f"Combi meta_position must be two different indices in [0, 3], got {position!r}; "
                             f"allowed: {list(itertools.combinations(range(4), 2))}")
        others = [o for o in objects if o not in meta_objs]
        out: list[str | None] = [None] * len(objects)
        for p, o in zip(sorted(pos), meta_objs):
            out[p] = o
        it = iter(others)
        return [o if o is not None else next(it) for o in out]

    # ---- trial rules and feedback ---------------------------------------------------------------
    def _judge(self, new_tasks: list[str]) -> Judgement:
        done = self._latch.completed
        if all(t in done for t in self.episode.meta_task):
            return Judgement(trial_over=True, rewarded=True)
        if len(done) >= MAX_SUBTASKS_PER_TRIAL:
            return Judgement(trial_over=True)
        return Judgement(mid_feedback=bool(new_tasks))

    def _first_feedback(self) -> dict[str, Any]:
        objs = self.episode.objects
        return {"train_feedback": feedback.combi_first_trial(objs),
                "alt_feedback": self._para.combi_first_trial(feedback.objects_text(objs)),
                "lm_feedback": chat.first_trial_message(self.env_status())}

    def _trial_end_feedback(self, result: Mapping[str, Any]) -> dict[str, Any]:
        ep = self.episode
        done = result["completed_tasks"]
        rewarding = [t for t in done if t in ep.meta_task]
        unrewarding = [t for t in done if t not in ep.meta_task]
        n = result["trial"] + 1
        outcomes = [(task_instruction(t), t in ep.meta_task) for t in done]
        return {"train_feedback": feedback.combi_trial_end(n, rewarding, unrewarding, ep.objects),
                "alt_feedback": self._para.combi_trial_end(n, rewarding, unrewarding, feedback.objects_text(ep.objects)),
                "lm_feedback": chat.trial_end_message(n, outcomes, self.env_status())}

    def _mid_feedback(self, new_tasks: list[str], obs: Mapping[str, Any]) -> dict[str, Any]:
        ep = self.episode
        state = observed_state(obs["scene_obs"], ep.state) if "scene_obs" in obs else ep.state
        return {"train_feedback": feedback.combi_task_done(ep.objects),
                "alt_feedback": self._para.combi_task_done(feedback.objects_text(ep.objects)),
                "lm_feedback": chat.task_done_message(task_instruction(new_tasks[-1]),
                                                      chat.env_status(ep.objects, state))}
