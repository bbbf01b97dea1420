"""Action chunks (decoder.fwd_pred_next_n): masked chunk loss, k = 1 unchanged, chunk execution at inference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import fake_batch, tiny_config

from metamanip.models.checkpoint import load_policy, policy_state_dict, save_policy
from metamanip.models.chunking import ChunkExecutor, combine, ensemble_weights, with_chunk_execution
from metamanip.models.decoders.fc import FCDecoder
from metamanip.models.decoders.gpt import GPTDecoder
from metamanip.models.decoders.heads import CHUNK_EXECUTIONS
from metamanip.models.decoders.lstm import LSTMDecoder
from metamanip.models.policy import build_policy

CONTINUOUS = {"lstm": lambda **kw: LSTMDecoder(16, 4, num_layers=2, **kw),
              "fc": lambda **kw: FCDecoder(16, 4, **kw),
              "gpt": lambda **kw: GPTDecoder(16, 4, n_layer=1, n_head=2, **kw)}


def chunk_labels(b: int, t: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    arm = torch.rand(b, t, k, 6, generator=g) * 2 - 1
    grip = torch.randint(0, 2, (b, t, k, 1), generator=g).float() * 2 - 1
    return torch.cat([arm, grip], dim=-1)


def trial_end_mask(t: int, k: int, remaining: list[int]) -> torch.Tensor:
    """(B, T, k) mask of windows whose trial ends `remaining[b]` steps after the window's last step."""
    steps = torch.arange(t)[:, None] + torch.arange(k)[None, :]
    return torch.stack([steps < t + r for r in remaining])


# ---------------------------------------------------------------------------------------------- loss
@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_the_chunk_loss_ignores_steps_past_the_trial_end_and_reads_those_inside(name):
    torch.manual_seed(0)
    dec = CONTINUOUS[name](fwd_pred_next_n=3).eval()
    feats = torch.randn(2, 4, 16)
    labels = chunk_labels(2, 4, 3)
    mask = trial_end_mask(4, 3, [0, 1])  # window 0 ends its trial, window 1 has one more step
    assert not mask[0, 3, 1] and mask[0, 3, 0] and mask[1, 3, 1] and not mask[1, 3, 2]
    base = dec.loss(feats, labels, chunk_mask=mask)["loss"]
    outside = labels.clone()
    outside[~mask] = torch.randn(int((~mask).sum()), 7) * 5  # anything past the trial end
    assert torch.equal(dec.loss(feats, outside, chunk_mask=mask)["loss"], base)
    for b, t, j in ((0, 3, 0), (1, 3, 1), (0, 0, 2)):  # inside the trial, also a later chunk step
        inside = labels.clone()
        inside[b, t, j, :6] = -inside[b, t, j, :6]
        assert not torch.allclose(dec.loss(feats, inside, chunk_mask=mask)["loss"], base)
    # the masked mean is the mean over the valid (t, j) of the per-step loss
    arm, logit = dec.forward_chunk(feats)
    arm_el = F.huber_loss(arm, labels[..., :6], reduction="none").mean(-1)[mask]
    grip_el = F.binary_cross_entropy_with_logits(logit[..., 0], (labels[..., 6] > 0).float(), reduction="none")[mask]
    torch.testing.assert_close(base, arm_el.mean() + 0.01 * grip_el.mean())


