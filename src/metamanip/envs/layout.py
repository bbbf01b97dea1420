"""Where every part of the playtable is, in world metres: the one source of the scene's geometry.

The layout keeps CALVIN scene D's parts, joint ranges and task thresholds, but places them so that a
Franka Panda standing at (-0.34, -0.46, 0.24..0.29), moved by the settings' base noise
(dx ±0.15, dy ±0.02, dz ±0.05), reaches every handle, knob and block with the gripper pointing down.
`playtable_urdf.py` writes the URDFs from these numbers; `scene.py` places blocks; the scripted
primitives read the part positions from here.

World frame: z up, +x to the right when facing the table from the robot, -y towards the robot.
"""
from __future__ import annotations

import numpy as np

# ---- table --------------------------------------------------------------------------------------
TABLE_TOP_Z = 0.44
TABLE_X = (-0.72, 0.32)
TABLE_Y = (-0.20, 0.16)
TABLE_THICKNESS = 0.04

# ---- sliding door over the two slider slots (a lid on rails over an open-top shelf tray) ----------
SLIDER_RANGE = (0.0, 0.28)          # q = 0: door over the right slot; q = 0.28: door over the left slot
SLOT_Y = 0.07                        # y of both slot centres
SLOT_LEFT_X = -0.44
SLOT_RIGHT_X = -0.16
PLANK_TOP_Z = 0.45                   # the shelf floor ("plank"), 1 cm above the table top
TRAY_X = (-0.60, 0.0)                # inner x range of the tray (walls outside it)
TRAY_Y = (0.0, 0.14)
TRAY_WALL_TOP_Z = 0.57
DOOR_SIZE = (0.28, 0.14, 0.01)       # the lid covers exactly one slot
DOOR_Z = 0.545                       # lid centre height (its underside 5.5 cm above a block's top)
DOOR_X_AT_ZERO = SLOT_RIGHT_X        # lid centre x at q = 0; the lid moves to -x as q grows
DOOR_KNOB_SIZE = (0.03, 0.03, 0.04)
DOOR_KNOB_OFFSET = (0.0, -0.045, 0.025)  # knob centre relative to the lid centre (front edge, on top)

# ---- drawer under the right half of the table top ---------------------------------------------------
DRAWER_RANGE = (0.0, 0.22)          # + pulls the drawer towards the robot (-y)
DRAWER_X = 0.15                      # centre x of the drawer and its handle
DRAWER_FRONT_Y = -0.21               # centre y of the front plate when closed
DRAWER_Z = 0.35                      # centre z of the front plate
DRAWER_HANDLE_DY = -0.07             # handle bar centre y relative to the front plate centre
DRAWER_HANDLE_Z = 0.36               # handle bar centre z
DRAWER_HANDLE_SIZE = (0.16, 0.012, 0.06)
DRAWER_HANDLE_GAP = (0.136, 0.054)   # free x width between the stand-offs, free y gap plate → bar

# ---- button (toggles the green LED on each press) --------------------------------------------------
BUTTON_XY = (-0.42, -0.08)
BUTTON_RADIUS = 0.03
BUTTON_HEIGHT = 0.03                 # top at TABLE_TOP_Z + 0.03 when released
BUTTON_RANGE = (0.0, 0.02)
BUTTON_TRIGGER = 0.01                # pressed when the joint passes the middle of its travel

# ---- switch (the lightbulb is on while the switch is past the middle of its travel) --------------------
SWITCH_X_AT_ZERO = -0.62             # knob centre x at q = 0; + moves it to +x
SWITCH_Y = -0.06
SWITCH_RANGE = (0.0, 0.088)
SWITCH_TRIGGER = 0.044
SWITCH_KNOB_SIZE = (0.03, 0.04, 0.035)

# ---- displays (fixed) -------------------------------------------------------------------------------
LED_POS = (-0.30, 0.15, TRAY_WALL_TOP_Z + 0.006)
LED_SIZE = (0.12, 0.03, 0.012)
LIGHTBULB_POS = (0.20, 0.08, TABLE_TOP_Z + 0.09)
LIGHTBULB_RADIUS = 0.03
LED_ON_RGBA = (0.0, 1.0, 0.0, 1.0)
LIGHTBULB_ON_RGBA = (1.0, 1.0, 0.0, 1.0)
LIGHT_OFF_RGBA = (1.0, 1.0, 1.0, 1.0)

# ---- blocks -------------------------------------------------------------------------------------------
BLOCKS = ("red", "blue", "pink")
BLOCK_SIZES = {"red": (0.056, 0.04, 0.04), "blue": (0.04, 0.04, 0.04), "pink": (0.08, 0.04, 0.04)}
BLOCK_RGBA = {"red": (1.0, 0.0, 0.0, 1.0), "blue": (0.0, 0.0, 1.0, 1.0), "pink": (1.0, 0.0, 1.0, 1.0)}
BLOCK_MASS = 1.0
BLOCK_FRICTION = 0.7
BLOCK_LOCATIONS = ("table", "slider_left", "slider_right")
# Table spots: the first gets the x noise of reset_robot_pos (as Meta-CALVIN's block_table[0]).
TABLE_SPOTS = ((-0.05, -0.11), (-0.24, -0.11))
TABLE_NOISE_X = (0.0, 0.12)
BLOCK_YAW = (np.pi / 2 - np.pi / 8, np.pi / 2 + np.pi / 8)
TABLE_BLOCK_Z = TABLE_TOP_Z + 0.02
SLOT_BLOCK_Z = PLANK_TOP_Z + 0.02

# ---- robot ------------------------------------------------------------------------------------------
ROBOT_BASE = (-0.34, -0.46, 0.24)
ROBOT_NEUTRAL_JOINTS = (-1.21779206, 1.03987646, 2.11978261, -2.34205014, -0.87015947, 1.64119353, 0.55344866)


def door_center_x(q: float) -> float:
    """Lid centre x for slider joint value q."""
    return DOOR_X_AT_ZERO - q


def door_knob_pos(q: float) -> np.ndarray:
    return np.array([door_center_x(q) + DOOR_KNOB_OFFSET[0], SLOT_Y + DOOR_KNOB_OFFSET[1], DOOR_Z + DOOR_KNOB_OFFSET[2]])


def drawer_handle_pos(q: float) -> np.ndarray:
    """Handle bar centre for drawer joint value q."""
    return np.array([DRAWER_X, DRAWER_FRONT_Y + DRAWER_HANDLE_DY - q, DRAWER_HANDLE_Z])


def drawer_front_y(q: float) -> float:
    """y of the front plate's outer face for drawer joint value q."""
    return DRAWER_FRONT_Y - 0.01 - q


def switch_knob_pos(q: float) -> np.ndarray:
    return np.array([SWITCH_X_AT_ZERO + q, SWITCH_Y, TABLE_TOP_Z + SWITCH_KNOB_SIZE[2] / 2])


def button_top(q: float) -> np.ndarray:
    return np.array([BUTTON_XY[0], BUTTON_XY[1], TABLE_TOP_Z + BUTTON_HEIGHT - q])


def slot_pos(location: str) -> np.ndarray:
    x = {"slider_left": SLOT_LEFT_X, "slider_right": SLOT_RIGHT_X}[location]
    return np.array([x, SLOT_Y, SLOT_BLOCK_Z])
