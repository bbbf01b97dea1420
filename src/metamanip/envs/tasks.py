"""Task detectors: a task is done when the diff between two `get_info()` snapshots says so (CALVIN).

Thresholds are CALVIN's (scene D, scaled units): slider ±0.15, drawer ±0.12, lights flip their logical
state, a block is lifted when it rose more than 0.05 (from the table) / 0.03 (from a slider slot), the
robot is the only body it touches now, and at the start it touched that surface.
Detection is a state diff, not an event: undoing an action un-detects it.

`TASKS` are the 14 tasks of the meta-learning settings (each has a scripted primitive). `EXTRA_TASKS`
(CALVIN's block pushes and rotations, detectors only) are reported when asked for by name.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np

from metamanip.envs import layout as L
from metamanip.envs.scene import BLOCK_INDEX, DRAWER, LED, LIGHTBULB, SLIDER

SLIDER_THRESHOLD = 0.15
DRAWER_THRESHOLD = 0.12
LIFT_THRESHOLD = {"table": 0.05, "slider": 0.03}
# (body name, link index) of the surfaces a block must have touched at the start of a lift.
TABLE_BODY = "table"
ROBOT_BODY = "robot"
SURFACE_LINK = {"table": -1, "slider": 6}
PUSH_DISTANCE = 0.1          # CALVIN push_object: x moved by more than 10 cm
ROTATE_DEGREES = 60.0        # CALVIN rotate_object: yaw turned by more than 60°, ...
TILT_DEGREES = 30.0          # ... roll and pitch stay under 30°, ...
ROTATE_MAX_SHIFT = 0.1       # ... and the block moved less than 10 cm

Snapshot = Mapping[str, Any]


def _door(index: int, threshold: float) -> Callable[[Snapshot, Snapshot], bool]:
    def check(start: Snapshot, now: Snapshot) -> bool:
        d = float(now["scene_obs"][index]) - float(start["scene_obs"][index])
        return d > threshold if threshold > 0 else d < threshold
    return check


def _light(index: int, on: bool) -> Callable[[Snapshot, Snapshot], bool]:
    def check(start: Snapshot, now: Snapshot) -> bool:
        a, b = float(start["scene_obs"][index]) > 0.5, float(now["scene_obs"][index]) > 0.5
        return (not a and b) if on else (a and not b)
    return check


def _lift(color: str, surface: str) -> Callable[[Snapshot, Snapshot], bool]:
    z = BLOCK_INDEX[color] + 2
    threshold = LIFT_THRESHOLD[surface]
    link = SURFACE_LINK[surface]

    def check(start: Snapshot, now: Snapshot) -> bool:
        if float(now["scene_obs"][z]) - float(start["scene_obs"][z]) <= threshold:
            return False
        end = now["contacts"][color]
        if {body for body, _ in end} != {ROBOT_BODY}:
            return False
        return (TABLE_BODY, link) in start["contacts"][color]
    return check


def _push(color: str, direction: int) -> Callable[[Snapshot, Snapshot], bool]:
    x = BLOCK_INDEX[color]

    def check(start: Snapshot, now: Snapshot) -> bool:
        dx = float(now["scene_obs"][x]) - float(start["scene_obs"][x])
        if dx * direction <= PUSH_DISTANCE:
            return False
        on_table = lambda contacts: any(body == TABLE_BODY for body, _ in contacts)  # noqa: E731
        return on_table(start["contacts"][color]) and on_table(now["contacts"][color])
    return check


def _rotate(color: str, direction: int) -> Callable[[Snapshot, Snapshot], bool]:
    i = BLOCK_INDEX[color]

    def check(start: Snapshot, now: Snapshot) -> bool:
        a, b = np.asarray(start["scene_obs"], dtype=float), np.asarray(now["scene_obs"], dtype=float)
        dyaw = np.degrees((b[i + 5] - a[i + 5] + np.pi) % (2 * np.pi) - np.pi)
        if dyaw * direction <= ROTATE_DEGREES:
            return False
        if np.any(np.abs(np.degrees(b[i + 3:i + 5])) >= TILT_DEGREES):
            return False
        if np.linalg.norm(b[i:i + 3] - a[i:i + 3]) >= ROTATE_MAX_SHIFT:
            return False
        return any(body != ROBOT_BODY for body, _ in now["contacts"][color])  # put down, not held
    return check


DETECTORS: dict[str, Callable[[Snapshot, Snapshot], bool]] = {
    "open_drawer": _door(DRAWER, DRAWER_THRESHOLD),
    "close_drawer": _door(DRAWER, -DRAWER_THRESHOLD),
    "move_slider_left": _door(SLIDER, SLIDER_THRESHOLD),
    "move_slider_right": _door(SLIDER, -SLIDER_THRESHOLD),
    "turn_on_led": _light(LED, True),
    "turn_off_led": _light(LED, False),
    "turn_on_lightbulb": _light(LIGHTBULB, True),
    "turn_off_lightbulb": _light(LIGHTBULB, False),
}
for _color in L.BLOCKS:
    for _surface in ("table", "slider"):
        DETECTORS[f"lift_{_color}_block_{_surface}"] = _lift(_color, _surface)

TASKS: tuple[str, ...] = tuple(DETECTORS)

for _color in L.BLOCKS:
    # facing the table, right is +x; rotating left is counter-clockwise seen from above (yaw grows)
    DETECTORS[f"push_{_color}_block_right"] = _push(_color, 1)
    DETECTORS[f"push_{_color}_block_left"] = _push(_color, -1)
    DETECTORS[f"rotate_{_color}_block_right"] = _rotate(_color, -1)
    DETECTORS[f"rotate_{_color}_block_left"] = _rotate(_color, 1)
EXTRA_TASKS: tuple[str, ...] = tuple(t for t in DETECTORS if t not in TASKS)


def check_tasks(tasks: Iterable[str]) -> list[str]:
    """The task names, or a ValueError naming the unknown ones and listing the valid ones."""
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid tasks: {list(TASKS)} (detectors only: {list(EXTRA_TASKS)})")
    return tasks


def detect_tasks(start_info: Snapshot, now_info: Snapshot, tasks: Iterable[str] = TASKS) -> set[str]:
    """The tasks among `tasks` that the change from `start_info` to `now_info` completes."""
    return {t for t in check_tasks(tasks) if DETECTORS[t](start_info, now_info)}
