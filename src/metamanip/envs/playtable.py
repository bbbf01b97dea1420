"""The PyBullet playtable: a Franka Panda in front of a table with a sliding door, a drawer, a button
(green LED), a switch (lightbulb) and three blocks, behind a gymnasium interface.

Physics runs at 240 Hz and control at 30 Hz (8 substeps per action), as CALVIN. Actions are 7-D
Cartesian TCP commands (relative in [-1, 1] × 0.02 m / 0.05 rad, or absolute xyz + Euler), the last
one the gripper (> 0 open, ≤ 0 close); inverse kinematics runs inside the env. Observations follow
CALVIN's layout (`robot_obs` 15, `scene_obs` 24, `rgb_static`, `rgb_gripper`, optional depth).

Each env owns its own PyBullet client. Every reset first restores an in-memory snapshot of the freshly
loaded world, so that the same seed and actions always give the same bytes, however the env was used
before. Nothing here moves an object or a joint outside `reset`/`set_state`: tasks happen only through
the robot's contacts.
"""
from __future__ import annotations

import getpass
import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np
import pybullet as pb
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

from metamanip.envs import layout as L
from metamanip.envs.playtable_urdf import ASSETS_DIR, JOINTS, LINKS, TABLE_FILE
from metamanip.envs.scene import BLOCK_INDEX, SCENE_OBS_DIM, random_scene_obs

log = logging.getLogger(__name__)

ACTION_MODES = ("rel", "abs")
ROBOT_MESHES = ("light", "full")
CAMERA_NAMES = ("static", "gripper")
RENDERERS = ("tiny", "egl")
MAX_REL_POS = 0.02
MAX_REL_ORN = 0.05
ROBOT_OBS_DIM = 15
BLOCK_SINK = 2e-4

# Panda from pybullet_data (franka_panda/panda.urdf): arm joints 0-6, fingers 9 and 10, hand link 8,
# grasp target (the TCP) link 11.
ARM_JOINTS = tuple(range(7))
FINGER_JOINTS = (9, 10)
HAND_LINK = 8
TCP_LINK = 11
ARM_LOWER = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
ARM_UPPER = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
ARM_FORCE = 200.0
ARM_MAX_VELOCITY = 2.0
FINGER_OPEN = 0.04
GRIPPER_OPEN_FORCE = 10.0
GRIPPER_CLOSE_FORCE = 100.0
# Friction-like hold of the door, drawer and switch, and the button's return spring (CALVIN: 4 N).
PART_FORCE = 4.0
# How far the commanded TCP target may run ahead of the measured TCP (keeps a blocked arm from
# accumulating an unreachable target, CALVIN's pitfall with relative actions).
MAX_TARGET_LEAD_POS = 0.05
MAX_TARGET_LEAD_ORN = 0.3
WORKSPACE_LOW = np.array([-1.0, -0.8, 0.25])
WORKSPACE_HIGH = np.array([0.6, 0.4, 1.1])

DEFAULT_CAMERAS: dict[str, dict[str, Any]] = {
    "static": {"width": 200, "height": 200, "fov": 14.0, "eye": [1.272, -2.668, 3.385],
               "target": [-0.2, -0.06, 0.44], "up": [0.0, 0.0, 1.0], "near": 0.01, "far": 10.0},
    "gripper": {"width": 84, "height": 84, "fov": 75.0, "near": 0.01, "far": 2.0},
}
# The gripper camera sits on the hand (CALVIN's gripper_cam offset), looking along its y axis.
GRIPPER_CAM_OFFSET = ((-0.1, 0.0, 0.0), (1.3, 0.0, -1.57))


@dataclass
class _Camera:
    name: str
    width: int
    height: int
    fov: float
    near: float
    far: float
    projection: Sequence[float]
    view: Sequence[float] | None = None  # fixed view (static); None: follows the hand (gripper)