def test_chunk_labels_are_checked_by_name():
    dec = FCDecoder(16, 4, fwd_pred_next_n=3)
    feats = torch.randn(2, 4, 16)
    with pytest.raises(ValueError, match="fwd_pred_next_n=3 .*action_chunk"):
        dec.loss(feats, torch.zeros(2, 4, 7))
    with pytest.raises(ValueError, match=r"\(B, T, k, 7\)"):
        dec.loss(feats, torch.zeros(2, 4, 2, 7))
    with pytest.raises(ValueError, match="chunk_mask"):
        dec.loss(feats, torch.zeros(2, 4, 3, 7), chunk_mask=torch.ones(2, 4, 2, dtype=torch.bool))
    for bad, match in (({"fwd_pred_next_n": 0}, "fwd_pred_next_n"), ({"fwd_pred_next_n": 2.5}, "fwd_pred_next_n"),
                       ({"execution": "closed"}, "execution"), ({"ensemble_weight": -1.0}, "ensemble_weight")):
        with pytest.raises(ValueError, match=match):
            FCDecoder(16, 4, **bad)


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_k1_is_todays_decoder_exactly(name):
    """k = 1 builds the same parameters from the same seed, gives the same loss (RoboFlamingo's formula)
    and the same actions, with or without the chunk keys in the config."""
    torch.manual_seed(3)
    old = CONTINUOUS[name]().eval()
    torch.manual_seed(3)
    new = CONTINUOUS[name](fwd_pred_next_n=1, execution="ensemble", ensemble_weight=0.5).eval()
    assert {k: v.shape for k, v in old.state_dict().items()} == {k: v.shape for k, v in new.state_dict().items()}
    assert all(torch.equal(v, new.state_dict()[k]) for k, v in old.state_dict().items())
    feats = torch.randn(2, 4, 16)
    actions = fake_batch(b=2, t=4)["actions"]
    loss = new.loss(feats, actions)
    assert torch.equal(loss["loss"], old.loss(feats, actions)["loss"])
    arm, logit = old(feats)
    expected = F.huber_loss(arm, actions[..., :6]) + 0.01 * F.binary_cross_entropy_with_logits(
        logit, (actions[..., 6:] > 0).float())
    assert torch.equal(loss["loss"], expected)
    assert torch.equal(new.predict(feats), old.predict(feats))
    assert new.actions.mlp[-2].out_features == 6 and new.gripper.mlp[-1].out_features == 1


def test_a_k1_policy_has_no_chunker_and_matches_a_policy_built_from_an_old_config():
    cfg_new = tiny_config("tiny", "fc", obs="state")
    cfg_old = tiny_config("tiny", "fc", obs="state")
    for key in ("fwd_pred_next_n", "execution", "ensemble_weight"):
        cfg_old["decoder"].pop(key)
    assert cfg_new["decoder"]["fwd_pred_next_n"] == 1  # the shipped default
    torch.manual_seed(0)
    new = build_policy(cfg_new)
    torch.manual_seed(0)
    old = build_policy(cfg_old)
    assert new.chunker is None and old.chunker is None
    sd_new, sd_old = policy_state_dict(new), policy_state_dict(old)
    assert sd_new.keys() == sd_old.keys() and all(torch.equal(sd_new[k], sd_old[k]) for k in sd_old)


# ------------------------------------------------------------------------------------ execution
def test_temporal_ensembling_weights_the_overlapping_predictions_as_documented():
    m, k = 0.5, 3
    ex = ChunkExecutor(k, "ensemble", m)
    ex.resize(1)
    g = torch.Generator().manual_seed(0)
    chunks = [torch.rand(k, 7, generator=g) * 2 - 1 for _ in range(4)]
    played = []
    for c in chunks:
        assert ex.needs_model(0)
        ex.push(0, c)
        played.append(ex.act(0))
    w = torch.tensor([math.exp(-m * i) for i in range(3)])
    torch.testing.assert_close(ensemble_weights(3, m), w / w.sum())
    # step 2: chunk 0's third, chunk 1's second and chunk 2's first prediction, oldest first
    preds = torch.stack([chunks[0][2], chunks[1][1], chunks[2][0]])
    mean = (w[:, None] * preds).sum(0) / w.sum()
    torch.testing.assert_close(played[2][:6], mean[:6])
    assert played[2][6] == (1.0 if mean[6] > 0 else -1.0)
    # step 3: chunk 0 has expired
    preds = torch.stack([chunks[1][2], chunks[2][1], chunks[3][0]])
    torch.testing.assert_close(played[3][:6], ((w[:, None] * preds).sum(0) / w.sum())[:6])
    # step 0 has only its own prediction; m = 0 is the plain mean
    torch.testing.assert_close(played[0][:6], chunks[0][0, :6])
    torch.testing.assert_close(combine(preds, 0.0)[:6], preds.mean(0)[:6])


def test_the_gripper_votes_by_weighted_score():
    preds = torch.zeros(3, 7)
    preds[:, 6] = torch.tensor([-0.9, 0.5, 0.5])  # oldest votes open strongly
    assert combine(preds, 0.0)[6] == 1.0  # mean 0.033 > 0
    assert combine(preds, 5.0)[6] == -1.0  # a large m trusts the oldest


def state_policy(decoder: str, k: int, execution: str, window: int = 3, seed: int = 0):
    cfg = tiny_config("tiny", decoder, obs="state", window_size=window)
    cfg["decoder"].update(fwd_pred_next_n=k, execution=execution)
    torch.manual_seed(seed)
    policy = build_policy(cfg)
    policy.set_state_stats(np.linspace(-1, 1, 39), np.linspace(0.5, 2, 39))
    return policy.eval()


