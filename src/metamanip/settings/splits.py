"""Object pools and the train / held-out splits of Explore and Combi-Explore.

Explore (`num_objs` 3, 5, 7) draws its episode objects from a pool; some object combinations are held
out for evaluation. Combi-Explore's meta task is an unordered pair of subtasks on two different static
objects; four pairs are held out. The counts are those the thesis ran: Explore 1/1, 7/3, 21/10
combinations; Combi 20/4 pairs (see settings/README.md for where and why we differ from the original code).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from metamanip.settings.objects import BLOCK_OBJECTS, STATIC_OBJECTS, TASK_OBJECT

EXPLORE_NUM_OBJS: tuple[int, ...] = (3, 5, 7)

STATIC_TASKS: tuple[str, ...] = (
    "move_slider_left", "move_slider_right", "open_drawer", "close_drawer",
    "turn_on_lightbulb", "turn_off_lightbulb", "turn_on_led", "turn_off_led",
)
BLOCK_TASKS: tuple[str, ...] = tuple(
    f"lift_{b}_block_{loc}" for loc in ("table", "slider") for b in ("red", "pink", "blue")
)

# The four held-out Combi pairs of the original, as unordered pairs.
COMBI_HELDOUT: tuple[frozenset[str], ...] = (
    frozenset({"move_slider_right", "turn_off_led"}),
    frozenset({"close_drawer", "turn_on_lightbulb"}),
    frozenset({"turn_on_led", "turn_off_lightbulb"}),
    frozenset({"move_slider_left", "open_drawer"}),
)

SPLITS: tuple[str, ...] = ("train", "heldout")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


@dataclass(frozen=True)
class ExplorePool:
    """What `num_objs` selects: pool, objects per episode, tracked tasks and both combination splits."""

    num_objs: int
    objects: tuple[str, ...]
    objects_per_episode: int
    tracked_tasks: tuple[str, ...]
    train: tuple[tuple[str, ...], ...]
    heldout: tuple[tuple[str, ...], ...]

    def combinations(self, split: str) -> tuple[tuple[str, ...], ...]:
        return self.train if check_split(split) == "train" else self.heldout

    def check_combination(self, objects: tuple[str, ...] | list[str], split: str) -> tuple[str, ...]:
        """The pool-ordered combination of `objects`, or a clear error if `split` does not contain it."""
        objs = tuple(objects)
        unknown = [o for o in objs if o not in self.objects]
        if unknown or len(set(objs)) != len(objs) or len(objs) != self.objects_per_episode:
            raise ValueError(
                f"a combination for num_objs={self.num_objs} is {self.objects_per_episode} distinct objects of "
                f"{self.objects}; got {objs}")
        key = tuple(o for o in self.objects if o in objs)
        allowed = self.combinations(split)
        if key not in allowed:
            other = "heldout" if split == "train" else "train"
            where = f"it belongs to the {other} split" if key in self.combinations(other) else "it is in no split"
            raise ValueError(
                f"combination {objs} is not allowed under split={split!r} ({where}); allowed: "
                f"{[list(c) for c in allowed]}")
        return key


def explore_pool(num_objs: int, block_holdout: bool = False) -> ExplorePool:
    """The Explore pool for `num_objs` ∈ {3, 5, 7}.

    `block_holdout=True` applies the 7-object rule the original meant but never ran (combinations
    with both the red and the blue block held out); the default reproduces the thesis' 21/10 split.
    """
    if num_objs not in EXPLORE_NUM_OBJS:
        raise ValueError(f"env.num_objs must be one of {list(EXPLORE_NUM_OBJS)}, got {num_objs!r}")
    if block_holdout and num_objs != 7:
        raise ValueError("env.block_holdout applies only to num_objs=7 (the only pool with more than one block)")
    if num_objs == 3:
        objects = ("drawer", "lightbulb", "slider")
        tracked = ("open_drawer", "close_drawer", "turn_on_lightbulb", "turn_off_lightbulb",
                   "move_slider_left", "move_slider_right")
        combos = [objects]
        return ExplorePool(3, objects, 3, tracked, tuple(combos), tuple(combos))
    if num_objs == 5:
        objects = ("red_block",) + STATIC_OBJECTS
        tracked = STATIC_TASKS + ("lift_red_block_table",)
        per_episode = 3
    else:
        objects = BLOCK_OBJECTS + STATIC_OBJECTS
        tracked = STATIC_TASKS + BLOCK_TASKS
        per_episode = 4
    train, heldout = [], []
    for combo in itertools.combinations(objects, per_episode):
        if all(b in combo for b in BLOCK_OBJECTS):
            # three used blocks cannot all be reachable: one of the two slider slots is behind the door
            continue
        held = "slider" in combo and "led" in combo
        if block_holdout and "red_block" in combo and "blue_block" in combo:
            held = True
        (heldout if held else train).append(combo)
    return ExplorePool(num_objs, objects, per_episode, tracked, tuple(train), tuple(heldout))


def combi_pair(tasks: tuple[str, ...] | list[str] | frozenset[str]) -> tuple[str, str]:
    """A Combi meta task as a canonical ordered pair (subtask order of STATIC_TASKS)."""
    ts = list(tasks)
    if len(ts) != 2 or len(set(ts)) != 2 or any(t not in STATIC_TASKS for t in ts):
        raise ValueError(f"a Combi pair is two different subtasks of {list(STATIC_TASKS)}; got {ts}")
    if TASK_OBJECT[ts[0]] == TASK_OBJECT[ts[1]]:
        raise ValueError(f"a Combi pair needs two different objects; {ts} both act on {TASK_OBJECT[ts[0]]!r}")
    a, b = sorted(ts, key=STATIC_TASKS.index)
    return a, b


@dataclass(frozen=True)
class CombiPairs:
    """All 24 pairs of subtasks on different objects, split 20 train / 4 held-out, unordered."""

    subtasks: tuple[str, ...]
    train: tuple[tuple[str, str], ...]
    heldout: tuple[tuple[str, str], ...]

    def pairs(self, split: str) -> tuple[tuple[str, str], ...]:
        return self.train if check_split(split) == "train" else self.heldout

    def check_pair(self, tasks: tuple[str, ...] | list[str], split: str) -> tuple[str, str]:
        pair = combi_pair(tasks)
        if pair not in self.pairs(split):
            other = "heldout" if split == "train" else "train"
            raise ValueError(
                f"pair {list(tasks)} is not allowed under split={split!r} (it belongs to the {other} split, "
                f"in either order); allowed: {[list(p) for p in self.pairs(split)]}")
        return pair


def combi_pairs() -> CombiPairs:
    every = [p for p in itertools.combinations(STATIC_TASKS, 2) if TASK_OBJECT[p[0]] != TASK_OBJECT[p[1]]]
    heldout = tuple(p for p in every if frozenset(p) in COMBI_HELDOUT)
    train = tuple(p for p in every if frozenset(p) not in COMBI_HELDOUT)
    return CombiPairs(STATIC_TASKS, train, heldout)
