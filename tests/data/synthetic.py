"""Synthetic episodes for data-layer tests: moving-square images, trial structure, texts, states."""
from __future__ import annotations

import numpy as np

from metamanip.data.shards import EpisodeBuffer


def make_buffer(num_trials: int = 3, steps_per_trial: int = 7, size: int = 16, seed: int = 0,
                images: bool = True, state: bool = True) -> EpisodeBuffer:
    rng = np.random.default_rng(seed)
    buf = EpisodeBuffer()
    t_global = 0
    for trial in range(num_trials):
        for t in range(steps_per_trial):
            obs = {"robot_obs": rng.normal(size=15).astype(np.float32),
                   "scene_obs": rng.normal(size=24).astype(np.float32)}
            if images:
                img = np.full((size, size, 3), 40 + 10 * seed, np.uint8)
                x = (t_global + seed) % (size - 4)
                img[2:6, x:x + 4] = [250, 10, 10]
                grip = rng.integers(0, 255, (size // 2, size // 2, 3), dtype=np.uint8)
                obs.update(rgb_static=img, rgb_gripper=grip)
            feedback = "first trial. episode objects: drawer, slider" if trial == 0 else \
                f"no reward last trial {trial}"
            buf.add_step(
                obs=obs, action=rng.uniform(-1, 1, 7).astype(np.float32),
                action_abs=rng.normal(size=7).astype(np.float32), trial=trial,
                reward=float(trial == num_trials - 1 and t == steps_per_trial - 1),
                texts={"train_feedback": feedback, "alt_feedback": f"alt {trial}",
                       "lm_feedback": f"lm {trial}", "oracle_text": "Explanation: x Notes: y Instruction: z"
                       if t == 0 else "", "instruction": f"instr {trial}"},
                state={"robot": {"q": rng.normal(size=9), "gripper": float(t)}, "t": t_global} if state else None)
            t_global += 1
    return buf


def write_two_episodes(root) -> "Path":
    """A one-shard dataset of two synthetic episodes (12 and 15 steps, 3 trials each) at `root`."""
    from pathlib import Path

    from metamanip.data.shards import ShardWriter

    w = ShardWriter(root, 0)
    w.write_episode("0000000", make_buffer(num_trials=3, steps_per_trial=4, seed=0),
                    {"meta_task": "open_drawer", "bucket": 2})
    w.write_episode("0000001", make_buffer(num_trials=3, steps_per_trial=5, seed=1),
                    {"meta_task": ["open_drawer", "turn_on_led"], "bucket": 0})
    return Path(root)
