"""`metamanip-rl` as a job: BC checkpoint in, evaluation before and after, a checkpoint metamanip-eval reads."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metamanip.cli import eval as eval_cli
from metamanip.cli import rl as rl_cli
from metamanip.cli.pipeline import compose

ENV = ["env=explore", "env.num_objs=3", "env.num_trials=3", "env.rollout_steps=null", "env.trial_steps=12",
       "env.sim.cameras.static=null", "env.sim.cameras.gripper=null"]
SMALL = ["rl.iterations=2", "rl.episodes_per_iter=2", "rl.num_workers=1", "rl.envs_per_worker=2", "rl.bare_rounds=5",
         "rl.critic_warmup_iters=1", "rl.minibatch_size=64", "eval.num_resets=1", "eval.num_workers=1", "logger=none"]


def bc_checkpoint(path, decoder="fc"):
    from metamanip.models.checkpoint import save_policy
    from metamanip.models.policy import build_policy

    cfg = compose("train", ["backbone=tiny", f"decoder={decoder}", "policy=tiny", "policy.obs=state",
                            "policy.window_size=2"], path.parent / f"cfg_{decoder}")
    torch.manual_seed(0)
    pol = build_policy(cfg)
    pol.set_state_stats(np.zeros(39), np.ones(39))
    return save_policy(pol, path)


@pytest.mark.slow
def test_an_rl_job_evaluates_before_and_after_and_its_checkpoint_evaluates_like_any_policy(tmp_path):
    ckpt = bc_checkpoint(tmp_path / "bc.pt")
    job = tmp_path / "rl"
    wandb_small = [o for o in SMALL if not o.startswith("logger=")] + ["logger=wandb", "logger.mode=offline"]
    metrics = rl_cli.run(compose("rl", [*ENV, f"ckpt={ckpt}", *wandb_small], job))
    runs = list((job / "wandb").glob("offline-run-*"))
    assert runs, f"no offline wandb run under {job / 'wandb'}"
    assert metrics["iterations"] == 2 and metrics["env_steps"] > 0
    assert len(metrics["bc"]["success_by_trial"]) == 3 and len(metrics["rl"]["success_by_trial"]) == 3
    assert metrics["env_steps_per_s"] > 0 and metrics["rollout_overhead_ratio"] > 0
    on_disk = json.loads((job / "metrics.json").read_text())
    assert on_disk["rl"] == metrics["rl"] and json.loads((job / "status.json").read_text())["status"] == "done"
    assert (job / "rl_log.csv").read_text().count("\n") == 3
    for stage in ("eval_before", "eval_after"):
        assert json.loads((job / stage / "summary.json").read_text())["complete"]
    # the RL checkpoint through metamanip-eval, as any trained policy
    ev = eval_cli.run(compose("eval", [*ENV, f"ckpt={job / 'checkpoints' / 'last.pt'}", "eval.split=train",
                                       "eval.num_resets=1", "eval.num_workers=1", "eval.progress=false"],
                              tmp_path / "eval"))
    assert ev["average_reward"] == pytest.approx(metrics["rl"]["average_reward"])
    # a finished job run again does not train again
    again = rl_cli.run(compose("rl", [*ENV, f"ckpt={ckpt}", *SMALL], job))
    assert again["env_steps"] == metrics["env_steps"]


def test_a_policy_without_a_continuous_action_is_refused_before_any_env_starts(tmp_path):
    ckpt = bc_checkpoint(tmp_path / "bc.pt", decoder="diffusion")
    with pytest.raises(ValueError, match="continuous decoder .*lstm, fc or gpt"):
        rl_cli.run(compose("rl", [*ENV, f"ckpt={ckpt}", *SMALL], tmp_path / "rl"))
    assert not (tmp_path / "rl" / "eval_before").exists()


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        rl_cli.run(compose("rl", [*ENV, f"ckpt={tmp_path / 'nope.pt'}", *SMALL], tmp_path / "rl"))
