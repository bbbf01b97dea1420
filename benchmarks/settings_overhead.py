"""What the meta-learning settings layer costs on top of the simulator, measured in one run.

    python benchmarks/settings_overhead.py [--steps 300] [--cameras]

Steps the raw PlayTableEnv and ExploreEnv / CombiExploreEnv (which add task detection, latching,
feedback and the info dict on every step) with the same idle action, interleaved in rounds so machine
load hits both alike, and times a trial restore against a plain simulator reset. Goal: the settings
step within 1.10 × the raw step. Last line: JSON with the per-step milliseconds and ratios.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from metamanip.envs.playtable import PlayTableEnv
from metamanip.settings.combi import CombiExploreEnv
from metamanip.settings.explore import ExploreEnv

IDLE = np.array([0, 0, 0, 0, 0, 0, 1.0], dtype=np.float32)


def time_steps(step, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        step(IDLE)
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="steps per env per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cameras", action="store_true", help="render the default cameras (otherwise states only)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cams = None if args.cameras else {}
    sim = PlayTableEnv(cameras=cams)
    big = 10 ** 9  # no trial ends during the timing
    explore = ExploreEnv(PlayTableEnv(cameras=cams), num_objs=7, num_trials=1, trial_steps=big)
    combi = CombiExploreEnv(PlayTableEnv(cameras=cams), num_trials=1, trial_steps=big)
    # interleaved in short blocks, so that the load of the machine hits all three alike
    sim.reset(seed=0)
    explore.reset(seed=0)
    combi.reset(seed=0)
    steppers = {"raw": sim.step, "explore": explore.step, "combi": combi.step}
    times = {k: [] for k in steppers}
    block = 25
    for r in range(args.rounds * max(1, args.steps // block)):
        order = list(steppers)[r % 3:] + list(steppers)[:r % 3]
        for k in order:
            times[k].append(time_steps(steppers[k], block))
    raw, exp, com = (float(np.mean(times[k])) for k in ("raw", "explore", "combi"))

    # a trial restore (ExploreEnv._start_trial) vs a plain reset from the same scene_obs
    explore.reset(seed=0)
    scene = explore._scene_obs.copy()
    n = 30
    t = time.perf_counter()
    for _ in range(n):
        explore.sim.reset(options={"scene_obs": scene})
    reset_ms = (time.perf_counter() - t) / n * 1e3
    t = time.perf_counter()
    for _ in range(n):
        explore._start_trial(None)
    restore_ms = (time.perf_counter() - t) / n * 1e3

    print(f"{'':24s}{'ms/step':>10s}{'ratio':>8s}")
    print(f"{'raw PlayTableEnv':24s}{raw * 1e3:10.2f}{1.0:8.2f}")
    print(f"{'ExploreEnv (7 objects)':24s}{exp * 1e3:10.2f}{exp / raw:8.2f}")
    print(f"{'CombiExploreEnv':24s}{com * 1e3:10.2f}{com / raw:8.2f}")
    print(f"trial restore {restore_ms:.2f} ms vs sim reset {reset_ms:.2f} ms")
    print(json.dumps({"cameras": bool(args.cameras), "raw_step_ms": round(raw * 1e3, 3),
                      "explore_step_ms": round(exp * 1e3, 3), "combi_step_ms": round(com * 1e3, 3),
                      "explore_over_raw": round(exp / raw, 3), "combi_over_raw": round(com / raw, 3),
                      "restore_ms": round(restore_ms, 3), "reset_ms": round(reset_ms, 3),
                      "restore_over_reset": round(restore_ms / reset_ms, 3)}))


if __name__ == "__main__":
    main()