def state_batch(b: int, t: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"robot_obs": torch.randn(b, t, 15, generator=g) * 0.3 + 0.5,
            "scene_obs": torch.randn(b, t, 24, generator=g) * 0.1,
            "actions": fake_batch(b=b, t=t, seed=seed)["actions"],
            "text": ["open the drawer", "push the button"][:b]}


def obs_at(batch: dict, step: int) -> dict:
    return {"robot_obs": batch["robot_obs"][:, step].numpy(), "scene_obs": batch["scene_obs"][:, step].numpy()}


def training_chunks(policy, batch) -> torch.Tensor:
    """What the training forward predicts: (B, T, k, 7), the gripper as +-1."""
    with torch.no_grad():
        arm, logit = policy.decoder.forward_chunk(policy.window_features(batch))
    return torch.cat([arm, torch.where(logit > 0, 1.0, -1.0)], dim=-1)


@pytest.mark.parametrize("decoder", ["fc", "lstm", "gpt"])
def test_open_loop_runs_the_model_once_per_k_steps_and_plays_the_chunk_in_order(decoder):
    k, steps = 3, 7
    policy = state_policy(decoder, k, "open_loop", window=steps)
    batch = state_batch(2, steps)
    calls, encoded = [], []
    predict_chunk, step_features = policy.decoder.predict_chunk, policy.step_features
    policy.decoder.predict_chunk = lambda w, generator=None: (calls.append(w.shape[1]), predict_chunk(w, generator))[1]
    policy.step_features = lambda obs, text, **kw: (encoded.append(len(text)), step_features(obs, text, **kw))[1]
    policy.reset()
    played = np.stack([policy.select_action(obs_at(batch, s), batch["text"]) for s in range(steps)], axis=1)
    # decision steps 0, 3, 6: one batched pass for both envs over the history (what fc keeps: decision steps)
    assert calls == ([1, 2, 3] if decoder == "fc" else [1, 4, 7])
    # the per-step fc needs no history: only decision steps are encoded; temporal decoders encode every step
    assert len(encoded) == (3 if decoder == "fc" else steps)
    expected = training_chunks(policy, batch)
    for s in range(steps):
        d = s - s % k
        np.testing.assert_allclose(played[:, s], expected[:, d, s - d].numpy(), atol=1e-5)


@pytest.mark.parametrize("decoder", ["fc", "lstm"])
def test_select_action_with_chunks_equals_the_training_forward(decoder):
    """`first` plays each step's own chunk head; `ensemble` combines the training chunks of the last k steps."""
    k, steps = 3, 5
    batch = state_batch(2, steps, seed=1)
    first = state_policy(decoder, k, "first", window=steps)
    expected = training_chunks(first, batch)
    first.reset()
    for s in range(steps):
        np.testing.assert_allclose(first.select_action(obs_at(batch, s), batch["text"]), expected[:, s, 0].numpy(),
                                   atol=1e-5)
    ens = state_policy(decoder, k, "ensemble", window=steps)
    with torch.no_grad():
        arm, logit = ens.decoder.forward_chunk(ens.window_features(batch))
    raw = torch.cat([arm, torch.tanh(logit / 2)], dim=-1)
    ens.reset()
    for s in range(steps):
        got = ens.select_action(obs_at(batch, s), batch["text"])
        for b in range(2):
            preds = torch.stack([raw[b, t, s - t] for t in range(max(0, s - k + 1), s + 1)])
            np.testing.assert_allclose(got[b], combine(preds, ens.decoder.ensemble_weight).numpy(), atol=1e-5)


def test_reset_drops_the_chunks_of_that_environment_only():
    policy = state_policy("fc", 4, "open_loop")
    batch = state_batch(2, 3)
    calls = []
    predict_chunk = policy.decoder.predict_chunk
    policy.decoder.predict_chunk = lambda w, generator=None: (calls.append(w.shape[0]), predict_chunk(w, generator))[1]
    policy.reset()
    policy.select_action(obs_at(batch, 0), batch["text"])
    policy.reset(env_ids=[1])  # env 1 starts a new trial: its chunk must not carry over
    policy.select_action(obs_at(batch, 1), batch["text"])
    assert calls == [2, 1]


