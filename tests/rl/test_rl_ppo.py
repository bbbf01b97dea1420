"""PPO fine-tuning: the action distribution's density, rollouts that the update reproduces exactly, and
runs that resume (after a preemption signal) exactly where they stopped."""
from __future__ import annotations

import csv
import math
import os
import signal

import numpy as np
import pytest
import torch

from metamanip.cli.pipeline import compose
from metamanip.evaluation.plan import env_for_split
from metamanip.evaluation.workers import ConfigFactory, EnvWorkerPool
from metamanip.models.action_dist import ArmGripperDistribution, GaussianActionHead, to_env_action
from metamanip.models.checkpoint import checkpoint_payload, load_policy_state
from metamanip.models.policy import build_policy
from metamanip.rl.ppo import PPOTrainer, flatten
from metamanip.rl.rollout import EpisodePlan, RolloutCollector
from metamanip.training.preemption import Preempted

ENV = ["env=explore", "env.num_objs=3", "env.num_trials=3", "env.rollout_steps=null", "env.trial_steps=12",
       "env.sim.cameras.static=null", "env.sim.cameras.gripper=null"]


def state_policy(tmp_path, decoder="fc", window=3):
    cfg = compose("train", ["backbone=tiny", f"decoder={decoder}", "policy=tiny", "policy.obs=state",
                            f"policy.window_size={window}"], tmp_path / f"cfg_{decoder}")
    torch.manual_seed(0)
    pol = build_policy(cfg)
    pol.set_state_stats(np.zeros(39), np.ones(39))
    return pol.eval()


def env_cfg(tmp_path):
    return compose("rl", ENV, tmp_path / "rlcfg").env


