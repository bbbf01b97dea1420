"""Single object: an Explore-like setting with exactly one object, so the meta task is always its task.

There is nothing to explore: the rewarding task is the one task the object affords. It exists to show
that the policy chain (data → model → training → evaluation) learns at all, on the smallest problem
with the same step / info / feedback interface as Explore. The chosen object's state is drawn at random
(for the LED: on or off, both solved by pressing the button); every other object keeps a fixed state.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from metamanip.settings.explore import ExploreEnv
from metamanip.settings.objects import ALL_OBJECTS, BLOCK_OBJECTS, LogicalState, TASK_OBJECT
from metamanip.settings.splits import ExplorePool

SINGLE_OBJECTS: tuple[str, ...] = ("led", "drawer", "slider", "lightbulb", "red_block", "pink_block", "blue_block")


def single_pool(obj: str) -> ExplorePool:
    if obj not in ALL_OBJECTS:
        raise ValueError(f"env.object must be one of {list(SINGLE_OBJECTS)}, got {obj!r}")
    tracked = tuple(t for t, o in TASK_OBJECT.items() if o == obj)
    return ExplorePool(num_objs=1, objects=(obj,), objects_per_episode=1, tracked_tasks=tracked,
                       train=((obj,),), heldout=((obj,),))


class SingleObjectEnv(ExploreEnv):
    """One object, one task, `num_trials` trials (default 2) of `trial_steps` steps."""

    setting: ClassVar[str] = "single_object"

    def __init__(self, sim: Any, *, object: str = "led", **kwargs: Any) -> None:  # noqa: A002 (config name)
        self.object = object
        self.num_objs = 1
        self.pool = single_pool(object)
        super(ExploreEnv, self).__init__(sim, **kwargs)

    @classmethod
    def thesis_num_trials(cls, cfg: Mapping[str, Any]) -> int:
        return 2

    @classmethod
    def describe_config(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        pool = single_pool(cfg.get("object", "led"))
        return {"setting": cls.setting, "pool": list(pool.objects), "objects_per_episode": 1,
                "tasks": list(pool.tracked_tasks), "train": [list(c) for c in pool.train],
                "heldout": [list(c) for c in pool.heldout]}

    def _sample_state(self, rng: np.random.Generator, objects: list[str]) -> LogicalState:
        base = LogicalState()
        obj = self.object
        if obj in BLOCK_OBJECTS:
            return base.with_(**{obj: "table"})  # on the table (next to the red block if it is another one)
        if obj == "slider":
            return base.with_(slider=("left", "right")[int(rng.integers(2))])
        if obj == "drawer":
            return base.with_(drawer=("open", "closed")[int(rng.integers(2))])
        return base.with_(**{obj: int(rng.integers(2))})