def light_panda_urdf() -> str:
    """pybullet_data's Panda with its low-poly collision meshes as visuals (3.5k instead of 100k triangles).

    TinyRenderer's cost per image grows with the triangles it draws; the detailed visual meshes made
    every camera render several times slower. The file is written once per machine (atomically) into
    the temp dir (one per user and content) and points at pybullet_data's meshes by absolute path.
    """
    root = Path(pybullet_data.getDataPath()) / "franka_panda"
    text = (root / "panda.urdf").read_text()

    def swap(m: re.Match) -> str:
        collision = root / "meshes" / "collision" / m.group(1)
        return f'filename="{collision if collision.exists() else root / "meshes" / "visual" / m.group(1)}"'

    light = re.sub(r'filename="package://meshes/visual/([^"]+)"', swap, text)
    light = re.sub(r'filename="package://meshes/collision/([^"]+)"',
                   lambda m: f'filename="{root / "meshes" / "collision" / m.group(1)}"', light)
    digest = hashlib.sha1(light.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"metamanip_panda_light_{getpass.getuser()}_{digest}.urdf"
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".metamanip_panda_", suffix=".urdf")
        with os.fdopen(fd, "w") as fh:
            fh.write(light)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return str(path)


def _wrap(a: np.ndarray) -> np.ndarray:
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


