"""Scripted motion primitives: the expert's hands, one per playtable task.

A primitive is a short list of phases (travel above a part, descend, push / pull / press / grasp,
retreat). Every phase recomputes its TCP goal from the current observation (the part's joint value
or the block's pose in `scene_obs`, the TCP in `robot_obs`) and steers towards it with relative
actions, so a primitive is closed-loop and works from any valid initial state and robot base. Tasks
happen only through contacts: the fingers push the door knob and the switch, press the button, hook
the drawer handle and grasp blocks.

    prim = make_primitive("open_drawer")
    prim.reset(obs)
    while not prim.done:
        obs, *_ = env.step(prim.act(obs))
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from metamanip.envs import layout as L
from metamanip.envs.scene import BLOCK_INDEX, DRAWER, LED, LIGHTBULB, SLIDER, SWITCH, block_location
from metamanip.envs.tasks import TASKS

log = logging.getLogger(__name__)

MAX_REL_POS = 0.02   # the env's scaling of relative actions (m and rad per unit)
MAX_REL_ORN = 0.05
SAFE_Z = 0.64        # travel height over the shelf: fingertips clear its walls and the door knob
LOW_TRAVEL_Z = 0.56  # travel height in front of the shelf: fingertips 7 cm above a block on the table
FINGER_TIP = 0.011   # fingertips sit this far below the TCP
OPEN, CLOSE = 1.0, -1.0
POS_GAIN = 0.7      # fraction of the remaining error commanded per step (relative targets accumulate)
PART_YAW = np.pi / 2  # gripper yaw for pushing and pulling: fingers side by side along x, hand thin in y

Obs = Mapping[str, np.ndarray]
Goal = Callable[[Obs], Sequence[float]]


@dataclass
class Phase:
    """Steer the TCP to `goal(obs)` with the gripper at `gripper`; the phase ends when the goal is reached
    within `tol` (or `until(obs)` holds, if given) and `hold` more steps have passed."""

    name: str
    goal: Goal
    gripper: float
    tol: float = 0.01
    until: Callable[[Obs], bool] | None = None
    hold: int = 0
    max_steps: int = 80
    speed: float = 1.0


def _tcp(obs: Obs) -> np.ndarray:
    return np.asarray(obs["robot_obs"][:3], dtype=np.float64)


def _scene(obs: Obs) -> np.ndarray:
    return np.asarray(obs["scene_obs"], dtype=np.float64)


def _wrap(a: np.ndarray | float) -> np.ndarray:
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


class Primitive:
    """Runs phases in order; `act(obs)` gives the next relative action, `done` says the motion is over."""

    def __init__(self, task: str, phases: Sequence[Phase], yaw: Callable[[Obs], float] | float = PART_YAW,
                 max_steps: int = 200) -> None:
        self.task = task
        self.phases = list(phases)
        self._yaw_fn = yaw if callable(yaw) else (lambda obs, y=float(yaw): y)
        self.max_steps = max_steps
        self.reset(None)

    def reset(self, obs: Obs | None) -> None:
        """Start over (from the observation the task starts in)."""
        self._index = 0
        self._phase_steps = 0
        self._held = 0
        self.steps = 0
        self._yaw: float | None = None
        self.start_obs = obs
        if obs is not None:
            self._yaw = self._choose_yaw(obs)

    @property
    def done(self) -> bool:
        return self._index >= len(self.phases) or self.steps >= self.max_steps

    @property
    def phase(self) -> str:
        return self.phases[self._index].name if self._index < len(self.phases) else "done"

    def _choose_yaw(self, obs: Obs) -> float:
        """The wanted yaw, or the equivalent one (yaw ± π: the hand is symmetric) nearest the current yaw."""
        want = float(self._yaw_fn(obs))
        now = float(obs["robot_obs"][5])
        flipped = want - np.pi if want > 0 else want + np.pi
        return want if abs(_wrap(want - now)) <= abs(_wrap(flipped - now)) else flipped

    def act(self, obs: Obs) -> np.ndarray:
        """The next relative action (7,) in [-1, 1]: xyz, euler xyz, gripper."""
        if self._yaw is None:
            self.reset(obs)
        self.steps += 1
        while self._index < len(self.phases):
            ph = self.phases[self._index]
            goal = np.asarray(ph.goal(obs), dtype=np.float64)
            reached = ph.until(obs) if ph.until is not None else bool(np.all(np.abs(goal - _tcp(obs)) < ph.tol))
            if reached or self._phase_steps >= ph.max_steps:
                if not reached:
                    log.debug("%s: phase %s gave up after %d steps", self.task, ph.name, self._phase_steps)
                if self._held < ph.hold and reached:
                    self._held += 1
                    break
                self._index += 1
                self._phase_steps = 0
                self._held = 0
                continue
            break
        if self._index >= len(self.phases):
            last = self.phases[-1]
            return np.array([0, 0, 0, 0, 0, 0, last.gripper], dtype=np.float32)
        ph = self.phases[self._index]
        self._phase_steps += 1
        goal = np.asarray(ph.goal(obs), dtype=np.float64)
        pos = np.clip(POS_GAIN * (goal - _tcp(obs)) / MAX_REL_POS, -ph.speed, ph.speed)
        want = np.array([np.pi, 0.0, self._yaw])
        orn = np.clip(_wrap(want - np.asarray(obs["robot_obs"][3:6], dtype=np.float64)) / MAX_REL_ORN * 0.5, -1, 1)
        return np.concatenate([pos, orn, [ph.gripper]]).astype(np.float32)


# ---- building blocks ------------------------------------------------------------------------------
def _travel(name: str, xy: Callable[[Obs], Sequence[float]], gripper: float, z: float = SAFE_Z) -> list[Phase]:
    """Rise where we are (to the travel height, or above the shelf walls when starting over the shelf),
    then fly there at height z."""
    def rise_z(o: Obs) -> float:
        t = _tcp(o)
        over_shelf = t[1] > L.TRAY_Y[0] - 0.06
        return max(z, SAFE_Z if over_shelf else z, t[2])

    rise = Phase(f"{name}:rise", lambda o: (*_tcp(o)[:2], rise_z(o)), gripper, tol=0.02,
                 until=lambda o: _tcp(o)[2] > rise_z(o) - 0.02)
    fly = Phase(f"{name}:fly", lambda o: (*xy(o), z), gripper, tol=0.015)
    return [rise, fly]


def _up_to(z: float, gripper: float, name: str = "retreat") -> Phase:
    """Go straight up to height z (x and y held where they are)."""
    return Phase(name, lambda o: (*_tcp(o)[:2], z), gripper, tol=0.015, until=lambda o: _tcp(o)[2] > z - 0.015)


# ---- the tasks ----------------------------------------------------------------------------------------------
def _slider(direction: int) -> list[Phase]:
    """Push the door knob: direction -1 moves the door left (q up), +1 right (q down)."""
    side = 0.034  # finger centre beside the knob centre, on the side we push from
    z = L.DOOR_Z + L.DOOR_SIZE[2] / 2 + 0.007 + FINGER_TIP  # fingertips just above the lid

    def knob(o: Obs) -> np.ndarray:
        return L.door_knob_pos(_scene(o)[SLIDER])

    behind = -direction * side  # push towards `direction` from the other side

    def at_knob(o: Obs) -> tuple[float, float]:
        k = knob(o)
        return (k[0] + behind, k[1])

    target_q = L.SLIDER_RANGE[1] - 0.01 if direction < 0 else 0.01
    finished = (lambda o: _scene(o)[SLIDER] > target_q) if direction < 0 else (lambda o: _scene(o)[SLIDER] < target_q)

    def push(o: Obs) -> tuple[float, float, float]:
        k = knob(o)
        return (k[0] + behind + direction * 0.03, k[1], z)

    return [*_travel("approach", at_knob, CLOSE),
            Phase("descend", lambda o: (*at_knob(o), z), CLOSE, tol=0.008),
            Phase("push", push, CLOSE, until=finished, max_steps=60, speed=0.6),
            _up_to(SAFE_Z, CLOSE)]


def _drawer(opening: bool) -> list[Phase]:
    """Open: hook the fingers behind the handle bar and pull. Close: push the bar from the front."""
    z = L.DRAWER_HANDLE_Z + L.DRAWER_HANDLE_SIZE[2] / 2 - 0.018 + FINGER_TIP
    bar_half = L.DRAWER_HANDLE_SIZE[1] / 2

    def gap_y(o: Obs) -> float:  # between the front plate and the bar
        q = _scene(o)[DRAWER]
        return (L.drawer_handle_pos(q)[1] + bar_half + L.drawer_front_y(q)) / 2

    def front_y(o: Obs) -> float:  # in front of the bar
        return L.drawer_handle_pos(_scene(o)[DRAWER])[1] - bar_half - 0.022

    if opening:
        spot = gap_y
        done = lambda o: _scene(o)[DRAWER] > L.DRAWER_RANGE[1] - 0.015  # noqa: E731
        move = lambda o: (L.DRAWER_X, gap_y(o) - 0.03, z)  # noqa: E731
    else:
        spot = front_y
        done = lambda o: _scene(o)[DRAWER] < 0.01  # noqa: E731
        move = lambda o: (L.DRAWER_X, front_y(o) + 0.03, z)  # noqa: E731
    return [*_travel("approach", lambda o: (L.DRAWER_X, spot(o)), CLOSE, z=LOW_TRAVEL_Z),
            Phase("descend", lambda o: (L.DRAWER_X, spot(o), z), CLOSE, tol=0.008),
            Phase("pull" if opening else "push", move, CLOSE, until=done, max_steps=60, speed=0.6),
            *([Phase("back_off", lambda o: (L.DRAWER_X, _tcp(o)[1] - 0.02, z), CLOSE, tol=0.01, max_steps=6)]
              if not opening else []),
            _up_to(LOW_TRAVEL_Z, CLOSE)]


def _button() -> list[Phase]:
    """Press the button past its trigger point once, then let go (each press toggles the LED)."""
    xy = L.BUTTON_XY
    above = L.button_top(0.0)[2] + 0.03 + FINGER_TIP
    pressed = L.button_top(L.BUTTON_RANGE[1])[2] - 0.004 + FINGER_TIP

    def flipped(o: Obs) -> bool:
        return _scene(o)[2] > L.BUTTON_TRIGGER + 0.004

    return [*_travel("approach", lambda o: xy, CLOSE, z=LOW_TRAVEL_Z),
            Phase("hover", lambda o: (*xy, above), CLOSE, tol=0.008),
            Phase("press", lambda o: (*xy, pressed), CLOSE, until=flipped, max_steps=40, speed=0.5, hold=2),
            _up_to(above + 0.03, CLOSE, "release")]


def _switch(on: bool) -> list[Phase]:
    """Slide the switch knob to the right (on) or to the left (off)."""
    direction = 1 if on else -1
    side = 0.034
    z = L.TABLE_TOP_Z + 0.006 + FINGER_TIP

    def beside(o: Obs) -> tuple[float, float]:
        k = L.switch_knob_pos(_scene(o)[SWITCH])
        return (k[0] - direction * side, k[1])

    def push(o: Obs) -> tuple[float, float, float]:
        k = L.switch_knob_pos(_scene(o)[SWITCH])
        return (k[0] - direction * side + direction * 0.03, k[1], z)

    done = (lambda o: _scene(o)[SWITCH] > L.SWITCH_RANGE[1] - 0.008) if on else (lambda o: _scene(o)[SWITCH] < 0.008)
    return [*_travel("approach", beside, CLOSE, z=LOW_TRAVEL_Z),
            Phase("descend", lambda o: (*beside(o), z), CLOSE, tol=0.008),
            Phase("push", push, CLOSE, until=done, max_steps=40, speed=0.5),
            _up_to(LOW_TRAVEL_Z, CLOSE)]


def _lift(color: str, surface: str) -> tuple[list[Phase], Callable[[Obs], float]]:
    """Grasp the block across its short side and lift it clear of everything."""
    i = BLOCK_INDEX[color]
    lift_to = 0.12 if surface == "table" else 0.10

    def block(o: Obs) -> np.ndarray:
        return _scene(o)[i:i + 3]

    start: dict[str, np.ndarray] = {}

    def origin(o: Obs) -> np.ndarray:
        """The block's pose when the primitive first looked at it (before any contact)."""
        return start.setdefault("pos", block(o).copy())

    def grasp_z(o: Obs) -> float:
        return float(block(o)[2]) + 0.004

    def gripper_closed(o: Obs) -> bool:
        return bool(o["robot_obs"][6] < L.BLOCK_SIZES[color][1] + 0.004)

    def lift_goal(o: Obs) -> tuple[float, float, float]:
        x, y, z = origin(o)
        return (x, y, z + lift_to + 0.01)

    phases = [*_travel("approach", lambda o: origin(o)[:2], OPEN),
              Phase("descend", lambda o: (*block(o)[:2], grasp_z(o)), OPEN, tol=0.006, max_steps=40),
              Phase("close", lambda o: (*block(o)[:2], grasp_z(o)), CLOSE, until=gripper_closed, hold=4, max_steps=25),
              Phase("lift", lift_goal, CLOSE, tol=0.01, until=lambda o: block(o)[2] > origin(o)[2] + lift_to,
                    max_steps=40, speed=0.7)]
    return phases, lambda o: float(_scene(o)[i + 5])


