"""PlayTableEnv.step against its floor, measured in the same run on the same scene.

    python benchmarks/env_speed.py [--steps 30 --rounds 7]

The floor of one 30 Hz step is what no simulator can skip: the 8 bare `stepSimulation` substeps plus
the two camera renders (static 200×200, gripper 84×84) of the same scene. `overhead_ratio` is our
`env.step` time (IK, motor commands, substeps, state queries, button/switch logic, rendering, the
observation and info dicts) over that floor. Rounds alternate ours and the floor; the ratio is the
median over rounds of process CPU time (robust to other processes sharing the cores), steps/s the
median wall-clock rate. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import pybullet as pb

from metamanip.envs.playtable import PlayTableEnv


def wiggle(i: int) -> np.ndarray:
    return np.array([0.6 * np.sin(i / 5), 0.6 * np.cos(i / 7), 0.4 * np.sin(i / 4), 0.0, 0.0,
                     0.3 * np.sin(i / 6), 1.0 if (i // 15) % 2 else -1.0], dtype=np.float32)


def timed(fn, n: int) -> tuple[float, float]:
    """(wall, cpu) seconds per call of fn(i) over n calls."""
    w, c = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - w) / n, (time.process_time() - c) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    cams = PlayTableEnv()  # default cameras: static 200×200, gripper 84×84
    bare = PlayTableEnv(cameras={})
    cams.reset(seed=0)
    bare.reset(seed=0)
    p = cams._p
    static, gripper = cams._cameras["static"], cams._cameras["gripper"]
    flag = cams._render_flag

    def floor_step(i: int) -> None:
        for _ in range(cams.substeps):
            p.stepSimulation()
        # the floor renders the gripper camera from a view matrix computed outside the timing
        p.getCameraImage(static.width, static.height, static.view, static.projection, renderer=flag,
                         flags=pb.ER_NO_SEGMENTATION_MASK)
        p.getCameraImage(gripper.width, gripper.height, gripper_view, gripper.projection, renderer=flag,
                         flags=pb.ER_NO_SEGMENTATION_MASK)

    def floor_physics(i: int) -> None:
        for _ in range(bare.substeps):
            bare._p.stepSimulation()

    rows = []
    k = 0
    for r in range(args.rounds):
        ours = timed(lambda i: cams.step(wiggle(k + i)), args.steps)
        # the gripper view at the current pose (recomputed each round, as the robot moves)
        hand = p.getLinkState(cams.robot, 8, computeForwardKinematics=True)
        eye, orn = p.multiplyTransforms(hand[4], hand[5], (-0.1, 0, 0), p.getQuaternionFromEuler((1.3, 0, -1.57)))
        rot = np.array(p.getMatrixFromQuaternion(orn)).reshape(3, 3)
        gripper_view = p.computeViewMatrix(eye, (np.array(eye) + rot[:, 1]).tolist(), (-rot[:, 2]).tolist())
        floor = timed(floor_step, args.steps)
        ours_bare = timed(lambda i: bare.step(wiggle(k + i)), args.steps)
        physics = timed(floor_physics, args.steps)
        k += args.steps
        rows.append((ours, floor, ours_bare, physics))
        if r % 3 == 2:  # keep the scenes comparable: start the wiggle over from a reset now and then
            cams.reset(seed=r)
            bare.reset(seed=r)

    med = lambda xs: float(np.median(xs))  # noqa: E731
    ours_wall, ours_cpu = med([r[0][0] for r in rows]), med([r[0][1] for r in rows])
    floor_wall, floor_cpu = med([r[1][0] for r in rows]), med([r[1][1] for r in rows])
    ratio_cpu = med([r[0][1] / r[1][1] for r in rows])
    ratio_wall = med([r[0][0] / r[1][0] for r in rows])
    bare_wall = med([r[2][0] for r in rows])
    ratio_bare = med([r[2][1] / r[3][1] for r in rows])
    print(f"{'':34s} {'ms/step wall':>12s} {'ms/step cpu':>12s}")
    print(f"{'env.step, static+gripper cameras':34s} {1e3 * ours_wall:12.2f} {1e3 * ours_cpu:12.2f}")
    print(f"{'floor: 8 substeps + 2 renders':34s} {1e3 * floor_wall:12.2f} {1e3 * floor_cpu:12.2f}")
    print(f"{'env.step, no cameras':34s} {1e3 * bare_wall:12.2f} {1e3 * med([r[2][1] for r in rows]):12.2f}")
    print(f"{'floor: 8 substeps':34s} {1e3 * med([r[3][0] for r in rows]):12.2f} {1e3 * med([r[3][1] for r in rows]):12.2f}")
    print(f"overhead ratio (cpu) {ratio_cpu:.3f}, (wall) {ratio_wall:.3f}; no cameras vs bare substeps {ratio_bare:.2f}"
          f"  [{platform.processor() or platform.machine()}, renderer {cams.renderer}]")
    cams.close()
    bare.close()
    print(json.dumps({"steps_per_s_with_cameras": round(1.0 / ours_wall, 2),
                      "steps_per_s_no_cameras": round(1.0 / bare_wall, 2),
                      "overhead_ratio": round(ratio_cpu, 4), "overhead_ratio_wall": round(ratio_wall, 4),
                      "no_camera_ratio_vs_substeps": round(ratio_bare, 3)}))


if __name__ == "__main__":
    main()
