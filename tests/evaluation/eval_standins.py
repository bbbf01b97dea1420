"""Small stand-ins for the setting, an oracle and a policy, built to the DESIGN.md contracts.

They let the evaluation layer be tested fast and without PyBullet: the setting is a pure-Python
meta-episode whose tasks complete after a seeded delay when the action points at an object.
"""
from __future__ import annotations

from typing import Any

import numpy as np

OBJECTS = ("drawer", "led", "lightbulb", "slider", "red_block")


def object_action(index: int, num_objects: int) -> np.ndarray:
    """The stand-in's action that works on object `index` of the listed order."""
    a = np.zeros(7, dtype=np.float32)
    a[0] = -1.0 + 2.0 * index / max(1, num_objects - 1)
    a[6] = 1.0
    return a


class ToySetting:
    """A meta-episode over listed objects; a trial ends when the action has pointed at one object for
    `delay` steps (reward 1 if it is the rewarding one) or after `trial_steps` steps."""

    def __init__(self, num_trials: int = 4, trial_steps: int = 12, image_size: int = 8, cameras: bool = True,
                 combi: bool = False):
        self.num_trials = num_trials
        self.trial_steps = trial_steps
        self.image_size = image_size
        self.cameras = cameras
        self.combi = combi

    def reset(self, seed: int | None = None, options: dict | None = None):
        options = options or {}
        self.rng = np.random.default_rng(seed)
        if self.combi:
            pair = tuple(options["pair"])
            self.objects = tuple(t.split("_")[-1] for t in pair) + ("drawer", "slider")
            self.meta_index = 0
            self.meta_task = pair
        else:
            self.objects = tuple(options.get("combination") or OBJECTS[:3])
            self.meta_index = int(options.get("meta_position", 0))
            self.meta_task = f"use_{self.objects[self.meta_index]}"
        self.delays = self.rng.integers(2, 5, size=len(self.objects))
        self.trial = 0
        self.trial_step = 0
        self.streak = (-1, 0)
        self.results: list[dict] = []
        self.explored: list[str] = []
        self.feedback = f"first trial. episode objects: {', '.join(self.objects)}"
        return self._obs(), self._info(trial_done=False, completed=())

    def _obs(self) -> dict[str, Any]:
        s = self.image_size
        o = {"robot_obs": np.full(15, self.trial_step / 10.0, dtype=np.float32),
             "scene_obs": np.full(24, self.trial, dtype=np.float32)}
        if self.cameras:
            o["rgb_static"] = np.full((s, s, 3), (self.trial_step * 10) % 256, dtype=np.uint8)
            o["rgb_gripper"] = np.full((s // 2, s // 2, 3), 40 * self.trial, dtype=np.uint8)
        return o

    def _info(self, trial_done: bool, completed: tuple) -> dict[str, Any]:
        return {"feedback": {"train_feedback": self.feedback, "alt_feedback": "paraphrase: " + self.feedback,
                             "lm_feedback": {"role": "user", "content": self.feedback}},
                "trial": self.trial, "trial_done": trial_done, "decision_point": trial_done,
                "completed_tasks": list(completed), "explored_objects": list(self.explored),
                "episode_objects": list(self.objects), "meta_task": self.meta_task,
                "trial_results": [dict(r) for r in self.results]}

    def step(self, action):
        action = np.asarray(action, dtype=np.float32)
        n = len(self.objects)
        k = int(np.clip(round((float(action[0]) + 1.0) / 2.0 * (n - 1)), 0, n - 1))
        self.trial_step += 1
        streak = self.streak[1] + 1 if self.streak[0] == k else 1
        self.streak = (k, streak)
        done_task = streak >= self.delays[k]
        if not (done_task or self.trial_step >= self.trial_steps):
            return self._obs(), 0.0, False, False, self._info(False, ())
        reward = 1.0 if done_task and k == self.meta_index else 0.0
        completed = (f"use_{self.objects[k]}",) if done_task else ()
        self.results.append({"trial": self.trial, "reward": reward, "steps": self.trial_step,
                             "completed_tasks": completed})
        if done_task and self.objects[k] not in self.explored:
            self.explored.append(self.objects[k])
        self.feedback = (f"{completed[0]} was rewarding last trial; " if reward else
                         f"no reward last trial. episode objects: {', '.join(self.objects)}. "
                         f"explored objects: {', '.join(self.explored) or 'none'}")
        self.trial += 1
        self.trial_step = 0
        self.streak = (-1, 0)
        terminated = self.trial >= self.num_trials
        return self._obs(), reward, terminated, False, self._info(True, completed)

    def close(self) -> None:
        pass


class ToyOracle:
    """Explores the listed objects in order, one per trial, and repeats the rewarding one."""

    def __init__(self, env: Any = None):
        self.env = env

    def reset_episode(self, info):
        self.objects = list(info["episode_objects"])

    def act(self, obs, info):
        results = info["trial_results"]
        rewarded = [r for r in results if r["reward"] > 0]
        if rewarded:
            target = rewarded[-1]["completed_tasks"][0].removeprefix("use_")
            index = self.objects.index(target)
        else:
            index = min(len(results), len(self.objects) - 1)
        return object_action(index, len(self.objects))


class ToyPolicy:
    """A deterministic 'policy' reading its text and history: explores by the number of trials it has been
    told about, so its behaviour depends on feedback and on the history being reset."""

    def __init__(self):
        self.history: dict[int, int] = {}
        self.resets: list[int] = []
        self.batches: list[int] = []

    def eval(self):
        return self

    def reset(self, env_ids=None):
        for i in env_ids if env_ids is not None else list(self.history):
            self.history[i] = 0
            self.resets.append(i)

    def select_action(self, obs, text):
        n = len(text)
        self.batches.append(n)
        assert obs["robot_obs"].shape == (n, 15)
        out = np.zeros((n, 7), dtype=np.float32)
        for i, t in enumerate(text):
            self.history[i] = self.history.get(i, 0) + 1
            idx = (len(t) + int(obs["scene_obs"][i, 0])) % 3
            out[i] = object_action(idx, 3)
        return out


def make_setting(**kw: Any) -> ToySetting:
    return ToySetting(**kw)
