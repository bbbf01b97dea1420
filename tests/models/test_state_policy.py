"""State observations: policy.obs=state|rgb+state, normalisation owned by the policy, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import fake_batch, step_obs, tiny_config

from metamanip.models.checkpoint import load_policy, save_policy
from metamanip.models.policy import build_policy


def state_batch(b: int = 2, t: int = 3, seed: int = 0) -> dict:
    batch = fake_batch(b=b, t=t, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    batch["robot_obs"] = torch.randn(b, t, 15, generator=g) * 0.3 + 0.5
    batch["scene_obs"] = torch.randn(b, t, 24, generator=g) * 0.1
    return batch


def state_obs(batch: dict, step: int, images: bool = False) -> dict:
    obs = step_obs(batch, step) if images else {}
    obs["robot_obs"] = batch["robot_obs"][:, step].numpy()
    obs["scene_obs"] = batch["scene_obs"][:, step].numpy()
    return obs


def with_stats(policy):
    policy.set_state_stats(np.linspace(-1, 1, 39), np.linspace(0.5, 2, 39))
    return policy


@pytest.mark.parametrize("decoder", ["lstm", "fc", "gpt"])
@pytest.mark.parametrize("obs", ["state", "rgb+state"])
def test_state_policy_trains_and_select_action_matches_the_window(obs, decoder):
    torch.manual_seed(0)
    policy = with_stats(build_policy(tiny_config("tiny", decoder, obs=obs)))
    assert policy.cameras == (() if obs == "state" else ("static", "gripper"))
    batch = state_batch()
    if obs == "state":  # a state policy's batch needs no images
        batch = {k: v for k, v in batch.items() if not k.startswith("rgb_")}
    out = policy(batch)
    out["loss"].backward()
    enc = policy.state_encoder
    assert enc.net[0].weight.grad is not None and enc.net[0].weight.grad.abs().sum() > 0
    assert policy.backbone.lang_encoder.get_input_embeddings().weight.grad.abs().sum() > 0  # the text is read
    policy.eval()
    policy.reset()
    for step in range(3):
        actions = policy.select_action(state_obs(batch, step, images=obs != "state"), batch["text"])
    np.testing.assert_allclose(actions, policy.predict_window(batch).numpy(), atol=1e-5)


def test_state_changes_the_action_and_text_changes_it_too():
    torch.manual_seed(0)
    policy = with_stats(build_policy(tiny_config("tiny", "fc", obs="state"))).eval()
    batch = state_batch(b=2)
    a = policy.predict_window(batch)
    moved = dict(batch, scene_obs=batch["scene_obs"] + 1.0)
    assert not torch.allclose(a, policy.predict_window(moved))
    other = dict(batch, text=["push the button", "open the drawer"])
    assert not torch.allclose(a, policy.predict_window(other))


def test_normalisation_uses_the_stored_statistics_and_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    policy = build_policy(tiny_config("tiny", "lstm", obs="state"))
    batch = state_batch()
    with pytest.raises(RuntimeError, match="statistics were never set"):
        policy(batch)
    mean, std = np.arange(39, dtype=np.float32), np.full(39, 2.0, np.float32)
    std[0] = 0.0  # a dimension that never moves: clamped, no division by zero
    policy.set_state_stats(mean, std)
    x = policy.state_encoder.gather(batch)
    z = policy.state_encoder.normalize(x)
    np.testing.assert_allclose(z[..., 1:].numpy(), ((x[..., 1:] - torch.as_tensor(mean[1:])) / 2.0).numpy(), rtol=1e-6)
    assert torch.isfinite(z).all()
    policy.eval()
    path = save_policy(policy, tmp_path / "p.pt")
    loaded = load_policy(path).eval()
    np.testing.assert_array_equal(loaded.state_encoder.mean.numpy(), mean)
    assert bool(loaded.state_encoder.stats_set)
    np.testing.assert_allclose(loaded.predict_window(batch).numpy(), policy.predict_window(batch).numpy(), atol=1e-6)
    # statistics are part of the payload: a checkpoint without them is refused by name
    sd = torch.load(path, weights_only=False)["state_dict"]
    assert "state_encoder.mean" in sd and "state_encoder.std" in sd


def test_bad_state_inputs_are_named():
    policy = with_stats(build_policy(tiny_config("tiny", "fc", obs="state")))
    batch = state_batch()
    with pytest.raises(ValueError, match="scene_obs"):
        policy({k: v for k, v in batch.items() if k != "scene_obs"})
    with pytest.raises(ValueError, match="24 values"):
        policy(dict(batch, scene_obs=batch["scene_obs"][..., :20]))
    with pytest.raises(ValueError, match="policy.obs must be one of"):
        build_policy(tiny_config("tiny", "fc", obs="pixels"))
    with pytest.raises(ValueError, match="shape"):
        policy.set_state_stats(np.zeros(10), np.ones(10))
    with pytest.raises(ValueError, match="reads no state"):
        build_policy(tiny_config("tiny", "fc")).set_state_stats(np.zeros(39), np.ones(39))