# ---------------------------------------------------------------- the distribution
def test_sampled_actions_have_the_density_the_head_reports():
    torch.manual_seed(0)
    loc = torch.tensor([[0.3, -0.5, 0.0, 0.9, -0.9, 0.1]])
    logit = torch.tensor([0.7])
    head = GaussianActionHead(init_std=0.2, min_std=0.01)
    dist = head(loc, logit)
    x = dist.sample(torch.Size([200_000]))[:, 0]           # (S, 7)
    # the reported density, written out independently of torch.distributions
    z = (x[:, :6] - loc) / 0.2
    by_hand = (-0.5 * z ** 2 - math.log(0.2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    p_open = torch.sigmoid(logit)
    by_hand = by_hand + torch.where(x[:, 6] > 0.5, torch.log(p_open), torch.log1p(-p_open))
    assert torch.allclose(dist.log_prob(x[:, None])[:, 0], by_hand, atol=1e-4)
    # and the samples really follow it: moments, a histogram of one arm dim, the gripper's frequency
    assert torch.allclose(x[:, :6].mean(0), loc[0], atol=3e-3)
    assert torch.allclose(x[:, :6].std(0), torch.full((6,), 0.2), atol=3e-3)
    lo, hi = 0.3, 0.5
    frac = ((x[:, 0] >= lo) & (x[:, 0] < hi)).float().mean()
    grid = torch.linspace(lo, hi, 401)
    dens = torch.exp(-0.5 * ((grid - 0.3) / 0.2) ** 2) / (0.2 * math.sqrt(2 * math.pi))
    assert abs(float(frac) - float(torch.trapezoid(dens, grid))) < 5e-3
    assert abs(float((x[:, 6] > 0.5).float().mean()) - float(p_open)) < 5e-3
    # E[log p] over samples is minus the entropy the distribution reports
    with torch.no_grad():
        assert abs(float(dist.log_prob(x[:, None]).mean()) + float(dist.entropy())) < 0.02


def test_the_mode_is_the_behaviour_cloned_action_and_env_actions_are_clipped():
    dist = ArmGripperDistribution(torch.tensor([[0.5, -1.0, 0, 0, 0, 0.2]]), torch.tensor([0.1]), torch.tensor([-2.0]))
    env = to_env_action(dist.mode)
    assert env[0, 6] == -1.0 and torch.allclose(env[0, :6], dist.loc[0])
    assert to_env_action(torch.tensor([[3.0, -3.0, 0, 0, 0, 0, 1.0]])).tolist() == [[1.0, -1.0, 0, 0, 0, 0, 1.0]]
    with pytest.raises(ValueError, match="min_std <= init_std"):
        GaussianActionHead(init_std=0.01, min_std=0.1)


# ---------------------------------------------------------------- rollouts the update reproduces
@pytest.mark.parametrize("decoder", ["fc", "lstm", "gpt"])
def test_the_update_recomputes_the_rollouts_distribution_and_select_action(tmp_path, decoder):
    policy = state_policy(tmp_path, decoder)
    env = env_cfg(tmp_path)
    trainer = PPOTrainer(num_workers=1, envs_per_worker=2)
    head, critic = trainer.build_heads(policy, policy.feature_dim)
    plan = EpisodePlan(env, "train", 3, seed=0)
    with EnvWorkerPool(ConfigFactory(env_for_split(env, "train")), 1, envs_per_worker=2) as pool:
        col = RolloutCollector(pool, policy, head, critic, num_objs=3, num_trials=3, trial_steps=12,
                               generator=torch.Generator().manual_seed(1))
        trajs = col.collect(plan(0))
    assert len(trajs) == 3 and all(len(t) >= 3 for t in trajs)
    assert [t.spec for t in trajs] == plan(0)
    flat = flatten(trajs, trainer)
    td = PPOTrainer.minibatch(policy, flat, torch.arange(flat["n"]))
    dist = head(*policy.action_params(td["windows"], td["lengths"]))
    assert torch.allclose(dist.log_prob(td["action"]), td["sample_log_prob"], atol=1e-4)
    # the mode, step by step, is what select_action does on the same history (reset at trial starts)
    t = trajs[0]
    n = len(t)
    mode = to_env_action(dist.mode[:n]).detach().numpy()
    policy.reset()
    for i in range(n):
        if i > 0 and t.window_start[i] == i:  # a new trial: evaluation clears the history
            policy.reset()
        a = policy.select_action({k: v[i:i + 1] for k, v in t.obs.items()}, [t.texts[i]])
        np.testing.assert_allclose(a[0], mode[i], atol=1e-5)


def test_a_plan_gives_the_same_episodes_for_an_iteration_and_new_ones_for_the_next(tmp_path):
    env = env_cfg(tmp_path)
    plan = EpisodePlan(env, "train", 5, seed=0)
    assert plan(3) == plan(3) and len(plan(3)) == 5
    assert {s.seed for s in plan(3)}.isdisjoint({s.seed for s in plan(4)})


# ---------------------------------------------------------------- resume after a preemption
def fit(policy, out, env, iterations, on_checkpoint=None):
    trainer = PPOTrainer(iterations=iterations, episodes_per_iter=2, epochs=2, minibatch_size=32, lr=1e-4,
                         critic_warmup_iters=0, num_workers=1, envs_per_worker=2, bare_rounds=5, target_kl=1e-4)
    return trainer.fit(policy, env_factory=ConfigFactory(env_for_split(env, "train")),
                       plan=EpisodePlan(env, "train", 2, seed=0), num_objs=3, num_trials=3, trial_steps=12,
                       output_dir=out, policy_payload=checkpoint_payload, policy_restore=load_policy_state,
                       on_checkpoint=on_checkpoint)


def test_a_preempted_run_resumes_with_the_same_optimiser_state_and_step_count(tmp_path):
    env = env_cfg(tmp_path)
    straight = fit(state_policy(tmp_path), tmp_path / "a", env, 2)
    assert straight["iterations"] == 2 and straight["env_steps"] > 0

    def preempt(path):  # SIGTERM lands during iteration 1's checkpoint: the run stops after it
        if "iter" not in preempt.__dict__:
            preempt.iter = 1
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Preempted) as stopped:
        fit(state_policy(tmp_path), tmp_path / "b", env, 2, on_checkpoint=preempt)
    assert stopped.value.step == 1
    resumed = fit(state_policy(tmp_path), tmp_path / "b", env, 2)
    assert resumed["iterations"] == 2 and resumed["env_steps"] == straight["env_steps"]
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=False)
    assert a["rl"]["iteration"] == b["rl"]["iteration"] == 2
    for k, v in a["policy"]["state_dict"].items():
        torch.testing.assert_close(b["policy"]["state_dict"][k], v, msg=k)
    opt_a, opt_b = a["rl"]["actor_opt"], b["rl"]["actor_opt"]
    assert opt_a["param_groups"][0]["lr"] == opt_b["param_groups"][0]["lr"] != 1e-4  # the adapted rate resumed
    assert opt_a["state"].keys() == opt_b["state"].keys()
    for i in opt_a["state"]:
        assert opt_a["state"][i]["step"] == opt_b["state"][i]["step"]
        torch.testing.assert_close(opt_a["state"][i]["exp_avg"], opt_b["state"][i]["exp_avg"])
    assert [r["rollout_reward"] for r in a["rl"]["rows"]] == [r["rollout_reward"] for r in b["rl"]["rows"]]
    timing = {"rollout_s", "update_s", "env_steps_per_s"}
    logs = [list(csv.DictReader(open(tmp_path / d / "rl_log.csv"))) for d in ("a", "b")]
    assert [{k: v for k, v in r.items() if k not in timing} for r in logs[0]] == \
        [{k: v for k, v in r.items() if k not in timing} for r in logs[1]]
    assert [int(r["iteration"]) for r in logs[1]] == [1, 2]


