"""The objects of the meta-learning settings, their logical states and the one task each affords.

An episode's initial state is logical (door left/right, drawer open/closed, lights on/off, block
locations); `LogicalState.scene_obs` turns it into the simulator's 24-D `scene_obs`. Given that state,
every object has exactly one feasible task (the drawer can only be opened if it is closed, ...), which
is why the feedback can speak of objects instead of actions.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

import numpy as np

STATIC_OBJECTS: tuple[str, ...] = ("slider", "drawer", "led", "lightbulb")
BLOCK_OBJECTS: tuple[str, ...] = ("red_block", "pink_block", "blue_block")
ALL_OBJECTS: tuple[str, ...] = STATIC_OBJECTS + BLOCK_OBJECTS
BLOCK_LOCATIONS: tuple[str, ...] = ("table", "slider_left", "slider_right")

# Canonical instruction per task: the exact phrases of the original train_feedback.
TASK_INSTRUCTIONS: dict[str, str] = {
    "move_slider_left": "move the door to the left",
    "move_slider_right": "move the door to the right",
    "open_drawer": "pull the handle to open the drawer",
    "close_drawer": "push the handle to close the drawer",
    "turn_on_lightbulb": "turn on the lightbulb",
    "turn_off_lightbulb": "turn off the lightbulb",
    "turn_on_led": "turn on the led",
    "turn_off_led": "turn off the led",
    "lift_red_block_table": "lift the red block from the table",
    "lift_pink_block_table": "lift the pink block from the table",
    "lift_blue_block_table": "lift the blue block from the table",
    "lift_red_block_slider": "lift the red block from the slider",
    "lift_pink_block_slider": "lift the pink block from the slider",
    "lift_blue_block_slider": "lift the blue block from the slider",
}

# The object every task manipulates (explicit, not a substring match: "slider" is not explored by
# lifting a block out of the slider).
TASK_OBJECT: dict[str, str] = {
    "move_slider_left": "slider",
    "move_slider_right": "slider",
    "open_drawer": "drawer",
    "close_drawer": "drawer",
    "turn_on_lightbulb": "lightbulb",
    "turn_off_lightbulb": "lightbulb",
    "turn_on_led": "led",
    "turn_off_led": "led",
    **{f"lift_{b}_block_{loc}": f"{b}_block" for b in ("red", "pink", "blue") for loc in ("table", "slider")},
}

# Tasks that undo each other; completing one after the other counts as completing it (see TaskLatch).
TOGGLE_PARTNERS: dict[str, str] = {
    "open_drawer": "close_drawer",
    "close_drawer": "open_drawer",
    "turn_on_lightbulb": "turn_off_lightbulb",
    "turn_off_lightbulb": "turn_on_lightbulb",
    "turn_on_led": "turn_off_led",
    "turn_off_led": "turn_on_led",
    "move_slider_left": "move_slider_right",
    "move_slider_right": "move_slider_left",
}


def object_text(obj: str) -> str:
    """How the feedback names an object: `red_block` -> `red block`."""
    return obj.replace("_", " ")


def task_instruction(task: str) -> str:
    """The canonical instruction phrase of a task (the one the original feedback uses)."""
    try:
        return TASK_INSTRUCTIONS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known tasks: {sorted(TASK_INSTRUCTIONS)}") from None


@dataclass(frozen=True)
class LogicalState:
    """The logical initial state of the playtable that an episode restores at every trial."""

    slider: str = "right"  # where the sliding door is: "left" covers slider_left, "right" covers slider_right
    drawer: str = "closed"  # "open" | "closed"
    led: int = 0
    lightbulb: int = 0
    red_block: str = "table"
    pink_block: str = "slider_right"
    blue_block: str = "slider_left"

    def __post_init__(self) -> None:
        if self.slider not in ("left", "right"):
            raise ValueError(f"slider must be 'left' or 'right', got {self.slider!r}")
        if self.drawer not in ("open", "closed"):
            raise ValueError(f"drawer must be 'open' or 'closed', got {self.drawer!r}")
        for light in ("led", "lightbulb"):
            if getattr(self, light) not in (0, 1):
                raise ValueError(f"{light} must be 0 or 1, got {getattr(self, light)!r}")
        locs = [self.red_block, self.pink_block, self.blue_block]
        for b, loc in zip(BLOCK_OBJECTS, locs):
            if loc not in BLOCK_LOCATIONS:
                raise ValueError(f"{b} location must be one of {BLOCK_LOCATIONS}, got {loc!r}")
        for slot in ("slider_left", "slider_right"):
            if locs.count(slot) > 1:
                raise ValueError(f"two blocks cannot share {slot}: {dict(zip(BLOCK_OBJECTS, locs))}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LogicalState":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown state keys {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_(self, **changes: Any) -> "LogicalState":
        return replace(self, **changes)

    def value(self, obj: str) -> Any:
        if obj not in ALL_OBJECTS:
            raise ValueError(f"unknown object {obj!r}; objects: {ALL_OBJECTS}")
        return getattr(self, obj)

    def block_reachable(self, block: str) -> bool:
        """A block in a slider slot is reachable only when the door sits on the other side."""
        loc = self.value(block)
        return loc == "table" or loc != f"slider_{self.slider}"

    def scene_kwargs(self) -> dict[str, Any]:
        """The arguments of `metamanip.envs.scene.make_scene_obs` that encode this state."""
        return dict(
            drawer_open=self.drawer == "open",
            slider_left=self.slider == "left",
            led_on=bool(self.led),
            lightbulb_on=bool(self.lightbulb),
            blocks={"red": self.red_block, "blue": self.blue_block, "pink": self.pink_block},
        )


def feasible_task(obj: str, state: LogicalState) -> str | None:
    """The one task `obj` affords in `state`; None for a block hidden behind the sliding door."""
    if obj == "slider":
        return "move_slider_right" if state.slider == "left" else "move_slider_left"
    if obj == "drawer":
        return "close_drawer" if state.drawer == "open" else "open_drawer"
    if obj in ("led", "lightbulb"):
        return f"turn_{'off' if state.value(obj) else 'on'}_{obj}"
    if obj in BLOCK_OBJECTS:
        if not state.block_reachable(obj):
            return None
        where = "table" if state.value(obj) == "table" else "slider"
        return f"lift_{obj}_{where}"
    raise ValueError(f"unknown object {obj!r}; objects: {ALL_OBJECTS}")


def required_state(task: str) -> dict[str, Any]:
    """The state constraints that make `task` feasible (used to sample a state for a given meta task)."""
    obj = TASK_OBJECT.get(task)
    if obj is None:
        raise ValueError(f"unknown task {task!r}; known tasks: {sorted(TASK_OBJECT)}")
    if obj == "slider":
        return {"slider": "left" if task.endswith("right") else "right"}
    if obj == "drawer":
        return {"drawer": "closed" if task.startswith("open") else "open"}
    if obj in ("led", "lightbulb"):
        return {obj: 0 if "_on_" in task else 1}
    return {}  # blocks: location constraints are checked with feasible_task after sampling


def state_description(obj: str, state: LogicalState) -> str:
    """One line saying what `obj` is like in `state` (for the LLM's environment status)."""
    if obj == "slider":
        return f"The slider door is currently at the {state.slider}"
    if obj == "drawer":
        return f"The drawer is currently {state.drawer}"
    if obj == "led":
        return f"The LED is currently {'on' if state.led else 'off'}"
    if obj == "lightbulb":
        return f"The lightbulb is currently {'on' if state.lightbulb else 'off'}"
    where = "on the table" if state.value(obj) == "table" else "in the slider"
    return f"The {object_text(obj)} is currently {where}"


# Mid-range thresholds: a drawer pulled far enough to count as opened (0.12 of 0.22) reads as open.
DRAWER_OPEN_AT = 0.11
SLIDER_LEFT_AT = 0.14


def observed_state(scene_obs: np.ndarray, base: LogicalState) -> LogicalState:
    """The logical state read back from a 24-D scene_obs (doors and lights; blocks keep `base`)."""
    s = np.asarray(scene_obs, dtype=float)
    if s.shape != (24,):
        raise ValueError(f"scene_obs must have shape (24,), got {s.shape}")
    return base.with_(
        slider="left" if s[0] >= SLIDER_LEFT_AT else "right",
        drawer="open" if s[1] >= DRAWER_OPEN_AT else "closed",
        lightbulb=int(s[4] > 0.5),
        led=int(s[5] > 0.5),
    )
