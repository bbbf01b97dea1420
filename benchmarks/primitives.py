"""Success of the scripted motion primitives from random valid initial states, robot-base noise on.

    python benchmarks/primitives.py --episodes 20

For every task, N initial states are drawn where the task is feasible (random door, drawer, lights and
block placement, table-block noise) with the robot base moved by dx ±0.15, dy ±0.02 and z in
0.19 … 0.34 (CALVIN's base height 0.24 and Meta-CALVIN's 0.29, each ± 0.05). The primitive runs for
at most `--max-steps` steps; the task counts when its detector fires, and any other detector firing
during the rollout counts as a wrong detection. Prints a per-task table; the last line is JSON
{"min_success", "per_task", "wrong_task_detections", ...}.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from metamanip.envs.playtable import PlayTableEnv
from metamanip.envs.scene import random_scene_obs
from metamanip.envs.tasks import TASKS, detect_tasks
from metamanip.oracle.primitives import feasible, make_primitive

BASE = np.array([-0.34, -0.46, 0.24])
BASE_LOW = np.array([-0.15, -0.02, -0.05])
BASE_HIGH = np.array([0.15, 0.02, 0.10])


def run_task(env: PlayTableEnv, task: str, episodes: int, rng: np.random.Generator, max_steps: int) -> dict:
    successes, wrong, lengths = 0, 0, []
    for ep in range(episodes):
        while True:
            scene = random_scene_obs(rng, block_noise=True)
            if feasible(task, scene):
                break
        base = BASE + rng.uniform(BASE_LOW, BASE_HIGH)
        obs, start = env.reset(seed=int(rng.integers(2**31)), options={"scene_obs": scene, "base_pos": base})
        prim = make_primitive(task)
        prim.reset(obs)
        others: set[str] = set()
        done_at = None
        for step in range(max_steps):
            obs, *_ = env.step(prim.act(obs))
            seen = detect_tasks(start, env.get_info(), TASKS)
            others |= seen - {task}
            if task in seen and done_at is None:
                done_at = step + 1
            if prim.done:
                break
        successes += done_at is not None
        wrong += len(others)
        if done_at is not None:
            lengths.append(done_at)
        if others or done_at is None:
            print(f"  {task} episode {ep}: detected={done_at is not None} others={sorted(others)} "
                  f"base={np.round(base, 3).tolist()}")
    return {"success": successes / episodes, "wrong": wrong,
            "mean_steps": float(np.mean(lengths)) if lengths else float("nan"),
            "max_steps": int(max(lengths)) if lengths else -1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=240, help="step budget per rollout (a trial's)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; valid tasks: {list(TASKS)}")
    rng = np.random.default_rng(args.seed)
    env = PlayTableEnv(cameras={})
    results = {}
    t0 = time.time()
    for task in tasks:
        results[task] = run_task(env, task, args.episodes, rng, args.max_steps)
    env.close()
    print(f"\n{'task':28s} {'success':>8s} {'mean steps':>11s} {'max steps':>10s} {'wrong':>6s}")
    for task, r in results.items():
        print(f"{task:28s} {r['success']:8.2f} {r['mean_steps']:11.1f} {r['max_steps']:10d} {r['wrong']:6d}")
    print(f"({args.episodes} episodes per task, {time.time() - t0:.0f} s)")
    print(json.dumps({"min_success": min(r["success"] for r in results.values()),
                      "per_task": {t: r["success"] for t, r in results.items()},
                      "wrong_task_detections": sum(r["wrong"] for r in results.values()),
                      "episodes": args.episodes,
                      "max_steps_to_success": max(r["max_steps"] for r in results.values())}))


if __name__ == "__main__":
    main()
