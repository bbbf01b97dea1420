"""Multi-exit policies (DeeR-VLA): exits, the exit criterion, the history of exited steps, thresholds fitted to
an exit distribution, compute counted from shapes, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import fake_batch, step_obs, tiny_config
from test_state_policy import state_batch, state_obs, with_stats

from metamanip.models.checkpoint import load_policy, save_policy
from metamanip.models.early_exit import (MultiExitPolicy, calibrate, exit_distribution, exit_layer_indices,
                                         exits_taken, fit_thresholds, lm_flops)
from metamanip.models.policy import build_policy


def multi_exit(decoder: str = "lstm", obs: str = "state", n_layer: int = 4, **early_exit):
    cfg = tiny_config("tiny", decoder, obs=obs, state_fusion="lm" if "state" in obs else "concat",
                      early_exit={"exit_interval": 1, **early_exit})
    cfg["backbone"]["lang_encoder"]["config"]["n_layer"] = n_layer
    cfg["backbone"]["cross_attn_every_n_layers"] = 1
    torch.manual_seed(0)
    policy = build_policy(cfg)
    with torch.no_grad():  # open the tanh gates (0 at init), so the media change the LM's features
        for block in policy.backbone.lang_encoder.gated_cross_attn_layers:
            block.attn_gate.fill_(1.0)
            block.ff_gate.fill_(1.0)
    return with_stats(policy) if "state" in obs else policy


def state_only(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if not k.startswith("rgb_")}


def roll(policy, batch, steps, obs="state"):
    policy.reset()
    for s in range(steps):
        o = state_obs(batch, s) if obs == "state" else step_obs(batch, s)
        actions = policy.select_action(o, batch["text"])
    return actions


def test_exits_sit_every_interval_and_after_the_last_layer():
    assert exit_layer_indices(12, 2) == [1, 3, 5, 7, 9, 11]  # DeeR's 12-layer cut of MPT-1B: 6 exits
    assert exit_layer_indices(8, 3) == [2, 5, 7]
    policy = multi_exit(n_layer=6, exit_interval=2, early_exit_layer=3)
    assert isinstance(policy, MultiExitPolicy)
    assert policy.n_layers == 4 and policy.exit_layers == [1, 3] and len(policy.exit_heads) == 2
    assert policy.backbone.lang_encoder.config.num_hidden_layers == 4
    assert len(policy.backbone.lang_encoder.gated_cross_attn_layers) == 4


@pytest.mark.parametrize("decoder", ["lstm", "fc", "gpt"])
def test_thresholds_at_zero_give_the_full_models_action(decoder):
    policy = multi_exit(decoder).eval()
    policy.configure_exits(thresholds=0.0)
    batch = state_only(state_batch(b=3, t=3))
    actions = roll(policy, batch, 3)
    np.testing.assert_allclose(actions, policy.predict_window(batch).numpy(), atol=1e-5)
    c = policy.take_compute(0)
    assert c["lm_actions"] == 3 and c["lm_exit_layers"] == c["lm_layers"] == 3 * policy.n_layers


@pytest.mark.parametrize("decoder", ["lstm", "fc", "gpt"])
def test_thresholds_at_infinity_leave_every_step_at_the_first_exit(decoder):
    policy = multi_exit(decoder).eval()
    policy.configure_exits(thresholds=math.inf)
    batch = state_only(state_batch(b=2, t=3))
    actions = roll(policy, batch, 3)
    for env in range(2):
        c = policy.take_compute(env)
        assert c["lm_exit_layers"] == c["lm_layers"] == 3 * 1  # layer 1 of 4, every step
    # the window held every step at the first exit: the extra head on exit-0 features of the whole window
    feats = policy.exit_window_features(batch)[:, :, 0]
    np.testing.assert_allclose(actions, policy.decoder.predict(feats).detach().numpy(), atol=1e-5)
    assert not torch.allclose(feats, policy.exit_window_features(batch)[:, :, -1])


def test_the_window_keeps_each_step_at_the_exit_it_left_from():
    policy = multi_exit("lstm").eval()
    batch = state_only(state_batch(b=2, t=3))
    policy.reset()
    policy.configure_exits(thresholds=math.inf)
    policy.select_action(state_obs(batch, 0), batch["text"])  # step 0 leaves at exit 0
    policy.configure_exits(thresholds=0.0)
    policy.select_action(state_obs(batch, 1), batch["text"])  # steps 1, 2 run to the last exit
    actions = policy.select_action(state_obs(batch, 2), batch["text"])
    feats = policy.exit_window_features(batch)
    window = torch.cat([feats[:, :1, 0], feats[:, 1:, -1]], dim=1)
    np.testing.assert_allclose(actions, policy.decoder.predict(window).detach().numpy(), atol=1e-5)


def test_max_layer_caps_the_layers_an_action_runs():
    policy = multi_exit("fc").eval()
    policy.configure_exits(thresholds=0.0, max_layer=2)
    batch = state_only(state_batch(b=2, t=2))
    roll(policy, batch, 2)
    c = policy.take_compute(1)
    seq_len = policy.backbone.tokenize(batch["text"])[0].shape[1]
    assert c["lm_layers"] == 2 * 2
    assert c["lm_flops"] == pytest.approx(2 * lm_flops(policy.backbone.lang_encoder, 2, seq_len, policy.state_tokens))
    with pytest.raises(ValueError, match="max_layer must be in"):
        policy.configure_exits(max_layer=9)


def test_rows_of_a_batch_leave_at_their_own_exits():
    policy = multi_exit("fc").eval()
    batch = state_only(state_batch(b=2, t=1))
    policy.reset()
    # thresholds between the two rows' first-exit deltas: one row leaves at exit 0, the other goes on
    from metamanip.models.early_exit import exit_deltas
    deltas = exit_deltas(policy, batch)
    lo, hi = sorted(deltas[:, 0].tolist())
    policy.configure_exits(thresholds=[(lo + hi) / 2, 0.0, 0.0, 0.0])
    policy.select_action(state_obs(batch, 0), batch["text"])
    first = int(torch.argmin(deltas[:, 0]))
    assert policy.take_compute(first)["lm_exit_layers"] == 1
    assert policy.take_compute(1 - first)["lm_exit_layers"] == policy.n_layers


def test_fitted_thresholds_give_the_target_exit_distribution():
    rng = np.random.default_rng(0)
    deltas = np.abs(rng.normal(size=(1000, 6))) * np.linspace(1.0, 0.2, 6)
    for ratio in (0.5, 1.0, 1.6):
        th = fit_thresholds(deltas, ratio)
        assert th[-1] == math.inf and len(th) == 6
        got = np.bincount(exits_taken(deltas, th), minlength=6) / len(deltas)
        np.testing.assert_allclose(got, exit_distribution(6, ratio), atol=2e-3)
    assert exit_distribution(3, 0.5).tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_calibration_deltas_fit_thresholds_on_the_policy_and_travel_in_the_checkpoint(tmp_path):
    policy = multi_exit("fc", calibration_windows=16).eval()
    batches = [state_only(state_batch(b=8, t=1, seed=s)) for s in range(3)]
    deltas = calibrate(policy, batches)
    assert deltas.shape == (16, policy.n_exits) and np.isfinite(deltas).all()
    policy.configure_exits(exit_ratio=0.7)
    taken = exits_taken(deltas, policy.thresholds.tolist())
    target = np.round(np.cumsum(exit_distribution(policy.n_exits, 0.7)) * 16).astype(int)
    assert np.cumsum(np.bincount(taken, minlength=policy.n_exits)).tolist() == target.tolist()
    # the policy leaves at those exits on the calibration windows themselves (window 1 = one step)
    save_policy(policy, tmp_path / "p.pt")
    loaded = load_policy(tmp_path / "p.pt").eval()
    np.testing.assert_allclose(loaded.calibration.numpy(), policy.calibration.numpy())
    np.testing.assert_allclose(loaded.thresholds.numpy(), policy.thresholds.numpy())
    b = batches[0]
    np.testing.assert_allclose(roll(loaded, b, 1), roll(policy, b, 1), atol=1e-6)
    exits = [loaded.take_compute(i)["lm_exit_layers"] for i in range(8)]
    assert exits == (taken[:8] + 1).tolist()


def test_uncalibrated_policy_refuses_an_exit_ratio():
    policy = multi_exit("fc")
    with pytest.raises(ValueError, match="no calibration deltas"):
        policy.configure_exits(exit_ratio=0.5)


def test_joint_loss_trains_every_exit_and_the_extra_head():
    policy = multi_exit("lstm", exit_dropout=0.1)
    out = policy(state_only(state_batch(b=2, t=3)))
    assert {"exit0_loss", "exit3_loss", "extra_random_loss", "extra_split_loss"} <= set(out)
    out["loss"].backward()
    assert all(h.actions.mlp[0].weight.grad.abs().sum() > 0 for h in policy.exit_heads)
    assert policy.decoder.actions.mlp[0].weight.grad.abs().sum() > 0
    # the state reaches the LM through the gated cross-attention (gates start at 0, as Flamingo's)
    xattn = policy.backbone.lang_encoder.gated_cross_attn_layers[0]
    assert xattn.attn_gate.grad is not None and xattn.attn_gate.grad.abs() > 0


def test_heads_only_stage_freezes_the_backbone_and_starts_from_the_joint_weights(tmp_path):
    joint = multi_exit("fc")
    save_policy(joint, tmp_path / "joint.pt")
    heads = multi_exit("fc", stage="heads", init_from=str(tmp_path / "joint.pt"))
    trainable = {n for n, p in heads.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("decoder.", "exit_heads.")) for n in trainable)
    heads.train()
    assert not heads.backbone.training and heads.decoder.training
    for (n, a), (_, b) in zip(joint.backbone.named_parameters(), heads.backbone.named_parameters()):
        torch.testing.assert_close(a, b)


def test_an_image_policy_exits_too():
    policy = multi_exit("gpt", obs="rgb").eval()
    policy.configure_exits(thresholds=0.0)
    batch = fake_batch(b=2, t=3)
    np.testing.assert_allclose(roll(policy, batch, 3, obs="rgb"), policy.predict_window(batch).numpy(), atol=1e-5)


def test_layer_flops_match_torchs_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    from metamanip.models.lm_injection import condition

    policy = multi_exit("fc", n_layer=3).eval()
    ids, mask = policy.backbone.tokenize(["open the drawer please"], policy.device)
    state = torch.zeros(1, 39)
    with torch.no_grad():
        vis_x = policy._media(None, None, state)
        lm = policy.backbone.lang_encoder
        counter = FlopCounterMode(display=False)
        with counter, condition(lm, vis_x, ids == policy.backbone.media_token_id):
            lm.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
    counted = counter.get_total_flops()
    ours = lm_flops(lm, 3, ids.shape[1], vis_x.shape[2])
    assert ours == pytest.approx(counted, rel=0.02)


def test_state_fusion_lm_is_refused_without_exits_and_concat_with_exits():
    cfg = tiny_config("tiny", "fc", obs="state", state_fusion="lm")
    with pytest.raises(ValueError, match="needs policy.early_exit"):
        build_policy(cfg)
    cfg = tiny_config("tiny", "fc", obs="state", state_fusion="concat", early_exit={"exit_interval": 1})
    with pytest.raises(ValueError, match="state_fusion=lm"):
        build_policy(cfg)
