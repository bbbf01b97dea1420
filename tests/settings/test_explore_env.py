"""Explore's trial/episode state machine, driven through a stand-in simulator (see conftest.py)."""
from __future__ import annotations

import numpy as np
import pytest

from metamanip.settings.explore import ExploreEnv
from metamanip.settings.paraphrases import SENTENCES
from metamanip.settings.single_object import SingleObjectEnv
from settings_standins import BUTTON, DRAWER, LIFT_RED, NOOP, SLIDER, SWITCH, act

CMD = {"drawer": DRAWER, "slider": SLIDER, "led": BUTTON, "lightbulb": SWITCH, "red_block": LIFT_RED}


def make(fake_world, **kw):
    kw.setdefault("num_objs", 5)
    kw.setdefault("trial_steps", 5)
    kw.setdefault("num_trials", 4)
    return ExploreEnv(fake_world(), **kw)


def run_trial(env, cmds):
    out = None
    for c in cmds:
        out = env.step(act(c))
        if out[4]["trial_done"]:
            break
    return out


def test_trial_ends_on_rewarding_task_with_reward_and_on_other_task_without(fake_world):
    env = make(fake_world)
    obs, info = env.reset(seed=3, options={"combination": ("red_block", "drawer", "lightbulb"), "meta_position": 1})
    assert info["episode_objects"] == ["red_block", "drawer", "lightbulb"]
    assert info["meta_task"] in ("open_drawer", "close_drawer") and info["meta_position"] == 1
    assert info["trial"] == 0 and info["decision_point"] and not info["trial_done"]
    # trial 1: lift the red block (not rewarding) -> ends at once, reward 0
    obs, r, term, trunc, info = env.step(act(NOOP))
    assert (r, info["trial_done"]) == (0.0, False)
    obs, r, term, trunc, info = env.step(act(LIFT_RED))
    assert info["trial_done"] and r == 0.0 and not term
    assert info["completed_tasks"] == ["lift_red_block_table"] and info["trial"] == 1
    assert info["trial_results"] == [{"trial": 0, "reward": 0.0, "steps": 2, "completed_tasks": ["lift_red_block_table"],
                                      "explored_objects": ["red_block"], "ended_by": "task"}]
    assert info["feedback"]["train_feedback"] == (
        "no reward last trial. episode objects: red block, drawer, lightbulb. explored objects: red block")
    # trial 2: the drawer (rewarding) -> reward 1
    obs, r, term, trunc, info = env.step(act(DRAWER))
    assert info["trial_done"] and r == 1.0 and info["trial_results"][-1]["ended_by"] == "reward"
    assert info["feedback"]["train_feedback"] == f"{env.task_instruction(env.meta_task)} was rewarding last trial; "
    # trial 3: timeout (5 steps of nothing)
    for k in range(5):
        obs, r, term, trunc, info = env.step(act(NOOP))
        assert info["trial_done"] == (k == 4)
    assert r == 0.0 and info["trial_results"][-1]["ended_by"] == "step_limit"
    assert info["trial_results"][-1]["steps"] == 5
    fb = info["feedback"]["train_feedback"]
    meta_phrase = env.task_instruction(env.meta_task)
    assert fb == ("no reward last trial. episode objects: red block, drawer, lightbulb. explored objects: red block, drawer. "
                  f"{meta_phrase} was rewarding in previous trials")
    # trial 4 (last): reward again, episode terminates
    obs, r, term, trunc, info = env.step(act(DRAWER))
    assert r == 1.0 and term and info["episode_done"]
    assert [t["reward"] for t in info["trial_results"]] == [0.0, 1.0, 0.0, 1.0]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(act(NOOP))


def test_first_trial_feedback_and_lm_status(fake_world):
    env = make(fake_world)
    _, info = env.reset(seed=0, options={"combination": ("slider", "drawer", "lightbulb"), "meta_position": 0,
                                        "initial_state": {"slider": "left", "drawer": "open", "lightbulb": 1}})
    fb = info["feedback"]
    assert fb["train_feedback"] == "first trial. episode objects: slider, drawer, lightbulb"
    assert info["meta_task"] == "move_slider_right"
    assert fb["lm_feedback"]["role"] == "user"
    assert ("The current status of the environment: The slider door is currently at the left; The drawer is currently "
            "open; The lightbulb is currently on.") in fb["lm_feedback"]["content"]
    assert "slider" in fb["alt_feedback"] and "drawer" in fb["alt_feedback"]
    desc = env.environment_description()
    assert [m["role"] for m in desc] == ["user", "assistant"]
    assert '"move the door to the right"' in desc[0]["content"]


