"""Every backbone preset (shrunk to test size) x every decoder: training forward, backward, select_action."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import BACKBONES, DECODERS, fake_batch, step_obs, tiny_config

from metamanip.models.policy import build_policy


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_forward_backward_and_select_action_matches_the_window_forward(backbone, decoder):
    torch.manual_seed(0)
    policy = build_policy(tiny_config(backbone, decoder))
    batch = fake_batch(b=2, t=3)
    bb = policy.backbone
    blocks = [b for b in bb.lang_encoder.gated_cross_attn_layers if b is not None]
    if bb.feature_layer == -2:  # RoboFlamingo's MPT-1B feature is the last block's input: its xattn is unused
        blocks = blocks[:-1]

    policy.train()
    policy(batch)["loss"].backward()  # gates at 0: only the gates learn on the first step (Flamingo)
    assert all(b.attn_gate.grad is not None and b.attn_gate.grad.abs().sum() > 0 for b in blocks)
    assert all(b.attn.to_q.weight.grad is None or b.attn.to_q.weight.grad.abs().sum() == 0 for b in blocks)
    policy.zero_grad()
    for b in blocks:
        b.attn_gate.data.fill_(0.5)
    out = policy(batch)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is None for p in bb.vision_encoder.parameters())            # frozen, no_grad
    assert bb.perceiver.latents.grad is not None and bb.perceiver.latents.grad.abs().sum() > 0
    assert all(b.attn.to_q.weight.grad.abs().sum() > 0 for b in blocks)
    assert bb.lang_encoder.get_input_embeddings().weight.grad is not None
    assert all(p.grad is not None for p in policy.decoder.parameters() if p.requires_grad)

    policy.eval()
    policy.reset()
    for step in range(3):
        if step == 2:
            policy.seed(7)
        actions = policy.select_action(step_obs(batch, step), batch["text"])
    assert actions.shape == (2, 7) and actions.dtype == np.float32
    assert set(np.unique(actions[:, 6])) <= {-1.0, 1.0}
    policy.seed(7)
    window = policy.predict_window(batch).numpy()
    np.testing.assert_allclose(actions, window, atol=1e-5)
    if decoder in ("lstm", "fc", "gpt"):  # the training forward's own per-step outputs, last step
        with torch.no_grad():
            arm, grip_logit = policy.decoder(policy.window_features(batch))
        np.testing.assert_allclose(actions[:, :6], arm[:, -1].numpy(), atol=1e-5)
        np.testing.assert_array_equal(actions[:, 6], np.where(grip_logit[:, -1, 0].numpy() > 0, 1.0, -1.0))


@pytest.mark.parametrize("fusion_mode,use_gripper", [("pre", True), ("post", False)])
def test_fusion_modes_and_static_camera_only(fusion_mode, use_gripper):
    policy = build_policy(tiny_config("tiny", "fc", fusion_mode=fusion_mode, use_gripper=use_gripper))
    batch = fake_batch()
    if not use_gripper:
        del batch["rgb_gripper"]
    policy(batch)["loss"].backward()
    bb = policy.backbone
    latents = bb.encode_vision(
        bb.preprocess_images(batch["rgb_static"][:, 0]),
        bb.preprocess_images(batch["rgb_gripper"][:, 0]) if use_gripper else None,
    )
    n_lat = bb.perceiver.num_latents
    assert latents.shape == (2, 1, n_lat, bb.vis_dim)  # pre: one Perceiver pass over both cameras' tokens


def test_post_fusion_concatenates_one_latent_set_per_camera():
    policy = build_policy(tiny_config("tiny", "fc"))
    bb = policy.backbone
    x = bb.preprocess_images(torch.randint(0, 256, (2, 3, 24, 24), dtype=torch.uint8))
    assert bb.encode_vision(x, x).shape == (2, 1, 2 * bb.perceiver.num_latents, bb.vis_dim)
    with pytest.raises(ValueError, match="use_gripper=True"):
        bb.encode_vision(x, None)


def test_history_is_per_env_slides_and_resets():
    torch.manual_seed(0)
    policy = build_policy(tiny_config("tiny", "lstm")).eval()
    batch = fake_batch(b=2, t=3)
    long = fake_batch(b=2, t=5, seed=3)
    policy.reset()
    for step in range(5):  # 5 steps with window 3: the history keeps the last 3 frames
        actions = policy.select_action(step_obs(long, step), long["text"])
    last3 = {k: (v[:, 2:] if torch.is_tensor(v) else v) for k, v in long.items()}
    np.testing.assert_allclose(actions, policy.predict_window(last3).numpy(), atol=1e-5)

    # env 1 restarts: its history is its new frames only, env 0 keeps sliding
    policy.reset(env_ids=[1])
    mixed = {k: (torch.stack([long[k][0, 0], batch[k][1, 0]]) if torch.is_tensor(v) else v)
             for k, v in long.items()}
    obs = {k: v.permute(0, 2, 3, 1).numpy() if k.startswith("rgb") else v.numpy()
           for k, v in mixed.items() if torch.is_tensor(v) and k != "actions"}
    actions = policy.select_action(obs, [long["text"][0], batch["text"][1]])
    fresh = {k: (v[1:2, :1] if torch.is_tensor(v) else v[1:2]) for k, v in batch.items()}
    np.testing.assert_allclose(actions[1], policy.predict_window(fresh).numpy()[0], atol=1e-5)
    assert len(policy._history[0]) == 3 and len(policy._history[1]) == 1


def test_bad_inputs_are_named():
    policy = build_policy(tiny_config("tiny", "fc"))
    batch = fake_batch()
    with pytest.raises(ValueError, match="rgb_gripper"):
        policy({k: v for k, v in batch.items() if k != "rgb_gripper"})
    with pytest.raises(ValueError, match=r"\(B, T, 7\)"):
        policy({**batch, "actions": batch["actions"][..., :6]})
    with pytest.raises(ValueError, match="2 texts for 1 environments"):
        policy.select_action({k: v[:1] for k, v in step_obs(batch, 0).items()}, batch["text"])
    with pytest.raises(ValueError, match="lacks \\['decoder'\\]"):
        build_policy({"backbone": tiny_config()["backbone"], "policy": {"window_size": 2}})
    with pytest.raises(ValueError, match="unknown policy options"):
        build_policy(tiny_config("tiny", "fc", cameras=2))


def test_trainable_set_and_param_groups():
    policy = build_policy(tiny_config("flamingo_mpt_3b", "lstm"))
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert any(n.startswith("backbone.perceiver.") for n in trainable)
    assert any(".gated_cross_attn_layers." in n for n in trainable)
    assert "backbone.lang_encoder.transformer.wte.weight" in trainable
    assert not any(n.startswith("backbone.vision_encoder.") for n in trainable)
    assert not any(".transformer.blocks." in n for n in trainable)  # the LM's own layers stay frozen
    groups = policy.param_groups(0.1)
    decay, no_decay = ({id(p) for p in g["params"]} for g in groups)
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decay.isdisjoint(no_decay) and len(decay | no_decay) == len(policy.trainable_parameters())
    assert id(policy.backbone.lang_encoder.get_input_embeddings().weight) in no_decay
    assert id(policy.backbone.perceiver.latents) in no_decay
    assert id(policy.decoder.rnn.weight_ih_l0) in decay

    rf = build_policy(tiny_config("flamingo_mpt_3b", "lstm", weight_decay_on="cross_attention"))
    decay = {n for n, p in rf.named_parameters() if id(p) in {id(q) for q in rf.param_groups(0.1)[0]["params"]}}
    assert decay and all(".gated_cross_attn_layers." in n and not n.endswith("_gate") for n in decay)
    assert "backbone.lang_encoder.gated_cross_attn_layers.0.attn.to_q.weight" in decay


@pytest.mark.slow
def test_the_tiny_policy_learns_a_batch():
    torch.manual_seed(0)
    policy = build_policy(tiny_config("tiny", "lstm")).train()
    batch = fake_batch(b=4, t=3)
    batch["actions"] = batch["actions"][:, :1].expand(-1, 3, -1).clone()  # one action per window
    opt = torch.optim.AdamW(policy.param_groups(0.0), lr=3e-3)
    first = None
    for _ in range(30):
        loss = policy(batch)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_bf16_policy_trains_and_acts():
    batch = fake_batch()
    for decoder in ("lstm", "diffusion"):
        policy = build_policy(tiny_config("tiny", decoder)).to(torch.bfloat16)
        loss = policy(batch)["loss"]
        assert loss.dtype == torch.bfloat16 and torch.isfinite(loss)
        loss.backward()
        actions = policy.eval().select_action(step_obs(batch, 0), batch["text"])
        assert actions.dtype == np.float32 and np.isfinite(actions).all()


def test_freeze_switches_change_what_learns():
    cfg = tiny_config("flamingo_mpt_3b", "fc")
    cfg["backbone"].update(freeze_vision=False, train_embeddings=False)
    policy = build_policy(cfg)
    bb = policy.backbone
    assert all(p.requires_grad for p in bb.vision_encoder.parameters())
    assert not bb.lang_encoder.get_input_embeddings().weight.requires_grad
    for b in bb.lang_encoder.gated_cross_attn_layers:
        b.attn_gate.data.fill_(0.5)
    policy.train()(fake_batch())["loss"].backward()
    assert bb.vision_encoder.conv1.weight.grad is not None and bb.vision_encoder.conv1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="policy.fusion_mode must be one of"):
        build_policy(tiny_config("tiny", "fc", fusion_mode="two_way"))


def test_cut_prompts_are_reported_once(caplog):
    cfg = tiny_config("tiny", "fc")
    cfg["backbone"]["max_text_len"] = 8
    policy = build_policy(cfg)
    long = "no reward last trial. episode objects: drawer, slider, led. explored objects: drawer"
    with caplog.at_level("WARNING", logger="metamanip.models.backbone"):
        ids, _ = policy.backbone.tokenize([long, "x"])
        policy.backbone.tokenize([long])
    assert ids.shape[1] == 8
    assert sum("max_text_len=8" in r.message for r in caplog.records) == 1