def test_the_adaptive_learning_rate_follows_the_kl_within_its_range():
    trainer = PPOTrainer(lr=1e-5, target_kl=0.02, lr_range=(1e-6, 2e-5))
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-5)
    trainer.adapt_lr(opt, 0.1)            # far above 2 x target: slower
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5 / 1.5)
    trainer.adapt_lr(opt, 0.02)           # near the target: unchanged
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5 / 1.5)
    for _ in range(5):                    # far below: faster, never past the range
        trainer.adapt_lr(opt, 0.001)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-5)
    with pytest.raises(ValueError, match="lr_range"):
        PPOTrainer(lr=1e-3, lr_range=(1e-6, 1e-4))
    fixed = PPOTrainer(lr=1e-5, lr_schedule="fixed")
    fixed.adapt_lr(opt, 1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-5)


def test_an_image_policy_rolls_out_from_the_cameras_and_the_update_recomputes_it(tmp_path):
    cfg = compose("train", ["backbone=tiny", "decoder=lstm", "policy=tiny", "policy.obs=rgb+state",
                            "policy.window_size=2"], tmp_path / "cfg_rgb")
    torch.manual_seed(0)
    policy = build_policy(cfg)
    policy.set_state_stats(np.zeros(39), np.ones(39))
    policy.eval()
    env = compose("rl", [*ENV[:-2], "env.sim.cameras.static={width: 32, height: 32}",
                         "env.sim.cameras.gripper={width: 32, height: 32}", "env.trial_steps=4"], tmp_path / "rlcfg").env
    trainer = PPOTrainer(num_workers=1, envs_per_worker=2)
    head, critic = trainer.build_heads(policy, policy.feature_dim)
    with EnvWorkerPool(ConfigFactory(env_for_split(env, "train")), 1, envs_per_worker=2) as pool:
        col = RolloutCollector(pool, policy, head, critic, num_objs=3, num_trials=3, trial_steps=4,
                               generator=torch.Generator().manual_seed(2))
        trajs = col.collect(EpisodePlan(env, "train", 2, seed=0)(0))
    assert trajs[0].obs["rgb_static"].shape[1:] == (32, 32, 3) and "rgb_gripper" in trajs[0].obs
    flat = flatten(trajs, trainer)
    td = PPOTrainer.minibatch(policy, flat, torch.arange(flat["n"]))
    dist = head(*policy.action_params(td["windows"], td["lengths"]))
    assert torch.allclose(dist.log_prob(td["action"]), td["sample_log_prob"], atol=1e-4)