def test_rl_action_params_are_the_first_action_of_the_chunk():
    policy = state_policy("lstm", 3, "open_loop")
    batch = state_batch(2, 3)
    with torch.no_grad():
        feats = policy.window_features(batch)
        arm, grip = policy.action_params(feats, torch.tensor([3, 2]))
        c_arm, c_grip = policy.decoder.forward_chunk(feats)
    torch.testing.assert_close(arm, torch.stack([c_arm[0, 2, 0], c_arm[1, 1, 0]]))
    torch.testing.assert_close(grip, torch.stack([c_grip[0, 2, 0, 0], c_grip[1, 1, 0, 0]]))


def test_the_policy_trains_on_chunk_batches():
    policy = state_policy("gpt", 3, "open_loop").train()
    batch = state_batch(2, 3)
    batch["action_chunk"] = chunk_labels(2, 3, 3)
    batch["chunk_mask"] = trial_end_mask(3, 3, [0, 2])
    out = policy(batch)
    out["loss"].backward()
    assert policy.decoder.actions.mlp[-2].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="action_chunk"):
        policy({k: v for k, v in batch.items() if k not in ("action_chunk", "chunk_mask")})


# ----------------------------------------------------------------------------------- checkpoints
def test_a_chunked_checkpoint_saves_loads_and_plays_with_its_or_another_execution(tmp_path):
    from metamanip.evaluation.agents import PolicyEpisodeAgent, PolicyFactory

    policy = state_policy("lstm", 3, "open_loop")
    path = save_policy(policy, tmp_path / "p.pt")
    payload = torch.load(path, weights_only=False)
    assert payload["config"]["decoder"]["fwd_pred_next_n"] == 3
    assert payload["config"]["decoder"]["execution"] == "open_loop"
    loaded = load_policy(path).eval()
    assert loaded.chunker.k == 3 and loaded.chunker.execution == "open_loop"
    batch = state_batch(2, 3)
    policy.reset(), loaded.reset()
    for s in range(3):
        np.testing.assert_array_equal(loaded.select_action(obs_at(batch, s), batch["text"]),
                                      policy.select_action(obs_at(batch, s), batch["text"]))
    # evaluation may play the same weights another way
    ens = load_policy(with_chunk_execution(payload, {"execution": "ensemble", "ensemble_weight": 0.2}))
    assert ens.chunker.execution == "ensemble" and ens.chunker.ensemble_weight == 0.2
    assert ens.config["decoder"]["execution"] == "ensemble"
    with pytest.raises(ValueError, match="only execution and ensemble_weight"):
        with_chunk_execution(payload, {"fwd_pred_next_n": 2})
    agent = PolicyFactory(str(path), decoder_overrides={"execution": "first"})(env=None)
    assert isinstance(agent, PolicyEpisodeAgent) and agent.policy.chunker.execution == "first"
    # a worker agent: one env, chunks dropped at a trial end
    agent = PolicyFactory(str(path))(env=None)
    obs = {"robot_obs": batch["robot_obs"][0, 0].numpy(), "scene_obs": batch["scene_obs"][0, 0].numpy()}
    info = {"feedback": {"train_feedback": "open the drawer"}}
    agent.reset_episode(info)
    a0 = agent.act(obs, info)
    assert a0.shape == (7,) and len(agent.policy.chunker._chunks[0]) == 1
    agent.act(obs, {**info, "trial_done": True})
    assert agent.policy.chunker.model_calls == 2  # the trial end forced a new chunk


def test_the_config_rules_know_the_chunk_options():
    from omegaconf import OmegaConf

    from metamanip.cli import checks

    assert checks.CHUNK_EXECUTIONS == CHUNK_EXECUTIONS
    cfg = OmegaConf.create({"decoder": {"_target_": "metamanip.models.decoders.fc.FCDecoder", "fwd_pred_next_n": 0,
                                        "execution": "closed"}, "eval": {"chunk_execution": "nope"}})
    problems = [r.problem(cfg) for r in checks.RULES]
    text = " ".join(p for p in problems if p)
    assert "decoder.fwd_pred_next_n=0" in text and "decoder.execution='closed'" in text
    assert "eval.chunk_execution='nope'" in text
    discrete = OmegaConf.create({"decoder": {"_target_": "metamanip.models.decoders.discrete.DiscreteDecoder",
                                             "fwd_pred_next_n": 4}})
    assert "fwd_pred_next_n" in checks._decoder_problem(discrete)


