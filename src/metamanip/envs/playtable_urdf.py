"""Writes the playtable and block URDFs shipped in `envs/assets/` from the numbers in `layout.py`.

The assets are committed; run `python -m metamanip.envs.playtable_urdf` after changing the layout
(a test checks that the committed files match what this module writes).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from metamanip.envs import layout as L

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
TABLE_FILE = "playtable.urdf"

WOOD = (0.62, 0.46, 0.30, 1.0)
DARK = (0.35, 0.25, 0.16, 1.0)
GRAY = (0.55, 0.55, 0.58, 1.0)
BLACK = (0.08, 0.08, 0.08, 1.0)
WHITE = (1.0, 1.0, 1.0, 1.0)
LID = (0.80, 0.80, 0.84, 1.0)

# Link order gives the PyBullet link indices (CALVIN's order): button 0, switch 1, slide 2, drawer 3,
# led 4, lightbulb 5, plank 6; the table body is the base link (-1).
LINKS = ("button_link", "switch_link", "slide_link", "drawer_link", "led_link", "lightbulb_link", "plank_link")
JOINTS = {"button": 0, "switch": 1, "slide": 2, "drawer": 3}


def _v(xs: Sequence[float]) -> str:
    return " ".join(f"{x:.6g}" for x in xs)


def _box(center: Sequence[float], size: Sequence[float], rgba: Sequence[float], collide: bool = True) -> str:
    geom = f"<geometry><box size=\"{_v(size)}\"/></geometry>"
    out = (f"    <visual><origin xyz=\"{_v(center)}\"/>{geom}"
           f"<material name=\"c{_v(rgba).replace(' ', '_')}\"><color rgba=\"{_v(rgba)}\"/></material></visual>\n")
    if collide:
        out += f"    <collision><origin xyz=\"{_v(center)}\"/>{geom}</collision>\n"
    return out


def _shape(center: Sequence[float], geom: str, rgba: Sequence[float], collide: bool = True) -> str:
    out = (f"    <visual><origin xyz=\"{_v(center)}\"/><geometry>{geom}</geometry>"
           f"<material name=\"c{_v(rgba).replace(' ', '_')}\"><color rgba=\"{_v(rgba)}\"/></material></visual>\n")
    if collide:
        out += f"    <collision><origin xyz=\"{_v(center)}\"/><geometry>{geom}</geometry></collision>\n"
    return out


def _inertial(mass: float, size: Sequence[float] = (0.1, 0.1, 0.1)) -> str:
    x, y, z = size
    i = (mass * (y * y + z * z) / 12, mass * (x * x + z * z) / 12, mass * (x * x + y * y) / 12)
    return (f"    <inertial><origin xyz=\"0 0 0\"/><mass value=\"{mass:.6g}\"/>"
            f"<inertia ixx=\"{i[0]:.6g}\" ixy=\"0\" ixz=\"0\" iyy=\"{i[1]:.6g}\" iyz=\"0\" izz=\"{i[2]:.6g}\"/></inertial>\n")


def _link(name: str, body: str, mass: float, size: Sequence[float] = (0.1, 0.1, 0.1)) -> str:
    return f"  <link name=\"{name}\">\n{_inertial(mass, size)}{body}  </link>\n"


def _joint(name: str, kind: str, child: str, origin: Sequence[float], axis: Sequence[float] = (1, 0, 0),
           limits: Sequence[float] | None = None) -> str:
    lim = f"<limit lower=\"{limits[0]:.6g}\" upper=\"{limits[1]:.6g}\" effort=\"0\" velocity=\"0\"/>" if limits else ""
    ax = f"<axis xyz=\"{_v(axis)}\"/>" if kind != "fixed" else ""
    return (f"  <joint name=\"{name}\" type=\"{kind}\"><parent link=\"base_link\"/><child link=\"{child}\"/>"
            f"<origin xyz=\"{_v(origin)}\" rpy=\"0 0 0\"/>{ax}{lim}</joint>\n")


def table_urdf() -> str:
    """The playtable: static body with button, switch, sliding door, drawer, LED, lightbulb and shelf floor."""
    top = L.TABLE_TOP_Z
    x0, x1 = L.TABLE_X
    y0, y1 = L.TABLE_Y
    t = L.TABLE_THICKNESS
    base = _box(((x0 + x1) / 2, (y0 + y1) / 2, top - t / 2), (x1 - x0, y1 - y0, t), WOOD)
    leg_h = top - t
    for lx in (x0 + 0.02, x1 - 0.02):
        for ly in (y0 + 0.02, y1 - 0.02):
            base += _box((lx, ly, leg_h / 2), (0.04, 0.04, leg_h), DARK)
    # shelf tray walls around the slider slots
    tx0, tx1 = L.TRAY_X
    ty0, ty1 = L.TRAY_Y
    wall_h = L.TRAY_WALL_TOP_Z - top
    base += _box(((tx0 + tx1) / 2, ty1 + 0.01, top + wall_h / 2), (tx1 - tx0 + 0.04, 0.02, wall_h), DARK)
    for wx in (tx0 - 0.01, tx1 + 0.01):
        base += _box((wx, (ty0 + ty1 + 0.02) / 2, top + wall_h / 2), (0.02, ty1 - ty0 + 0.02, wall_h), DARK)
    # switch rail (visual) and the drawer's housing front (visual frame around the opening)
    sw0 = L.SWITCH_X_AT_ZERO - 0.03
    sw1 = L.SWITCH_X_AT_ZERO + L.SWITCH_RANGE[1] + 0.03
    base += _box(((sw0 + sw1) / 2, L.SWITCH_Y, top + 0.002), (sw1 - sw0, 0.012, 0.004), BLACK, collide=False)

    links = ""
    joints = ""
    # 0 button
    h = L.BUTTON_HEIGHT
    links += _link("button_link", _shape((0, 0, h / 2), f"<cylinder radius=\"{L.BUTTON_RADIUS}\" length=\"{h}\"/>",
                                         BLACK), 0.1, (0.06, 0.06, h))
    joints += _joint("base__button", "prismatic", "button_link", (L.BUTTON_XY[0], L.BUTTON_XY[1], top),
                     (0, 0, -1), L.BUTTON_RANGE)
    # 1 switch
    ks = L.SWITCH_KNOB_SIZE
    links += _link("switch_link", _box((0, 0, ks[2] / 2), ks, GRAY), 0.2, ks)
    joints += _joint("base__switch", "prismatic", "switch_link", (L.SWITCH_X_AT_ZERO, L.SWITCH_Y, top),
                     (1, 0, 0), L.SWITCH_RANGE)
    # 2 sliding door (lid) with its knob
    door = _box((0, 0, 0), L.DOOR_SIZE, LID) + _box(L.DOOR_KNOB_OFFSET, L.DOOR_KNOB_SIZE, GRAY)
    links += _link("slide_link", door, 1.0, L.DOOR_SIZE)
    joints += _joint("base__slide", "prismatic", "slide_link", (L.DOOR_X_AT_ZERO, L.SLOT_Y, L.DOOR_Z),
                     (-1, 0, 0), L.SLIDER_RANGE)
    # 3 drawer: front plate, tray, handle bar on two stand-offs
    hs = L.DRAWER_HANDLE_SIZE
    hz = L.DRAWER_HANDLE_Z - L.DRAWER_Z
    stand_len = -L.DRAWER_HANDLE_DY - hs[1] / 2 - 0.01
    drawer = _box((0, 0, 0), (0.26, 0.02, 0.10), WOOD)
    drawer += _box((0, 0.13, -0.045), (0.24, 0.24, 0.01), WOOD)
    for sx in (-0.115, 0.115):
        drawer += _box((sx, 0.13, -0.01), (0.01, 0.24, 0.06), WOOD)
    drawer += _box((0, 0.245, -0.01), (0.24, 0.01, 0.06), WOOD)
    drawer += _box((0, L.DRAWER_HANDLE_DY, hz), hs, GRAY)
    for sx in (-(hs[0] / 2 - 0.006), hs[0] / 2 - 0.006):
        drawer += _box((sx, -0.01 - stand_len / 2, hz), (0.012, stand_len, 0.02), GRAY)
    links += _link("drawer_link", drawer, 1.0, (0.26, 0.26, 0.10))
    joints += _joint("base__drawer", "prismatic", "drawer_link", (L.DRAWER_X, L.DRAWER_FRONT_Y, L.DRAWER_Z),
                     (0, -1, 0), L.DRAWER_RANGE)
    # 4 LED, 5 lightbulb (fixed displays), 6 plank (the shelf floor blocks stand on in a slider slot)
    links += _link("led_link", _box((0, 0, 0), L.LED_SIZE, WHITE), 0.1, L.LED_SIZE)
    joints += _joint("base__led", "fixed", "led_link", L.LED_POS)
    bulb_h = L.LIGHTBULB_POS[2] - top - L.LIGHTBULB_RADIUS
    bulb = _shape((0, 0, 0), f"<sphere radius=\"{L.LIGHTBULB_RADIUS}\"/>", WHITE)
    bulb += _shape((0, 0, -L.LIGHTBULB_RADIUS - bulb_h / 2), f"<cylinder radius=\"0.012\" length=\"{bulb_h:.6g}\"/>",
                   GRAY)
    links += _link("lightbulb_link", bulb, 0.1)
    joints += _joint("base__lightbulb", "fixed", "lightbulb_link", L.LIGHTBULB_POS)
    plank_size = (tx1 - tx0, ty1 - ty0, L.PLANK_TOP_Z - top)
    links += _link("plank_link", _box((0, 0, 0), plank_size, WOOD), 1.0, plank_size)
    joints += _joint("base__plank", "fixed", "plank_link", ((tx0 + tx1) / 2, (ty0 + ty1) / 2, (top + L.PLANK_TOP_Z) / 2))

    return ("<?xml version=\"1.0\"?>\n<!-- generated by metamanip.envs.playtable_urdf; do not edit by hand -->\n"
            "<robot name=\"playtable\">\n"
            f"  <link name=\"base_link\">\n{_inertial(0.0)}{base}  </link>\n{links}{joints}</robot>\n")


def block_urdf(color: str) -> str:
    """One block: a box with CALVIN's size, mass and friction for its colour."""
    size = L.BLOCK_SIZES[color]
    body = _box((0, 0, 0), size, L.BLOCK_RGBA[color])
    return ("<?xml version=\"1.0\"?>\n<!-- generated by metamanip.envs.playtable_urdf; do not edit by hand -->\n"
            f"<robot name=\"block_{color}\">\n  <link name=\"base_link\">\n"
            f"    <contact><lateral_friction value=\"{L.BLOCK_FRICTION}\"/><spinning_friction value=\"0.001\"/></contact>\n"
            f"{_inertial(L.BLOCK_MASS, size)}{body}  </link>\n</robot>\n")


def asset_texts() -> dict[str, str]:
    """File name → URDF text of every generated asset."""
    out = {TABLE_FILE: table_urdf()}
    for color in L.BLOCKS:
        out[f"block_{color}.urdf"] = block_urdf(color)
    return out


def write_assets(directory: Path = ASSETS_DIR) -> list[Path]:
    """Write the assets (atomically, one file at a time) and return their paths."""
    import os
    import tempfile

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in asset_texts().items():
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, directory / name)
        paths.append(directory / name)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ASSETS_DIR)
    for path in write_assets(parser.parse_args().out):
        print(path)
