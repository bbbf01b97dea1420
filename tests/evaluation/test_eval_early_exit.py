"""A multi-exit checkpoint through the real evaluation, in the parent and in workers: budgets from
eval.early_exit, LM compute per action in trials.csv, summary.json and metrics.json."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from metamanip.cli import eval as eval_cli
from metamanip.cli.pipeline import compose
from metamanip.errors import UserError
from metamanip.evaluation.trial_log import read_trials

STATE_ENV = ["env=explore", "env.num_objs=3", "env.num_trials=2", "env.rollout_steps=null", "env.trial_steps=10",
             "env.sim.cameras.static=null", "env.sim.cameras.gripper=null", "eval.split=train",
             "eval.num_resets=1", "eval.progress=false"]


def exit_checkpoint(path):
    from metamanip.models.checkpoint import save_policy
    from metamanip.models.policy import build_policy

    cfg = compose("train", ["backbone=tiny", "decoder=fc", "policy=tiny", "policy.obs=state", "policy.window_size=2",
                            "+policy.state_fusion=lm", "+early_exit@policy.early_exit=deer",
                            "policy.early_exit.exit_interval=1"], path.parent / "cfg")
    torch.manual_seed(0)
    pol = build_policy(cfg)
    pol.set_state_stats(np.zeros(39), np.ones(39))
    return save_policy(pol, path)


@pytest.mark.slow
@pytest.mark.parametrize("in_workers", ["false", "true"])
def test_a_multi_exit_checkpoint_evaluates_with_a_budget_and_counts_its_compute(tmp_path, in_workers):
    ckpt = exit_checkpoint(tmp_path / "exit.pt")
    figures = {}
    for name, budget in (("full", []), ("first", ["eval.early_exit.thresholds=inf"]),
                         ("capped", ["eval.early_exit.max_layer=3"])):
        out = tmp_path / f"{name}_{in_workers}"
        cfg = compose("eval", [*STATE_ENV, f"ckpt={ckpt}", "eval.num_workers=2",
                               f"eval.policy_in_workers={in_workers}", *budget], out)
        metrics = eval_cli.run(cfg)
        rows = read_trials(out / "trials.csv")
        steps = sum(r.steps for r in rows)
        assert sum(r.lm_actions for r in rows) == steps > 0  # every action counted, per trial
        summary = json.loads((out / "summary.json").read_text())
        assert summary["lm_layers_per_action"] == pytest.approx(metrics["lm_layers_per_action"])
        figures[name] = summary
    assert figures["full"]["lm_layers_per_action"] == figures["full"]["mean_exit_layer"] == 4
    assert figures["first"]["lm_layers_per_action"] == 1
    assert figures["capped"]["lm_layers_per_action"] == 3
    assert figures["first"]["lm_flops_per_action"] < figures["capped"]["lm_flops_per_action"] \
        < figures["full"]["lm_flops_per_action"]
    assert figures["first"]["config"]["early_exit"]["thresholds"] == math.inf


def test_a_budget_on_a_policy_without_exits_is_refused(tmp_path):
    from test_eval_state_policy import state_checkpoint

    ckpt = state_checkpoint(tmp_path / "plain.pt")
    cfg = compose("eval", [*STATE_ENV, f"ckpt={ckpt}", "eval.early_exit.exit_ratio=0.5"], tmp_path / "job")
    with pytest.raises(UserError, match="needs a multi-exit policy"):
        eval_cli.run(cfg)
