"""Policy checkpoints: round trip, trainer nesting, and errors that name the offending key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import fake_batch, step_obs, tiny_config

from metamanip.models.checkpoint import (
    FORMAT_VERSION,
    checkpoint_payload,
    load_policy,
    load_policy_state,
    policy_state_dict,
    save_policy,
)
from metamanip.models.policy import build_policy


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    policy = build_policy(tiny_config("tiny", "lstm"))
    with torch.no_grad():  # move every trainable tensor away from its init
        for p in policy.trainable_parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_policy(policy.eval(), tmp_path_factory.mktemp("ckpt") / "sub" / "policy.pt")
    return policy, path


def test_round_trip_gives_the_same_actions(trained):
    policy, path = trained
    assert [p.name for p in path.parent.iterdir()] == ["policy.pt"]  # no temp file left behind
    torch.manual_seed(123)  # a different random init: everything must come from the file
    loaded = load_policy(path).eval()
    batch = fake_batch()
    np.testing.assert_allclose(
        loaded.select_action(step_obs(batch, 0), batch["text"]),
        policy.select_action(step_obs(batch, 0), batch["text"]),
        atol=1e-6,
    )
    payload = torch.load(path, weights_only=False)
    assert payload["format_version"] == FORMAT_VERSION
    assert set(payload["config"]) == {"backbone", "decoder", "policy"}


def test_trainer_checkpoints_nest_the_payload(trained, tmp_path):
    policy, _ = trained
    trainer_ckpt = {"format": "metamanip-trainer", "step": 5, "policy": checkpoint_payload(policy)}
    torch.save(trainer_ckpt, tmp_path / "last.pt")
    loaded = load_policy(tmp_path / "last.pt")
    for (name, a), b in zip(policy.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_only_pretrained_frozen_weights_are_left_out(trained):
    policy, _ = trained
    keys = policy_state_dict(policy)
    assert any(k.startswith("backbone.vision_encoder.") for k in keys)  # random init: must be stored
    policy.config["backbone"]["vision_encoder"]["pretrained"] = "openai"
    try:
        keys = policy_state_dict(policy)
    finally:
        policy.config["backbone"]["vision_encoder"]["pretrained"] = None
    assert not any(k.startswith("backbone.vision_encoder.") for k in keys)
    assert any(k.startswith("backbone.perceiver.") for k in keys)


def test_mismatches_name_the_key(trained, tmp_path):
    policy, path = trained
    payload = torch.load(path, weights_only=False)
    state = payload["state_dict"]
    key = "decoder.rnn.weight_ih_l0"
    fresh = build_policy(payload["config"])

    with pytest.raises(ValueError, match=f"missing key '{key}'"):
        load_policy_state(fresh, {k: v for k, v in state.items() if k != key})
    with pytest.raises(ValueError, match=rf"'{key}' has shape \(.*\) but the policy expects"):
        load_policy_state(fresh, {**state, key: torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="'decoder.extra.weight'"):
        load_policy_state(fresh, {**state, "decoder.extra.weight": torch.zeros(1)})

    bigger = tiny_config("tiny", "lstm")
    bigger["decoder"]["hidden_size"] = 48
    torch.save({**payload, "config": bigger}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"checkpoint key 'decoder\.[a-z_.0-9]+' has shape"):
        load_policy(tmp_path / "other.pt")


def test_bad_files_are_refused_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_policy(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="corrupt"):
        load_policy(tmp_path / "junk.pt")
    torch.save({"format_version": 99, "config": {}, "state_dict": {}}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="format_version 99"):
        load_policy(tmp_path / "future.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="no 'format_version'"):
        load_policy(tmp_path / "foreign.pt")
