"""A small stand-in simulator for the trial/episode state machine tests.

`FakeSim` keeps a 24-D scene_obs in the CALVIN layout and understands one "command" per action
(action[0] * 10 rounded): 1 flips the drawer, 2 flips the sliding door, 3 presses the button (toggles
the LED), 4 flips the switch (toggles the lightbulb), 5 lifts the red block, 6 puts it back, 7 lifts the
blue block; anything else does nothing. `fake_detect` diffs two snapshots like the real detectors.
"""
from __future__ import annotations

from typing import Any

import numpy as np

TABLE = {"red": (0.05, -0.12, 0.46), "blue": (0.23, -0.12, 0.46), "pink": (0.23, -0.12, 0.46)}
SLOTS = {"slider_left": (-0.24, 0.09, 0.46), "slider_right": (0.07, 0.09, 0.46)}
BLOCK_IDX = {"red": 6, "blue": 12, "pink": 18}

NOOP, DRAWER, SLIDER, BUTTON, SWITCH, LIFT_RED, DROP_RED, LIFT_BLUE = range(8)


def act(cmd: int) -> np.ndarray:
    a = np.zeros(7, dtype=np.float32)
    a[0] = cmd / 10.0
    return a


def fake_make_scene_obs(drawer_open: bool, slider_left: bool, led_on: bool, lightbulb_on: bool,
                        blocks: dict[str, str], rng: np.random.Generator | None = None,
                        block_noise: bool = False) -> np.ndarray:
    rng = rng or np.random.default_rng(0)
    s = np.zeros(24)
    s[0] = 0.28 if slider_left else 0.0
    s[1] = 0.22 if drawer_open else 0.0
    s[3] = 0.088 if lightbulb_on else 0.0
    s[4] = float(lightbulb_on)
    s[5] = float(led_on)
    for color, loc in blocks.items():
        i = BLOCK_IDX[color]
        pos = np.array(TABLE[color] if loc == "table" else SLOTS[loc], dtype=float)
        if block_noise and loc == "table":
            pos[0] += rng.uniform(0.0, 0.15)
        s[i:i + 3] = pos
        s[i + 5] = rng.uniform(np.pi / 2 - np.pi / 8, np.pi / 2 + np.pi / 8)
    return s


def fake_detect(start: dict, now: dict, tasks) -> set[str]:
    a, b = start["scene_obs"], now["scene_obs"]
    seen = set()
    d = b[1] - a[1]
    if d > 0.12:
        seen.add("open_drawer")
    if d < -0.12:
        seen.add("close_drawer")
    d = b[0] - a[0]
    if d > 0.15:
        seen.add("move_slider_left")
    if d < -0.15:
        seen.add("move_slider_right")
    for idx, name in ((5, "led"), (4, "lightbulb")):
        if a[idx] < 0.5 <= b[idx]:
            seen.add(f"turn_on_{name}")
        if a[idx] >= 0.5 > b[idx]:
            seen.add(f"turn_off_{name}")
    for color, i in BLOCK_IDX.items():
        if b[i + 2] - a[i + 2] > 0.05:
            seen.add(f"lift_{color}_block_{'table' if a[i + 1] < 0 else 'slider'}")
    return seen & set(tasks)


class FakeSim:
    """Stand-in for PlayTableEnv: reset(options=scene_obs/base_pos), step, get_info, get_state."""

    def __init__(self) -> None:
        self.scene = np.zeros(24)
        self.base_pos = None
        self.resets: list[dict[str, Any]] = []
        self.steps = 0

    def _obs(self) -> dict[str, np.ndarray]:
        img = np.zeros((4, 4, 3), dtype=np.uint8)
        img[..., 0] = np.uint8(self.scene[1] * 1000 % 255)
        return {"rgb_static": img, "robot_obs": np.zeros(15, dtype=np.float32),
                "scene_obs": self.scene.astype(np.float32)}

    def reset(self, seed: int | None = None, options: dict | None = None):
        options = options or {}
        self.scene = np.array(options["scene_obs"], dtype=float)
        self.base_pos = None if options.get("base_pos") is None else np.array(options["base_pos"])
        self.resets.append({"scene_obs": self.scene.copy(), "base_pos": self.base_pos})
        return self._obs(), {}

    def step(self, action):
        self.steps += 1
        cmd = int(round(float(action[0]) * 10))
        s = self.scene
        if cmd == DRAWER:
            s[1] = 0.0 if s[1] > 0.11 else 0.22
        elif cmd == SLIDER:
            s[0] = 0.0 if s[0] > 0.14 else 0.28
        elif cmd == BUTTON:
            s[5] = 1.0 - s[5]
        elif cmd == SWITCH:
            s[4] = 1.0 - s[4]
        elif cmd == LIFT_RED:
            s[8] += 0.1
        elif cmd == DROP_RED:
            s[8] -= 0.1
        elif cmd == LIFT_BLUE:
            s[14] += 0.1
        return self._obs(), 0.0, False, False, {"action_rel": np.asarray(action), "action_abs": np.zeros(7)}

    def get_info(self) -> dict:
        return {"scene_obs": self.scene.copy()}

    def get_state(self) -> dict:
        return {"scene_obs": self.scene.copy(), "base_pos": self.base_pos}