class _LiftPrimitive(Primitive):
    """A lift primitive that forgets the block's start height on reset."""

    def __init__(self, task: str, color: str, surface: str) -> None:
        self._color, self._surface = color, surface
        phases, yaw = _lift(color, surface)
        super().__init__(task, phases, yaw)

    def reset(self, obs: Obs | None) -> None:
        phases, yaw = _lift(self._color, self._surface)
        self.phases = phases
        self._yaw_fn = yaw
        super().reset(obs)


def make_primitive(task: str) -> Primitive:
    """The scripted motion for `task` (one of `metamanip.envs.tasks.TASKS`)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {list(TASKS)}")
    if task in ("move_slider_left", "move_slider_right"):
        return Primitive(task, _slider(-1 if task == "move_slider_left" else 1))
    if task in ("open_drawer", "close_drawer"):
        return Primitive(task, _drawer(task == "open_drawer"))
    if task in ("turn_on_led", "turn_off_led"):
        return Primitive(task, _button())
    if task in ("turn_on_lightbulb", "turn_off_lightbulb"):
        return Primitive(task, _switch(task == "turn_on_lightbulb"))
    _, color, _, surface = task.split("_")
    return _LiftPrimitive(task, color, surface)


def feasible(task: str, scene_obs: np.ndarray) -> bool:
    """Whether `task` can be done from this scene_obs (the part is in the state the task starts from)."""
    s = np.asarray(scene_obs, dtype=np.float64)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {list(TASKS)}")
    if task == "move_slider_left":
        return s[SLIDER] < L.SLIDER_RANGE[1] - 0.15
    if task == "move_slider_right":
        return s[SLIDER] > 0.15
    if task == "open_drawer":
        return s[DRAWER] < L.DRAWER_RANGE[1] - 0.12
    if task == "close_drawer":
        return s[DRAWER] > 0.12
    if task.endswith("_led"):
        return (s[LED] > 0.5) == (task == "turn_off_led")
    if task.endswith("_lightbulb"):
        return (s[LIGHTBULB] > 0.5) == (task == "turn_off_lightbulb")
    _, color, _, surface = task.split("_")
    loc = block_location(s, color)
    if surface == "table":
        return loc == "table"
    if loc == "table":
        return False
    covered_left = s[SLIDER] > L.SLIDER_RANGE[1] / 2
    return (loc == "slider_left") != covered_left