def test_initial_state_identical_in_every_trial_even_with_noise(fake_world):
    env = make(fake_world, reset_robot_pos=True, num_objs=7, trial_steps=2, num_trials=5)
    obs0, info = env.reset(seed=11)
    first = env.sim.resets[-1]
    assert first["base_pos"] is not None
    nominal = np.array([-0.34, -0.46, 0.29])
    off = first["base_pos"] - nominal
    assert -0.15 - 1e-9 <= off[0] < 0.15 and -0.02 - 1e-9 <= off[1] < 0.02 and -0.05 - 1e-9 <= off[2] < 0.05
    starts = [obs0]
    term = False
    while not term:
        obs, r, term, _, info = env.step(act(DRAWER if env.trial % 2 else NOOP))
        if info["trial_done"] and not term:
            starts.append(obs)
    assert len(env.sim.resets) == 5
    for rec in env.sim.resets[1:]:
        np.testing.assert_array_equal(rec["scene_obs"], first["scene_obs"])
        np.testing.assert_array_equal(rec["base_pos"], first["base_pos"])
    for o in starts[1:]:
        np.testing.assert_array_equal(o["scene_obs"], starts[0]["scene_obs"])
        np.testing.assert_array_equal(o["rgb_static"], starts[0]["rgb_static"])


def test_resample_noise_each_trial_reproduces_the_original(fake_world):
    env = make(fake_world, reset_robot_pos=True, resample_noise_each_trial=True, trial_steps=1, num_trials=4)
    env.reset(seed=5)
    for _ in range(4):
        env.step(act(NOOP))
    bases = {tuple(r["base_pos"]) for r in env.sim.resets}
    assert len(bases) > 1


def test_seeded_reset_is_deterministic(fake_world):
    a, b = make(fake_world), make(fake_world)
    _, ia = a.reset(seed=42)
    _, ib = b.reset(seed=42)
    assert ia["feedback"] == ib["feedback"] and ia["meta_task"] == ib["meta_task"]
    np.testing.assert_array_equal(a.sim.resets[0]["scene_obs"], b.sim.resets[0]["scene_obs"])


def test_without_feedback_other_tasks_do_not_end_the_trial(fake_world):
    env = make(fake_world, provide_feedback=False, trial_steps=10)
    _, info = env.reset(seed=1, options={"combination": ("red_block", "drawer", "lightbulb"), "meta_task": "turn_on_lightbulb"})
    assert info["feedback"]["train_feedback"] == ""
    _, r, _, _, info = env.step(act(LIFT_RED))
    assert not info["trial_done"] and info["completed_tasks"] == ["lift_red_block_table"]
    _, r, _, _, info = env.step(act(SWITCH))
    assert info["trial_done"] and r == 1.0
    assert info["trial_results"][0]["completed_tasks"] == ["lift_red_block_table", "turn_on_lightbulb"]


def test_meta_task_and_position_for_collection(fake_world):
    env = make(fake_world, num_objs=7)
    for k in range(4):
        for task in ("lift_blue_block_slider", "turn_off_led", "lift_pink_block_table"):
            _, info = env.reset(seed=k, options={"meta_task": task, "meta_position": k})
            assert info["meta_task"] == task and info["meta_position"] == k
            assert env.feasible_tasks[info["episode_objects"][k]] == task
            assert all(t is not None for t in env.feasible_tasks.values())
            assert tuple(sorted(info["episode_objects"])) in {tuple(sorted(c)) for c in env.combinations()}


def test_explored_objects_are_objects_not_substrings(fake_world):
    """Lifting a block out of the slider does not mark the slider explored (the original's substring bug)."""
    env = make(fake_world, num_objs=7, trial_steps=3)
    state = {"slider": "left", "red_block": "table", "blue_block": "slider_right", "pink_block": "slider_left"}
    _, info = env.reset(seed=0, options={"combination": ("blue_block", "slider", "drawer", "lightbulb"),
                                         "meta_position": 3, "initial_state": state})
    _, r, _, _, info = env.step(act(7))  # lift the blue block from the slider
    assert info["completed_tasks"] == ["lift_blue_block_slider"] and r == 0.0
    assert info["explored_objects"] == ["blue_block"]
    assert info["feedback"]["train_feedback"].endswith("explored objects: blue block")


