"""Explore: find, across trials, which of the listed objects is rewarding, then keep doing it.

`num_objs` ∈ {3, 5, 7} selects the object pool, the objects per episode (3, 3, 4), the tracked tasks
and the train / held-out combination split (see `splits.explore_pool`). A trial ends with reward 1 when
the rewarding task is done, with reward 0 when any other tracked task is done (with `provide_feedback`),
or at the step limit. Feedback after each trial: `train_feedback` in the original's terse format,
`alt_feedback` paraphrased, and a chat message for the LLM oracle.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from metamanip.settings import chat, feedback
from metamanip.settings.meta_env import Episode, Judgement, MetaEnv
from metamanip.settings.objects import (
    BLOCK_LOCATIONS, BLOCK_OBJECTS, STATIC_OBJECTS, TASK_OBJECT, LogicalState, feasible_task, required_state,
    task_instruction,
)
from metamanip.settings.splits import EXPLORE_NUM_OBJS, ExplorePool, explore_pool

MAX_STATE_DRAWS = 500


def sample_state(rng: np.random.Generator, num_objs: int, objects: list[str]) -> LogicalState:
    """A random initial state as the original drew it for `num_objs`.

    3 objects: the LED stays off. 7 objects: the three blocks take distinct places among the table and
    the two slider slots, and an episode block never sits behind the door. Otherwise the blocks are fixed
    (red on the table, pink in slider_right, blue in slider_left).
    """
    choice = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    values: dict[str, Any] = {
        "slider": choice(("left", "right")),
        "drawer": choice(("open", "closed")),
        "lightbulb": int(rng.integers(2)),
        "led": 0 if num_objs == 3 else int(rng.integers(2)),
    }
    if num_objs == 7:
        free = list(BLOCK_LOCATIONS)
        for block in BLOCK_OBJECTS:
            if block in objects:
                options = [loc for loc in free if loc != f"slider_{values['slider']}"]
                values[block] = choice(options)
                free.remove(values[block])
        for block in BLOCK_OBJECTS:
            if block not in objects:
                values[block] = choice(free)
                free.remove(values[block])
    return LogicalState(**values)


class ExploreEnv(MetaEnv):
    """The Explore setting over a PlayTableEnv (see docs/DESIGN.md for reset options and info keys)."""

    setting: ClassVar[str] = "explore"
    reset_option_keys = frozenset({"combination", "meta_task", "meta_position", "initial_state"})

    def __init__(self, sim: Any, *, num_objs: int = 5, block_holdout: bool = False, **kwargs: Any) -> None:
        if num_objs not in EXPLORE_NUM_OBJS:
            raise ValueError(f"env.num_objs must be one of {list(EXPLORE_NUM_OBJS)}, got {num_objs!r}")
        self.num_objs = num_objs
        self.pool: ExplorePool = self._make_pool(num_objs, block_holdout)
        super().__init__(sim, **kwargs)

    @staticmethod
    def _make_pool(num_objs: int, block_holdout: bool) -> ExplorePool:
        return explore_pool(num_objs, block_holdout)

    @property
    def objects_per_episode(self) -> int:
        return self.pool.objects_per_episode

    def default_num_trials(self) -> int:
        return self.thesis_num_trials({"num_objs": self.num_objs})

    @classmethod
    def thesis_num_trials(cls, cfg: Mapping[str, Any]) -> int:
        return 5 if cfg.get("num_objs") == 7 else 4  # the thesis: 4 trials for 3/5 objects, 5 for 7

    def combinations(self, split: str | None = None) -> tuple[tuple[str, ...], ...]:
        """The object combinations of `split` (default: this env's split), in pool order."""
        return self.pool.combinations(split or self.split)

    @classmethod
    def describe_config(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """Pool, tasks and splits that an `env` config selects, without building the simulator."""
        pool = cls._make_pool(cfg.get("num_objs", 5), bool(cfg.get("block_holdout", False)))
        return {"setting": cls.setting, "pool": list(pool.objects), "objects_per_episode": pool.objects_per_episode,
                "tasks": list(pool.tracked_tasks), "train": [list(c) for c in pool.train],
                "heldout": [list(c) for c in pool.heldout]}

    # ---- episode sampling -----------------------------------------------------------------------
    def _sample_state(self, rng: np.random.Generator, objects: list[str]) -> LogicalState:
        return sample_state(rng, self.num_objs, objects)

    def _sample_episode(self, rng: np.random.Generator, options: Mapping[str, Any]) -> Episode:
        pool = self.pool
        meta_task = options.get("meta_task")
        position = options.get("meta_position")
        if meta_task is not None and meta_task not in pool.tracked_tasks:
            raise ValueError(f"meta_task {meta_task!r} is not a task of {self.setting} with num_objs={self.num_objs}; "
                             f"allowed: {list(pool.tracked_tasks)}")
        meta_obj = TASK_OBJECT[meta_task] if meta_task is not None else None
        if options.get("combination") is not None:
            objects = list(options["combination"])
            pool.check_combination(objects, self.split)
            if meta_obj is not None and meta_obj not in objects:
                raise ValueError(f"meta_task {meta_task!r} acts on {meta_obj!r}, which is not in the combination {objects}")
        else:
            combos = [c for c in pool.combinations(self.split) if meta_obj is None or meta_obj in c]
            if not combos:
                raise ValueError(f"no {self.split} combination of num_objs={self.num_objs} contains {meta_obj!r} "
                                 f"(meta_task {meta_task!r}); allowed combinations: "
                                 f"{[list(c) for c in pool.combinations(self.split)]}")
            objects = list(combos[int(rng.integers(len(combos)))])
            rng.shuffle(objects)
        if position is not None:
            if not isinstance(position, (int, np.integer)) or not 0 <= int(position) < len(objects):
                raise ValueError(f"meta_position must be an index in [0, {len(objects) - 1}], got {position!r}")
            position = int(position)
            if meta_obj is None:
                meta_obj = objects[position]
            else:  # place the rewarding object at the requested index, the others keep their order
                objects.remove(meta_obj)
                objects.insert(position, meta_obj)
        state = self._episode_state(rng, objects, meta_obj, meta_task, options.get("initial_state"))
        if meta_obj is None:
            meta_obj = objects[int(rng.integers(len(objects)))]
        meta_task = feasible_task(meta_obj, state)
        return Episode(objects=objects, state=state, meta_task=meta_task, meta_position=objects.index(meta_obj),
                       tracked=tuple(pool.tracked_tasks))

    def _episode_state(self, rng: np.random.Generator, objects: list[str], meta_obj: str | None,
                       meta_task: str | None, given: Any) -> LogicalState:
        def ok(state: LogicalState) -> bool:
            if any(feasible_task(o, state) is None for o in objects):
                return False
            return meta_task is None or feasible_task(meta_obj, state) == meta_task

        if given is not None:
            state = given if isinstance(given, LogicalState) else LogicalState.from_dict(given)
            if not ok(state):
                raise ValueError(f"initial_state {state.to_dict()} does not make every episode object usable "
                                 f"{ {o: feasible_task(o, state) for o in objects} } or meta_task {meta_task!r} feasible")
            return state
        for _ in range(MAX_STATE_DRAWS):
            state = self._sample_state(rng, objects)
            if meta_task is not None and meta_obj in STATIC_OBJECTS:
                state = state.with_(**required_state(meta_task))
            if ok(state):
                return state
        raise ValueError(f"could not draw an initial state making {meta_task!r} feasible for objects {objects}")

    # ---- trial rules and feedback ---------------------------------------------------------------
    def _judge(self, new_tasks: list[str]) -> Judgement:
        if self.episode.meta_task in new_tasks:
            return Judgement(trial_over=True, rewarded=True)
        if new_tasks and self.provide_feedback:
            return Judgement(trial_over=True)  # any other tracked task ends the trial unrewarded
        return Judgement()

    def _first_feedback(self) -> dict[str, Any]:
        objs = self.episode.objects
        text = feedback.objects_text(objs)
        return {"train_feedback": feedback.explore_first_trial(objs),
                "alt_feedback": self._para.first_trial(text),
                "lm_feedback": chat.first_trial_message(self.env_status())}

    def _trial_end_feedback(self, result: Mapping[str, Any]) -> dict[str, Any]:
        ep = self.episode
        done = result["completed_tasks"]
        outcomes = [(task_instruction(t), t == ep.meta_task) for t in done]
        lm = chat.trial_end_message(result["trial"] + 1, outcomes, self.env_status())
        if result["reward"] > 0:
            return {"train_feedback": feedback.explore_rewarded(ep.meta_task),
                    "alt_feedback": self._para.rewarded(ep.meta_task), "lm_feedback": lm}
        explored = self.explored_objects()
        earlier = ep.meta_task if any(r["reward"] > 0 for r in self._results) else None
        text = feedback.objects_text(ep.objects)
        return {"train_feedback": feedback.explore_unrewarded(ep.objects, explored, earlier),
                "alt_feedback": self._para.unrewarded(text, feedback.objects_text(explored) or None, earlier),
                "lm_feedback": lm}

    def _mid_feedback(self, new_tasks: list[str], obs: Mapping[str, Any]) -> dict[str, Any]:
        return self._feedback  # every completed tracked task ends an Explore trial: no mid-trial feedback
