"""ShardCollector with a scripted stand-in setting (no physics): filter, buckets, give-up, resume."""
from __future__ import annotations

import json

import numpy as np

from metamanip.data.collection import ShardCollector, plan_slots
from metamanip.data.shards import list_episodes


class FakeSetting:
    """Trials of 3 steps; the reward is found at trial `meta_position + late` and kept afterwards.
    `fail_tasks` never get a task completed (the oracle cannot execute them)."""

    setting = "explore"

    def __init__(self, num_trials=4, late=0, fail_tasks=()):
        self.num_trials, self.trial_steps, self.late, self.fail_tasks = num_trials, 3, late, set(fail_tasks)

    def reset(self, seed=None, options=None):
        self.task, self.first = options["meta_task"], options["meta_position"] + self.late
        self.trial, self.t, self.results = 0, 0, []
        return self._obs(), self._info(decision=True)

    def _obs(self):
        return {"robot_obs": np.full(15, self.t, np.float32), "scene_obs": np.zeros(24, np.float32)}

    def _info(self, decision=False, trial_done=False):
        return {"trial": self.trial, "decision_point": decision, "trial_done": trial_done,
                "trial_results": list(self.results), "episode_objects": ["a", "b", "c"], "meta_position": 0,
                "feedback": {"train_feedback": f"trial {self.trial}", "alt_feedback": "alt",
                             "lm_feedback": {"role": "user", "content": "lm"}}}

    def step(self, action):
        self.t += 1
        if self.t < self.trial_steps:
            return self._obs(), 0.0, False, False, self._info()
        reward = float(self.trial >= self.first)
        done_tasks = [] if self.task in self.fail_tasks else [self.task if reward else "other"]
        self.results.append({"trial": self.trial, "reward": reward, "steps": self.t, "completed_tasks": done_tasks})
        self.trial, self.t = self.trial + 1, 0
        over = self.trial >= self.num_trials
        return self._obs(), reward, over, False, self._info(decision=not over, trial_done=True)


class StillAgent:
    decisions: list = []

    def reset_episode(self, info):
        pass

    def act(self, obs, info):
        return np.zeros(7, np.float32)


def _collect(tmp_path, env, slots, **kw):
    return ShardCollector(env, StillAgent(), tmp_path, slots, 0, max_attempts=2, progress=False,
                          record_state=False, **kw).run()


def test_collects_the_plan_with_buckets_and_texts(tmp_path):
    slots = plan_slots(["t1", "t2"], {0: 1, 1: 1, 2: 1}, 6)
    prog = _collect(tmp_path, FakeSetting(), slots)
    assert prog["passed"] == 6 and prog["attempts"] == 6
    refs = list_episodes(tmp_path)
    assert sorted((r.meta["meta_task"], r.meta["bucket"]) for r in refs) == sorted(
        (s.meta_task, s.bucket) for s in slots)
    assert all(r.num_steps == 12 and r.meta["trial_rewards"][-1] == 1.0 for r in refs)


def test_late_oracle_is_refused_by_strict_buckets_and_kept_otherwise(tmp_path):
    slots = plan_slots(["t1"], {0: 1, 1: 1, 2: 0}, 2)
    prog = _collect(tmp_path / "strict", FakeSetting(late=1), slots)
    # each episode passes the thesis filter (reward before the last trial, kept), one trial later than planned
    assert prog["passed"] == 0 and prog["failures"] == {"bucket_mismatch": 4}
    assert sorted(prog["given_up"]) == ["0000000", "0000001"]
    loose = _collect(tmp_path / "loose", FakeSetting(late=1), slots, strict_buckets=False)
    assert loose["passed"] == 2
    assert sorted(r.meta["bucket"] for r in list_episodes(tmp_path / "loose")) == [1, 2]


def test_filter_failures_are_counted_and_resume_skips_done_and_given_up(tmp_path):
    slots = plan_slots(["good", "bad"], {0: 1, 1: 1, 2: 0}, 4)
    prog = _collect(tmp_path, FakeSetting(fail_tasks={"bad"}), slots)
    assert prog["passed"] == 2 and prog["failures"] == {"trial_without_task": 4}
    stored = json.loads((tmp_path / "shard-00000.progress.json").read_text())
    assert stored["attempts"] == 6 and len(stored["given_up"]) == 2
    again = _collect(tmp_path, FakeSetting(fail_tasks={"bad"}), slots)  # a resume: nothing left to do
    assert again["attempts"] == 6 and again["passed"] == 2