class PlayTableEnv(gym.Env):
    """The playtable simulator (see the module docstring and docs/DESIGN.md for the contract)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, cameras: Mapping[str, Mapping[str, Any]] | None = None, action_mode: str = "rel",
                 depth: bool = False, renderer: str = "tiny", physics_hz: int = 240, control_hz: int = 30,
                 base_pos: Sequence[float] = L.ROBOT_BASE, base_noise: Sequence[float] | None = None,
                 block_noise: bool = False, robot_meshes: str = "light") -> None:
        if robot_meshes not in ROBOT_MESHES:
            raise ValueError(f"unknown robot_meshes {robot_meshes!r}; valid: {list(ROBOT_MESHES)}")
        self.robot_meshes = robot_meshes
        if action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {action_mode!r}; valid: {list(ACTION_MODES)}")
        if renderer not in RENDERERS:
            raise ValueError(f"unknown renderer {renderer!r}; valid: {list(RENDERERS)}")
        if physics_hz % control_hz != 0:
            raise ValueError(f"physics_hz={physics_hz} must be a multiple of control_hz={control_hz}")
        self.action_mode = action_mode
        self.depth = bool(depth)
        self.substeps = physics_hz // control_hz
        self.physics_hz = physics_hz
        self.default_base_pos = np.asarray(base_pos, dtype=np.float64).reshape(3)
        self.base_noise = None if base_noise is None else np.asarray(base_noise, dtype=np.float64).reshape(3)
        self.block_noise = bool(block_noise)

        self._p = BulletClient(connection_mode=pb.DIRECT)
        self.renderer = renderer
        self._render_flag = pb.ER_TINY_RENDERER
        if renderer == "egl":
            self._render_flag = self._load_egl()
        self._load_world()
        self._cameras = self._make_cameras(DEFAULT_CAMERAS if cameras is None else cameras)
        self._render_camera = self._cameras.get("static") or self._make_cameras({"static": DEFAULT_CAMERAS["static"]})["static"]
        self.action_space = self._make_action_space()
        self.observation_space = self._make_observation_space()
        self._info_cache: dict[str, Any] | None = None
        self._step_count = 0
        self._needs_reset = True

    # ---- construction ------------------------------------------------------------------------------
    def _load_egl(self) -> int:
        """Load PyBullet's EGL renderer plugin (GPU nodes); fall back to TinyRenderer where it is missing."""
        import importlib.util

        plugin = -1
        try:
            spec = importlib.util.find_spec("eglRenderer")
            if spec is not None and spec.origin:
                plugin = self._p.loadPlugin(spec.origin, "_eglRendererPlugin")
        except Exception as e:  # pragma: no cover - depends on the machine's GL stack
            log.warning("EGL renderer could not be loaded (%s)", e)
        if plugin < 0:
            log.warning("EGL renderer plugin unavailable; falling back to TinyRenderer (renderer=tiny)")
            self.renderer = "tiny"
            return pb.ER_TINY_RENDERER
        return pb.ER_BULLET_HARDWARE_OPENGL

    def _load_world(self) -> None:
        p = self._p
        p.resetSimulation()
        p.setPhysicsEngineParameter(deterministicOverlappingPairs=1)
        p.setTimeStep(1.0 / self.physics_hz)
        p.setGravity(0, 0, -9.8)
        p.setAdditionalSearchPath(pybullet_data.getDataPath())
        urdf = light_panda_urdf() if self.robot_meshes == "light" else "franka_panda/panda.urdf"
        self.robot = p.loadURDF(urdf, self.default_base_pos.tolist(), [0, 0, 0, 1], useFixedBase=True)
        if self.robot_meshes == "light":
            for link in range(-1, p.getNumJoints(self.robot)):
                gray = 0.35 if link >= HAND_LINK else (0.92 if link % 2 else 0.85)
                p.changeVisualShape(self.robot, link, rgbaColor=[gray, gray, gray + 0.03, 1])
        self.blocks = {c: p.loadURDF(str(ASSETS_DIR / f"block_{c}.urdf"), [0, 0, -1.0 - i]) for i, c in enumerate(L.BLOCKS)}
        self.table = p.loadURDF(str(ASSETS_DIR / TABLE_FILE), [0, 0, 0], [0, 0, 0, 1], useFixedBase=True)
        floor_col = p.createCollisionShape(pb.GEOM_BOX, halfExtents=[3, 3, 0.05])
        floor_vis = p.createVisualShape(pb.GEOM_BOX, halfExtents=[3, 3, 0.05], rgbaColor=[0.82, 0.82, 0.8, 1])
        self.floor = p.createMultiBody(0, floor_col, floor_vis, [0, 0, -0.05])
        pedestal = p.createVisualShape(pb.GEOM_CYLINDER, radius=0.12, length=1.0, rgbaColor=[0.9, 0.9, 0.9, 1])
        self.pedestal = p.createMultiBody(0, -1, pedestal, self._pedestal_pos(self.default_base_pos))
        self.body_names = {self.robot: "robot", self.table: "table", self.floor: "floor",
                           **{uid: f"block_{c}" for c, uid in self.blocks.items()}}
        gear = p.createConstraint(self.robot, FINGER_JOINTS[0], self.robot, FINGER_JOINTS[1], pb.JOINT_GEAR,
                                  [1, 0, 0], [0, 0, 0], [0, 0, 0])
        p.changeConstraint(gear, gearRatio=-1, erp=0.1, maxForce=50)
        for j in ARM_JOINTS + FINGER_JOINTS:
            p.changeDynamics(self.robot, j, linearDamping=0, angularDamping=0)
        names = [p.getJointInfo(self.table, i)[12].decode() for i in range(p.getNumJoints(self.table))]
        if tuple(names) != LINKS:
            raise RuntimeError(f"playtable asset links {names} differ from {LINKS}; regenerate the assets "
                               "with `python -m metamanip.envs.playtable_urdf`")
        self._table_joints = [JOINTS[k] for k in ("slide", "drawer", "button", "switch")]
        self._led_link = LINKS.index("led_link")
        self._bulb_link = LINKS.index("lightbulb_link")
        self._ik_ranges = (ARM_UPPER - ARM_LOWER).tolist() + [FINGER_OPEN] * 2
        self._ik_lower = ARM_LOWER.tolist() + [0.0] * 2
        self._ik_upper = ARM_UPPER.tolist() + [FINGER_OPEN] * 2
        self._ik_rest = list(L.ROBOT_NEUTRAL_JOINTS) + [FINGER_OPEN] * 2
        self._world_snapshot = p.saveState()

    @staticmethod
    def _pedestal_pos(base: np.ndarray) -> list[float]:
        return [float(base[0]) - 0.04, float(base[1]), float(base[2]) - 0.5]

    def _make_cameras(self, cfg: Mapping[str, Mapping[str, Any]]) -> dict[str, _Camera]:
        cams: dict[str, _Camera] = {}
        for name, spec in (cfg or {}).items():
            if name not in CAMERA_NAMES:
                raise ValueError(f"unknown camera {name!r}; valid cameras: {list(CAMERA_NAMES)}")
            if spec is None:  # a camera switched off by config (cameras.gripper: null)
                continue
            merged = {**DEFAULT_CAMERAS[name], **dict(spec)}
            unknown = set(merged) - set(DEFAULT_CAMERAS[name])
            if unknown:
                raise ValueError(f"unknown {name} camera setting(s) {sorted(unknown)}; valid: {sorted(DEFAULT_CAMERAS[name])}")
            w, h = int(merged["width"]), int(merged["height"])
            if w < 1 or h < 1:
                raise ValueError(f"camera {name}: width and height must be positive, got {w}×{h}")
            proj = self._p.computeProjectionMatrixFOV(float(merged["fov"]), w / h, float(merged["near"]), float(merged["far"]))
            view = None
            if name == "static":
                view = self._p.computeViewMatrix(list(merged["eye"]), list(merged["target"]), list(merged["up"]))
            cams[name] = _Camera(name, w, h, float(merged["fov"]), float(merged["near"]), float(merged["far"]), proj, view)
        return cams

    def _make_action_space(self) -> gym.spaces.Box:
        if self.action_mode == "rel":
            return gym.spaces.Box(-1.0, 1.0, (7,), dtype=np.float32)
        low = np.concatenate([WORKSPACE_LOW, [-np.pi] * 3, [-1.0]]).astype(np.float32)
        high = np.concatenate([WORKSPACE_HIGH, [np.pi] * 3, [1.0]]).astype(np.float32)
        return gym.spaces.Box(low, high, dtype=np.float32)

    def _make_observation_space(self) -> gym.spaces.Dict:
        spaces: dict[str, gym.spaces.Space] = {}
        for name, cam in self._cameras.items():
            spaces[f"rgb_{name}"] = gym.spaces.Box(0, 255, (cam.height, cam.width, 3), dtype=np.uint8)
            if self.depth:
                spaces[f"depth_{name}"] = gym.spaces.Box(0.0, cam.far, (cam.height, cam.width), dtype=np.float32)
        spaces["robot_obs"] = gym.spaces.Box(-np.inf, np.inf, (ROBOT_OBS_DIM,), dtype=np.float32)
        spaces["scene_obs"] = gym.spaces.Box(-np.inf, np.inf, (SCENE_OBS_DIM,), dtype=np.float32)
        return gym.spaces.Dict(spaces)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(self._cameras)

    # ---- gymnasium API ----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
        """Start from `options["scene_obs"]` (24) and `options["base_pos"]` (3), or a random valid state."""
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"scene_obs", "base_pos"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; valid: ['base_pos', 'scene_obs']")
        if options.get("scene_obs") is not None:
            scene_obs = np.asarray(options["scene_obs"], dtype=np.float64)
            if scene_obs.shape != (SCENE_OBS_DIM,) or not np.all(np.isfinite(scene_obs)):
                raise ValueError(f"reset option scene_obs must be 24 finite values (metamanip.envs.scene."
                                 f"make_scene_obs builds one), got shape {scene_obs.shape}")
        else:
            scene_obs = random_scene_obs(self.np_random, block_noise=self.block_noise)
        if options.get("base_pos") is not None:
            base = np.asarray(options["base_pos"], dtype=np.float64)
            if base.shape != (3,) or not np.all(np.isfinite(base)):
                raise ValueError(f"reset option base_pos must be 3 finite values (x, y, z), got {options['base_pos']!r}")
        else:
            base = self.default_base_pos.copy()
            if self.base_noise is not None:
                base = base + self.np_random.uniform(-self.base_noise, self.base_noise)
        self._restore_world()
        self._set_base(base)
        p = self._p
        for j, q in zip(ARM_JOINTS, L.ROBOT_NEUTRAL_JOINTS):
            p.resetJointState(self.robot, j, q, 0.0)
        for j in FINGER_JOINTS:
            p.resetJointState(self.robot, j, FINGER_OPEN, 0.0)
        for j, q in zip(self._table_joints, scene_obs[:4]):
            p.resetJointState(self.table, j, float(q), 0.0)
        for c, uid in self.blocks.items():
            i = BLOCK_INDEX[c]
            # 0.2 mm into its support, so that the start snapshot sees the resting contact
            pos = scene_obs[i:i + 3] - (0.0, 0.0, BLOCK_SINK)
            p.resetBasePositionAndOrientation(uid, pos.tolist(), p.getQuaternionFromEuler(scene_obs[i + 3:i + 6].tolist()))
            p.resetBaseVelocity(uid, [0, 0, 0], [0, 0, 0])
        bulb = bool(scene_obs[3] > L.SWITCH_TRIGGER)
        if bool(scene_obs[4] > 0.5) != bulb:
            log.warning("scene_obs lightbulb=%s disagrees with the switch joint %.3f (the bulb follows the switch, "
                        "on above %.3f); using %s", scene_obs[4], scene_obs[3], L.SWITCH_TRIGGER, bulb)
        self._led_on = bool(scene_obs[5] > 0.5)
        self._bulb_on = bulb
        self._button_pressed = bool(scene_obs[2] > L.BUTTON_TRIGGER)
        self._arm_target = np.array(L.ROBOT_NEUTRAL_JOINTS, dtype=np.float64)
        self._gripper_action = 1.0
        self._apply_lights(force=True)
        self._apply_motors()
        self._p.performCollisionDetection()  # contacts of the start snapshot, without moving anything
        self._read_state()
        self._target_pos = self._tcp_pos.copy()
        self._target_orn = self._tcp_orn.copy()
        self._step_count = 0
        self._needs_reset = False
        return self._observation(), self.get_info()

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        """Apply one 30 Hz action: IK to the new TCP target, 8 physics substeps, button/switch logic."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        a = self._check_action(action)
        prev_pos, prev_orn = self._target_pos, self._target_orn
        if self.action_mode == "rel":
            pos = prev_pos + a[:3] * MAX_REL_POS
            orn = prev_orn + a[3:6] * MAX_REL_ORN
        else:
            pos, orn = a[:3].copy(), a[3:6].copy()
        pos = self._tcp_pos + np.clip(pos - self._tcp_pos, -MAX_TARGET_LEAD_POS, MAX_TARGET_LEAD_POS)
        pos = np.clip(pos, WORKSPACE_LOW, WORKSPACE_HIGH)
        lead = _wrap(orn - self._tcp_orn)
        orn = orn - lead + np.clip(lead, -MAX_TARGET_LEAD_ORN, MAX_TARGET_LEAD_ORN)
        gripper = 1.0 if a[6] > 0 else -1.0
        rel = np.concatenate([np.clip((pos - prev_pos) / MAX_REL_POS, -1, 1),
                              np.clip(_wrap(orn - prev_orn) / MAX_REL_ORN, -1, 1), [gripper]])
        self._target_pos, self._target_orn = pos, orn
        self._arm_target = self._ik(pos, orn)
        gripper_changed = gripper != self._gripper_action
        self._gripper_action = gripper
        self._apply_motors(arm_only=not gripper_changed)
        step = self._p.stepSimulation
        for _ in range(self.substeps):
            step()
        self._read_state()
        self._update_logic()
        self._step_count += 1
        obs = self._observation()
        info = dict(self.get_info())
        info["action_rel"] = rel.astype(np.float32)
        info["action_abs"] = np.concatenate([pos, orn, [gripper]]).astype(np.float32)
        return obs, 0.0, False, False, info

    def render(self) -> np.ndarray:
        """The static camera's RGB image of the current state (gymnasium `rgb_array`)."""
        return self._render(self._render_camera)[0]

    def close(self) -> None:
        if getattr(self, "_p", None) is not None:
            try:
                self._p.disconnect()
            except pb.error:  # already disconnected
                pass
            self._p = None

    # ---- state ----------------------------------------------------------------------------------------
    def get_info(self) -> dict[str, Any]:
        """The snapshot task detectors compare: robot_obs, scene_obs, each block's contacts, base pose."""
        if self._info_cache is None:
            contacts = {}
            for c, uid in self.blocks.items():
                contacts[c] = frozenset((self.body_names.get(pt[2], str(pt[2])), int(pt[4]))
                                        for pt in self._p.getContactPoints(bodyA=uid))
            self._info_cache = {"robot_obs": self._robot_obs.copy(), "scene_obs": self._scene_obs.copy(),
                                "contacts": contacts, "base_pos": self._base_pos.copy(), "step": self._step_count}
        return self._info_cache

    def get_state(self) -> dict[str, Any]:
        """The whole simulator state (picklable); `set_state` of it renders identical pixels."""
        p = self._p
        robot_js = p.getJointStates(self.robot, list(ARM_JOINTS + FINGER_JOINTS))
        table_js = p.getJointStates(self.table, self._table_joints)
        blocks = {}
        for c, uid in self.blocks.items():
            pos, orn = p.getBasePositionAndOrientation(uid)
            lin, ang = p.getBaseVelocity(uid)
            blocks[c] = np.array([*pos, *orn, *lin, *ang], dtype=np.float64)
        return {"format": 1, "base_pos": self._base_pos.copy(),
                "robot_q": np.array([s[0] for s in robot_js]), "robot_qd": np.array([s[1] for s in robot_js]),
                "table_q": np.array([s[0] for s in table_js]), "table_qd": np.array([s[1] for s in table_js]),
                "blocks": blocks, "arm_target": self._arm_target.copy(), "target_pos": self._target_pos.copy(),
                "target_orn": self._target_orn.copy(), "gripper_action": self._gripper_action,
                "led_on": self._led_on, "lightbulb_on": self._bulb_on, "button_pressed": self._button_pressed,
                "step": self._step_count}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Put the simulator into a state from `get_state` (e.g. to re-render a stored episode)."""
        missing = {"base_pos", "robot_q", "robot_qd", "table_q", "table_qd", "blocks", "arm_target", "target_pos",
                   "target_orn", "gripper_action", "led_on", "lightbulb_on", "button_pressed"} - set(state)
        if missing:
            raise ValueError(f"not a PlayTableEnv state: missing {sorted(missing)} (use a dict from get_state())")
        p = self._p
        self._restore_world()
        self._set_base(np.asarray(state["base_pos"], dtype=np.float64))
        for j, q, qd in zip(ARM_JOINTS + FINGER_JOINTS, state["robot_q"], state["robot_qd"]):
            p.resetJointState(self.robot, j, float(q), float(qd))
        for j, q, qd in zip(self._table_joints, state["table_q"], state["table_qd"]):
            p.resetJointState(self.table, j, float(q), float(qd))
        for c, uid in self.blocks.items():
            b = np.asarray(state["blocks"][c], dtype=np.float64)
            p.resetBasePositionAndOrientation(uid, b[:3].tolist(), b[3:7].tolist())
            p.resetBaseVelocity(uid, b[7:10].tolist(), b[10:13].tolist())
        self._arm_target = np.asarray(state["arm_target"], dtype=np.float64).copy()
        self._target_pos = np.asarray(state["target_pos"], dtype=np.float64).copy()
        self._target_orn = np.asarray(state["target_orn"], dtype=np.float64).copy()
        self._gripper_action = float(state["gripper_action"])
        self._led_on, self._bulb_on = bool(state["led_on"]), bool(state["lightbulb_on"])
        self._button_pressed = bool(state["button_pressed"])
        self._step_count = int(state.get("step", 0))
        self._apply_lights(force=True)
        self._apply_motors()
        self._p.performCollisionDetection()
        self._read_state()
        self._needs_reset = False

    def render_cameras(self) -> dict[str, np.ndarray]:
        """Images of every configured camera for the current state (`rgb_<cam>`, `depth_<cam>`)."""
        out: dict[str, np.ndarray] = {}
        for name, cam in self._cameras.items():
            rgb, depth = self._render(cam)
            out[f"rgb_{name}"] = rgb
            if self.depth:
                out[f"depth_{name}"] = depth
        return out

    # ---- internals ----------------------------------------------------------------------------------
    def _restore_world(self) -> None:
        self._p.restoreState(self._world_snapshot)
        self._info_cache = None

    def _set_base(self, base: np.ndarray) -> None:
        self._base_pos = base.copy()
        self._p.resetBasePositionAndOrientation(self.robot, base.tolist(), [0, 0, 0, 1])
        self._p.resetBasePositionAndOrientation(self.pedestal, self._pedestal_pos(base), [0, 0, 0, 1])

    def _check_action(self, action: Any) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"action must be 7 numbers (xyz, euler xyz, gripper), got {action!r}") from None
        if a.shape != (7,):
            raise ValueError(f"action must have shape (7,) (xyz, euler xyz, gripper), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action contains NaN or inf: {a.tolist()}")
        if abs(a[6]) > 1.0 + 1e-6:
            raise ValueError(f"gripper action must be in [-1, 1] (> 0 opens, ≤ 0 closes), got {a[6]}")
        if self.action_mode == "rel":
            if np.any(np.abs(a[:6]) > 1.0 + 1e-6):
                raise ValueError(f"relative action out of range: dims 0-5 must be in [-1, 1] (× {MAX_REL_POS} m, "
                                 f"× {MAX_REL_ORN} rad), got {np.round(a[:6], 4).tolist()}; clip it, or build the env "
                                 "with action_mode=abs for absolute poses")
        elif np.any(a[:3] < WORKSPACE_LOW) or np.any(a[:3] > WORKSPACE_HIGH):
            raise ValueError(f"absolute TCP position {np.round(a[:3], 4).tolist()} is outside the workspace "
                             f"{WORKSPACE_LOW.tolist()} .. {WORKSPACE_HIGH.tolist()}")
        return a

    def _ik(self, pos: np.ndarray, orn: np.ndarray) -> np.ndarray:
        quat = self._p.getQuaternionFromEuler(orn.tolist())
        q = self._p.calculateInverseKinematics(self.robot, TCP_LINK, pos.tolist(), quat, lowerLimits=self._ik_lower,
                                               upperLimits=self._ik_upper, jointRanges=self._ik_ranges,
                                               restPoses=self._ik_rest, maxNumIterations=20)
        return np.clip(np.asarray(q[:7]), ARM_LOWER, ARM_UPPER)

    def _apply_motors(self, arm_only: bool = False) -> None:
        p = self._p
        for j, q in zip(ARM_JOINTS, self._arm_target):
            p.setJointMotorControl2(self.robot, j, pb.POSITION_CONTROL, targetPosition=float(q), force=ARM_FORCE,
                                    maxVelocity=ARM_MAX_VELOCITY)
        if arm_only:
            return
        opening = self._gripper_action > 0
        for j in FINGER_JOINTS:
            p.setJointMotorControl2(self.robot, j, pb.POSITION_CONTROL, targetPosition=FINGER_OPEN if opening else 0.0,
                                    force=GRIPPER_OPEN_FORCE if opening else GRIPPER_CLOSE_FORCE, maxVelocity=1.0)
        for key in ("slide", "drawer", "switch"):
            p.setJointMotorControl2(self.table, JOINTS[key], pb.VELOCITY_CONTROL, targetVelocity=0.0, force=PART_FORCE)
        p.setJointMotorControl2(self.table, JOINTS["button"], pb.POSITION_CONTROL, targetPosition=0.0, force=PART_FORCE)

    def _read_state(self) -> None:
        """One batch of queries per step: robot joints, TCP pose, table joints, block poses."""
        p = self._p
        js = p.getJointStates(self.robot, [0, 1, 2, 3, 4, 5, 6, 9, 10])
        tcp = p.getLinkState(self.robot, TCP_LINK, computeForwardKinematics=True)
        self._tcp_pos = np.array(tcp[4])
        self._tcp_orn = np.array(p.getEulerFromQuaternion(tcp[5]))
        self._tcp_quat = tcp[5]
        table = p.getJointStates(self.table, self._table_joints)
        robot_obs = np.empty(ROBOT_OBS_DIM)
        robot_obs[:3] = self._tcp_pos
        robot_obs[3:6] = self._tcp_orn
        robot_obs[6] = js[7][0] + js[8][0]
        robot_obs[7:14] = [s[0] for s in js[:7]]
        robot_obs[14] = self._gripper_action
        scene = np.empty(SCENE_OBS_DIM)
        scene[:4] = [s[0] for s in table]
        scene[4] = float(self._bulb_on)
        scene[5] = float(self._led_on)
        for c, uid in self.blocks.items():
            pos, orn = p.getBasePositionAndOrientation(uid)
            i = BLOCK_INDEX[c]
            scene[i:i + 3] = pos
            scene[i + 3:i + 6] = p.getEulerFromQuaternion(orn)
        self._robot_obs = robot_obs
        self._scene_obs = scene
        self._info_cache = None

    def _update_logic(self) -> None:
        """Button and switch logic at the control rate, after the substeps (as CALVIN)."""
        pressed = self._scene_obs[2] > L.BUTTON_TRIGGER
        if pressed and not self._button_pressed:
            self._led_on = not self._led_on
        self._button_pressed = bool(pressed)
        self._bulb_on = bool(self._scene_obs[3] > L.SWITCH_TRIGGER)
        self._scene_obs[4] = float(self._bulb_on)
        self._scene_obs[5] = float(self._led_on)
        self._apply_lights()

    def _apply_lights(self, force: bool = False) -> None:
        shown = (self._led_on, self._bulb_on)
        if not force and getattr(self, "_lights_shown", None) == shown:
            return
        self._p.changeVisualShape(self.table, self._led_link, rgbaColor=L.LED_ON_RGBA if self._led_on else L.LIGHT_OFF_RGBA)
        self._p.changeVisualShape(self.table, self._bulb_link,
                                  rgbaColor=L.LIGHTBULB_ON_RGBA if self._bulb_on else L.LIGHT_OFF_RGBA)
        self._lights_shown = shown

    def _observation(self) -> dict[str, np.ndarray]:
        obs = self.render_cameras() if self._cameras else {}
        obs["robot_obs"] = self._robot_obs.astype(np.float32)
        obs["scene_obs"] = self._scene_obs.astype(np.float32)
        return obs

    def _render(self, cam: _Camera) -> tuple[np.ndarray, np.ndarray]:
        p = self._p
        view = cam.view
        if view is None:
            hand = p.getLinkState(self.robot, HAND_LINK, computeForwardKinematics=True)
            eye, orn = p.multiplyTransforms(hand[4], hand[5], GRIPPER_CAM_OFFSET[0],
                                            p.getQuaternionFromEuler(GRIPPER_CAM_OFFSET[1]))
            rot = np.array(p.getMatrixFromQuaternion(orn)).reshape(3, 3)
            view = p.computeViewMatrix(eye, (np.array(eye) + rot[:, 1]).tolist(), (-rot[:, 2]).tolist())
        flags = pb.ER_NO_SEGMENTATION_MASK
        _, _, rgba, zbuf, _ = p.getCameraImage(cam.width, cam.height, view, cam.projection, renderer=self._render_flag,
                                               flags=flags)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(cam.height, cam.width, 4)[:, :, :3].copy()
        depth = None
        if self.depth:
            z = np.asarray(zbuf, dtype=np.float32).reshape(cam.height, cam.width)
            depth = (cam.far * cam.near / (cam.far - (cam.far - cam.near) * z)).astype(np.float32)
        return rgb, depth