# ------------------------------------------------------------------------------------- diffusion
def test_diffusion_chunks_mask_the_trial_end_and_k1_is_unchanged():
    from metamanip.models.decoders.diffusion import DiffusionDecoder

    torch.manual_seed(0)
    dec = DiffusionDecoder(16, 4, hidden_size=16, num_layers=1, num_train_timesteps=20, num_inference_steps=4,
                           fwd_pred_next_n=3)
    feats, labels, mask = torch.randn(2, 4, 16), chunk_labels(2, 4, 3), trial_end_mask(4, 3, [0, 1])

    def loss(lab):
        torch.manual_seed(5)  # the same diffusion timesteps and noise
        return dec.loss(feats, lab, chunk_mask=mask)["loss"]

    base = loss(labels)
    outside = labels.clone()
    outside[~mask] = torch.randn(int((~mask).sum()), 7)
    assert torch.equal(loss(outside), base)
    inside = labels.clone()
    inside[0, 3, 0] = -inside[0, 3, 0]
    assert not torch.equal(loss(inside), base)
    g = torch.Generator().manual_seed(1)
    chunk = dec.predict_chunk(feats, generator=g)
    assert chunk.shape == (2, 3, 7) and chunk.abs().max() <= 1
    g = torch.Generator().manual_seed(1)
    first = dec.predict(feats, generator=g)
    torch.testing.assert_close(first[:, :6], chunk[:, 0, :6])
    assert torch.equal(first[:, 6], torch.where(chunk[:, 0, 6] > 0, 1.0, -1.0))
    # k = 1: same parameters from the same seed, same loss and samples
    torch.manual_seed(2)
    old = DiffusionDecoder(16, 4, hidden_size=16, num_layers=1, num_train_timesteps=20, num_inference_steps=4)
    torch.manual_seed(2)
    new = DiffusionDecoder(16, 4, hidden_size=16, num_layers=1, num_train_timesteps=20, num_inference_steps=4,
                           fwd_pred_next_n=1)
    assert all(torch.equal(v, new.state_dict()[k]) for k, v in old.state_dict().items())
    actions = fake_batch(b=2, t=4)["actions"]
    torch.manual_seed(9)
    a = old.loss(feats, actions)["loss"]
    torch.manual_seed(9)
    assert torch.equal(new.loss(feats, actions)["loss"], a)
    assert torch.equal(new.predict(feats, torch.Generator().manual_seed(3)),
                       old.predict(feats, torch.Generator().manual_seed(3)))


def test_a_diffusion_policy_plays_its_chunks_open_loop():
    policy = state_policy("diffusion", 2, "open_loop")
    policy.seed(0)
    batch = state_batch(2, 4)
    policy.reset()
    played = [policy.select_action(obs_at(batch, s), batch["text"]) for s in range(4)]
    assert policy.chunker.model_calls == 4  # 2 envs x decision steps 0 and 2
    assert all(a.shape == (2, 7) and set(np.unique(a[:, 6])) <= {-1.0, 1.0} for a in played)


# ------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_a_chunked_policy_collects_trains_and_evaluates_through_the_pipeline(tmp_path):
    """decoder.fwd_pred_next_n=3 through metamanip-pipeline (states-only Explore-3, a few steps), then the
    same checkpoint evaluated with temporal ensembling in the env workers."""
    import json
    import os

    from metamanip.cli import pipeline

    small = ["collect.episodes=12", "trial_limits.zero=1", "trial_limits.one=1", "trainer.max_steps=20",
             "trainer.save_every_steps=20", "eval.num_resets=1", "eval.num_workers=1", "decoder.fwd_pred_next_n=3"]
    job = tmp_path / "open_loop"
    pipeline.run(pipeline.compose("pipeline", ["experiment=meta_learn_state_3", *small], job))
    payload = torch.load(job / "train" / "checkpoints" / "last.pt", weights_only=False)
    assert payload["policy"]["config"]["decoder"]["fwd_pred_next_n"] == 3
    first = json.loads((job / "eval" / "summary.json").read_text())
    ens = tmp_path / "ensemble"
    os.makedirs(ens / "collect")
    os.symlink(job / "collect" / "dataset", ens / "collect" / "dataset")
    os.symlink(job / "train", ens / "train")
    pipeline.run(pipeline.compose("pipeline", ["experiment=meta_learn_state_3", *small, "eval.chunk_execution=ensemble",
                                               "eval.policy_in_workers=true", "pipeline.skip=[collect,train]"], ens))
    second = json.loads((ens / "eval" / "summary.json").read_text())
    assert first["episodes"] == second["episodes"] >= 1
    assert len(second["success_by_trial"]) == 3
