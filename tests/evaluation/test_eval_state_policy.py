"""A state policy through the real evaluation: batched in the parent and a copy per worker; the feedback
ablation reaches the policy as the first-trial text in every trial."""
from __future__ import annotations

import json

import numpy as np
import torch

from metamanip.cli import eval as eval_cli
from metamanip.cli.pipeline import compose
from metamanip.evaluation.evaluator import evaluate
from metamanip.evaluation.trial_log import read_trials
from metamanip.evaluation.workers import ConfigFactory

STATE_ENV = ["env=explore", "env.num_objs=3", "env.num_trials=3", "env.rollout_steps=null", "env.trial_steps=12",
             "env.sim.cameras.static=null", "env.sim.cameras.gripper=null", "eval.split=train",
             "eval.num_resets=2", "eval.progress=false"]


def state_checkpoint(path, **policy):
    """A tiny state policy (random weights, statistics set) from the real conf/ presets."""
    from metamanip.models.checkpoint import save_policy
    from metamanip.models.policy import build_policy

    cfg = compose("train", ["backbone=tiny", "decoder=fc", "policy=tiny", "policy.obs=state",
                            "policy.window_size=2", *[f"policy.{k}={v}" for k, v in policy.items()]], path.parent / "cfg")
    torch.manual_seed(0)
    pol = build_policy(cfg)
    pol.set_state_stats(np.zeros(39), np.ones(39))
    return save_policy(pol, path)


def test_a_state_checkpoint_evaluates_in_the_parent_and_in_worker_processes(tmp_path):
    ckpt = state_checkpoint(tmp_path / "state.pt")
    results = {}
    for mode in ("false", "true"):
        cfg = compose("eval", [*STATE_ENV, f"ckpt={ckpt}", "eval.num_workers=2", f"eval.policy_in_workers={mode}"],
                      tmp_path / f"job_{mode}")
        metrics = eval_cli.run(cfg)
        rows = read_trials(tmp_path / f"job_{mode}" / "trials.csv")
        assert len(rows) == 2 * 3 and all(r.steps <= 12 for r in rows)
        summary = json.loads((tmp_path / f"job_{mode}" / "summary.json").read_text())
        assert summary["complete"] and len(summary["success_by_trial"]) == 3
        results[mode] = [(r.trial, r.steps, r.completed_tasks) for r in rows], metrics
    assert results["false"][0] == results["true"][0]  # same policy, same episodes: same trials either way


class RecordingPolicy:
    """Stands in for a policy: records the text of every call, moves nowhere."""

    def __init__(self, text_input: str):
        self.text_input = text_input
        self.seen: list[tuple[int, str]] = []
        self.calls = 0

    def eval(self):
        return self

    def reset(self, env_ids=None):
        pass

    def select_action(self, obs, text):
        assert "robot_obs" in obs and "scene_obs" in obs and "rgb_static" not in obs
        self.seen.extend((self.calls, t) for t in text)
        self.calls += 1
        a = np.zeros((len(text), 7), np.float32)
        a[:, 6] = 1.0
        return a


def test_the_ablation_feeds_the_first_trial_text_in_every_trial(tmp_path):
    cfg = compose("eval", [*STATE_ENV, "eval.num_resets=1"], tmp_path / "cfg")
    specs = eval_cli.protocol_specs(cfg)[:1]
    texts = {}
    for mode in ("trial", "first_trial"):
        pol = RecordingPolicy(mode)
        evaluate(specs, env_factory=ConfigFactory(cfg.env), out_dir=tmp_path / mode, num_objs=3, num_trials=3,
                 trial_steps=12, num_workers=1, policy=pol, progress=False)
        texts[mode] = [t for _, t in pol.seen]
    assert len(texts["trial"]) == len(texts["first_trial"]) == 36  # 3 trials x 12 steps, nothing done
    assert texts["trial"][0].startswith("first trial")
    assert texts["trial"][12].startswith("no reward last trial") and "explored objects" in texts["trial"][12]
    assert set(texts["first_trial"]) == {texts["trial"][0]}
