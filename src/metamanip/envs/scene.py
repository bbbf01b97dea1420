"""The playtable's `scene_obs` (24 values, CALVIN layout) built from a logical state.

Index layout: 0 sliding door joint, 1 drawer joint, 2 button joint, 3 switch joint, 4 lightbulb on,
5 LED on, 6-11 / 12-17 / 18-23 red / blue / pink block xyz + Euler xyz.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from metamanip.envs import layout as L

SCENE_OBS_DIM = 24
SLIDER, DRAWER, BUTTON, SWITCH, LIGHTBULB, LED = range(6)
BLOCK_INDEX = {"red": 6, "blue": 12, "pink": 18}
DEFAULT_BLOCKS = {"red": "table", "blue": "slider_left", "pink": "slider_right"}
# Switch value for a lit bulb: past the trigger (0.044) with margin, as Meta-CALVIN's 0.07 ± 0.008.
SWITCH_ON = 0.07
SWITCH_ON_JITTER = 0.008


def check_blocks(blocks: Mapping[str, str]) -> dict[str, str]:
    """Validate a block → location map: every block named once, known locations, one block per slot."""
    unknown = set(blocks) - set(L.BLOCKS)
    if unknown:
        raise ValueError(f"unknown block(s) {sorted(unknown)}; valid blocks: {list(L.BLOCKS)}")
    missing = [b for b in L.BLOCKS if b not in blocks]
    if missing:
        raise ValueError(f"blocks must give a location for every block; missing {missing} "
                         f"(valid locations: {list(L.BLOCK_LOCATIONS)})")
    for b, loc in blocks.items():
        if loc not in L.BLOCK_LOCATIONS:
            raise ValueError(f"unknown location {loc!r} for the {b} block; valid locations: {list(L.BLOCK_LOCATIONS)}")
    locs = list(blocks.values())
    for slot in ("slider_left", "slider_right"):
        if locs.count(slot) > 1:
            raise ValueError(f"only one block fits {slot}, got {[b for b in blocks if blocks[b] == slot]}")
    if locs.count("table") > len(L.TABLE_SPOTS):
        raise ValueError(f"at most {len(L.TABLE_SPOTS)} blocks can stand on the table, got {locs.count('table')}")
    return {b: blocks[b] for b in L.BLOCKS}


def make_scene_obs(drawer_open: bool, slider_left: bool, led_on: bool, lightbulb_on: bool,
                   blocks: Mapping[str, str] | None = None, rng: np.random.Generator | None = None,
                   block_noise: bool = False) -> np.ndarray:
    """A valid initial scene_obs for a logical state.

    With `rng`, block yaws are drawn in π/2 ± π/8 and the switch of a lit bulb in 0.07 ± 0.008 (as
    Meta-CALVIN); without it they take the middle values. `block_noise` moves the first table block
    along x by U(0, 0.12) (the table-block noise of `reset_robot_pos`); it needs `rng`.
    """
    if block_noise and rng is None:
        raise ValueError("block_noise=True needs an rng (np.random.default_rng(seed))")
    placed = check_blocks(DEFAULT_BLOCKS if blocks is None else blocks)
    s = np.zeros(SCENE_OBS_DIM, dtype=np.float64)
    s[SLIDER] = L.SLIDER_RANGE[1] if slider_left else 0.0
    s[DRAWER] = L.DRAWER_RANGE[1] if drawer_open else 0.0
    if lightbulb_on:
        s[SWITCH] = SWITCH_ON + (rng.uniform(-SWITCH_ON_JITTER, SWITCH_ON_JITTER) if rng is not None else 0.0)
    s[LIGHTBULB] = float(bool(lightbulb_on))
    s[LED] = float(bool(led_on))
    table_spot = 0
    for color in L.BLOCKS:
        loc = placed[color]
        if loc == "table":
            x, y = L.TABLE_SPOTS[table_spot]
            if block_noise and table_spot == 0:
                x += rng.uniform(*L.TABLE_NOISE_X)
            table_spot += 1
            pos = np.array([x, y, L.TABLE_BLOCK_Z])
        else:
            pos = L.slot_pos(loc)
        yaw = rng.uniform(*L.BLOCK_YAW) if rng is not None else float(np.mean(L.BLOCK_YAW))
        i = BLOCK_INDEX[color]
        s[i:i + 3] = pos
        s[i + 3:i + 6] = (0.0, 0.0, yaw)
    return s


def random_scene_obs(rng: np.random.Generator, block_noise: bool = False) -> np.ndarray:
    """A random valid initial state: random door/drawer/lights, each block at a distinct location."""
    locs = rng.permutation(list(L.BLOCK_LOCATIONS))
    return make_scene_obs(drawer_open=bool(rng.integers(2)), slider_left=bool(rng.integers(2)),
                          led_on=bool(rng.integers(2)), lightbulb_on=bool(rng.integers(2)),
                          blocks=dict(zip(L.BLOCKS, (str(x) for x in locs))), rng=rng, block_noise=block_noise)


def block_location(scene_obs: np.ndarray, color: str) -> str:
    """Where a block stands in a scene_obs: `table`, `slider_left`, `slider_right` (nearest spot)."""
    if color not in BLOCK_INDEX:
        raise ValueError(f"unknown block {color!r}; valid blocks: {list(L.BLOCKS)}")
    x, y = scene_obs[BLOCK_INDEX[color]:BLOCK_INDEX[color] + 2]
    if y < L.TRAY_Y[0] - 0.005:
        return "table"
    return "slider_left" if abs(x - L.SLOT_LEFT_X) < abs(x - L.SLOT_RIGHT_X) else "slider_right"


def slot_covered(scene_obs: np.ndarray, location: str) -> bool:
    """Whether the sliding door sits over that slider slot (q > half range covers the left slot)."""
    left = scene_obs[SLIDER] > (L.SLIDER_RANGE[1] / 2)
    return (location == "slider_left" and left) or (location == "slider_right" and not left)