@pytest.mark.parametrize("bad, match", [
    (dict(num_objs=4), r"num_objs must be one of \[3, 5, 7\]"),
    (dict(num_trials=0), "num_trials must be a positive integer"),
    (dict(trial_steps=None, rollout_steps=None), "give env.trial_steps or env.rollout_steps"),
    (dict(split="test"), r"split must be one of \('train', 'heldout'\)"),
    (dict(name="combi_explore"), "use env=combi_explore"),
    (dict(num_trials=2, trial_limits={"zero": 1, "one": 1, "two": 0}), "trial_limits.one=1 cannot be met with num_trials=2"),
])
def test_bad_config_is_refused_with_the_allowed_values(fake_world, bad, match):
    with pytest.raises(ValueError, match=match):
        make(fake_world, **bad)


def test_heldout_combination_refused_in_training(fake_world):
    env = make(fake_world, num_objs=5)
    with pytest.raises(ValueError, match="belongs to the heldout split.*allowed"):
        env.reset(options={"combination": ("slider", "led", "drawer")})
    held = make(fake_world, num_objs=5, split="heldout")
    _, info = held.reset(seed=0, options={"combination": ("slider", "led", "drawer")})
    assert sorted(info["episode_objects"]) == ["drawer", "led", "slider"]
    with pytest.raises(ValueError, match="unknown options"):
        env.reset(options={"pair": ("a", "b")})


def test_rollout_steps_derive_trial_steps(fake_world):
    env = ExploreEnv(fake_world(), num_objs=7, rollout_steps=1200)
    assert (env.num_trials, env.trial_steps) == (5, 240)
    env = ExploreEnv(fake_world(), num_objs=5, rollout_steps=1200)
    assert (env.num_trials, env.trial_steps) == (4, 300)


def _all_texts(split):
    out = []
    for slot, sentences in SENTENCES[split].items():
        out += sentences
    return out


def test_heldout_templates_only_under_heldout_split(fake_world):
    import re

    def pattern(sentence):
        parts = re.split(r"\{\w+\}", sentence)
        return re.compile(".+?".join(re.escape(p) for p in parts), re.IGNORECASE)

    held_patterns = [pattern(s) for s in _all_texts("heldout")]
    train_patterns = [pattern(s) for s in _all_texts("train")]
    for split, foreign in (("train", held_patterns), ("heldout", train_patterns)):
        env = make(fake_world, split=split, trial_steps=1, num_trials=3)
        seen = []
        for seed in range(30):
            _, info = env.reset(seed=seed)
            seen.append(info["feedback"]["alt_feedback"])
            for cmd in (NOOP, CMD[info["episode_objects"][info["meta_position"]]], NOOP):
                _, _, term, _, info = env.step(act(cmd))
                seen.append(info["feedback"]["alt_feedback"])
        own = train_patterns if split == "train" else held_patterns
        for text in seen:
            assert not any(p.search(text) for p in foreign), (split, text)
        assert all(any(p.search(t) for p in own) for t in seen)


def test_single_object_env(fake_world):
    env = SingleObjectEnv(fake_world(), object="led", trial_steps=4)
    assert env.num_trials == 2
    _, info = env.reset(seed=0)
    assert info["episode_objects"] == ["led"] and info["meta_task"] in ("turn_on_led", "turn_off_led")
    assert info["feedback"]["train_feedback"] == "first trial. episode objects: led"
    _, r, _, _, info = env.step(act(BUTTON))
    assert r == 1.0 and info["trial_done"]
    assert info["feedback"]["train_feedback"] == f"{env.task_instruction(env.meta_task)} was rewarding last trial; "
    with pytest.raises(ValueError, match="env.object must be one of"):
        SingleObjectEnv(fake_world(), object="table", trial_steps=4)


def test_a_tracked_task_on_an_object_outside_the_episode_ends_the_trial(fake_world):
    env = make(fake_world, num_objs=5)
    _, info = env.reset(seed=4, options={"combination": ("red_block", "drawer", "lightbulb"), "meta_position": 0})
    _, r, _, _, info = env.step(act(BUTTON))  # the LED is tracked with 5 objects but not listed this episode
    assert info["trial_done"] and r == 0.0 and info["completed_tasks"][0].endswith("_led")
    assert info["explored_objects"] == []
    assert info["feedback"]["train_feedback"] == (
        "no reward last trial. episode objects: red block, drawer, lightbulb. explored objects: none")
    env3 = make(fake_world, num_objs=3)
    env3.reset(seed=4)
    _, r, _, _, info = env3.step(act(BUTTON))  # not tracked with 3 objects: the trial goes on
    assert not info["trial_done"] and info["completed_tasks"] == []
