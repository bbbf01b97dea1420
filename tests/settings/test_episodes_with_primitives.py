"""Whole episodes on the real playtable, every task done by the scripted motion primitives.

No cameras (states only) except a few renders of trial starts; each episode is a few hundred steps.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from metamanip.envs.playtable import PlayTableEnv
from metamanip.oracle.primitives import make_primitive
from metamanip.settings.combi import CombiExploreEnv
from metamanip.settings.explore import ExploreEnv
from metamanip.settings.paraphrases import SENTENCES

pytestmark = pytest.mark.slow

IDLE = np.array([0, 0, 0, 0, 0, 0, 1.0], dtype=np.float32)


@pytest.fixture(scope="module")
def sim():
    env = PlayTableEnv(cameras={})
    yield env
    env.close()


def do_tasks(env, obs, tasks, record=None):
    """Run the primitives for `tasks` one after the other, then idle until the trial ends."""
    queue = list(tasks)
    prim = None
    while True:
        if prim is None and queue:
            prim = make_primitive(queue.pop(0))
            prim.reset(obs)
        action = prim.act(obs) if prim is not None and not prim.done else IDLE
        obs, reward, term, _, info = env.step(action)
        if record is not None:
            record.append(info)
        if info["trial_done"]:
            return obs, reward, term, info
        if prim is not None and prim.done:
            prim = None


def pattern(sentence):
    return re.compile(".+?".join(re.escape(p) for p in re.split(r"\{\w+\}", sentence)), re.IGNORECASE)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_explore_episode_rewards_restores_and_feedback(sim, split):
    env = ExploreEnv(sim, num_objs=3, num_trials=4, trial_steps=120, reset_robot_pos=True, split=split)
    obs, info = env.reset(seed=7, options={"combination": ("drawer", "lightbulb", "slider"), "meta_position": 1})
    meta = info["meta_task"]
    assert meta == env.feasible_tasks["lightbulb"]
    feedback = [info["feedback"]]
    assert feedback[0]["train_feedback"] == "first trial. episode objects: drawer, lightbulb, slider"
    starts = [(obs, env.sim.get_info()["base_pos"], env.sim.render())]
    plan = [env.feasible_tasks["drawer"], meta, None, meta]
    rewards, ends = [], []
    for t, task in enumerate(plan):
        obs, reward, term, info = do_tasks(env, obs, [task] if task else [])
        rewards.append(reward)
        ends.append(info["trial_results"][-1]["ended_by"])
        feedback.append(info["feedback"])
        assert term == (t == len(plan) - 1)
        if not term:
            starts.append((obs, env.sim.get_info()["base_pos"], env.sim.render()))
    # the right event ended each trial, with the right reward
    assert rewards == [0.0, 1.0, 0.0, 1.0]
    assert ends == ["task", "reward", "step_limit", "reward"]
    assert [r["completed_tasks"] for r in info["trial_results"]] == [[plan[0]], [meta], [], [meta]]
    assert info["trial_results"][2]["steps"] == 120
    # the same initial state in every trial: robot, scene, base pose (noised once) and pixels
    first_obs, first_base, first_img = starts[0]
    assert not np.allclose(first_base, [-0.34, -0.46, 0.24])
    for o, base, img in starts[1:]:
        np.testing.assert_array_equal(o["robot_obs"], first_obs["robot_obs"])
        np.testing.assert_array_equal(o["scene_obs"], first_obs["scene_obs"])
        np.testing.assert_array_equal(base, first_base)
        np.testing.assert_array_equal(img, first_img)
    # train_feedback in the original's formats
    phrase = env.task_instruction(meta)
    assert [f["train_feedback"] for f in feedback[1:4]] == [
        "no reward last trial. episode objects: drawer, lightbulb, slider. explored objects: drawer",
        f"{phrase} was rewarding last trial; ",
        "no reward last trial. episode objects: drawer, lightbulb, slider. explored objects: drawer, lightbulb. "
        f"{phrase} was rewarding in previous trials",
    ]
    assert f"Trial 2 completed. Completed instructions: {phrase} was rewarding." in feedback[2]["lm_feedback"]["content"]
    # alt_feedback: held-out templates only under the held-out split, training ones only under train
    own = [pattern(s) for v in SENTENCES[split].values() for s in v]
    other = [pattern(s) for v in SENTENCES["heldout" if split == "train" else "train"].values() for s in v]
    for f in feedback:
        assert any(p.search(f["alt_feedback"]) for p in own)
        assert not any(p.search(f["alt_feedback"]) for p in other), f["alt_feedback"]


def test_explore_block_found_after_two_unrewarded_trials(sim):
    env = ExploreEnv(sim, num_objs=5, num_trials=4, trial_steps=150)
    obs, info = env.reset(seed=3, options={"combination": ("drawer", "lightbulb", "red_block"),
                                           "meta_task": "lift_red_block_table", "meta_position": 2})
    assert info["episode_objects"][2] == "red_block"
    f = env.feasible_tasks
    rewards = []
    for obj in ("drawer", "lightbulb", "red_block", "red_block"):
        obs, reward, term, info = do_tasks(env, obs, [f[obj]])
        rewards.append(reward)
        if obj == "lightbulb":
            assert info["feedback"]["train_feedback"] == (
                "no reward last trial. episode objects: drawer, lightbulb, red block. explored objects: drawer, lightbulb")
    assert rewards == [0.0, 0.0, 1.0, 1.0] and term
    assert info["feedback"]["train_feedback"] == "lift the red block from the table was rewarding last trial; "


def test_combi_episode_mid_trial_and_trial_end(sim):
    env = CombiExploreEnv(sim, num_trials=3, trial_steps=200)
    state = {"slider": "right", "drawer": "open", "led": 0, "lightbulb": 1}
    obs, info = env.reset(seed=5, options={"pair": ("turn_on_led", "close_drawer"), "initial_state": state,
                                           "meta_position": (0, 3)})
    objs = info["episode_objects"]
    listed = ", ".join(objs)
    assert objs[0] in ("led", "drawer") and objs[3] in ("led", "drawer")
    assert info["feedback"]["train_feedback"] == f"first trial. episode objects: {listed}."
    f = env.feasible_tasks
    record = []
    # trial 1: one rewarding subtask (the LED) and one other (the slider)
    obs, reward, term, info = do_tasks(env, obs, ["turn_on_led", f["slider"]], record)
    mids = [i for i in record if i["decision_point"] and not i["trial_done"]]
    assert len(mids) == 1 and mids[0]["completed_tasks"] == ["turn_on_led"]
    assert mids[0]["feedback"]["train_feedback"] == f"You completed a task. Episode objects: {listed}"
    assert "Completed instruction: turn on the led." in mids[0]["feedback"]["lm_feedback"]["content"]
    assert reward == 0.0 and info["completed_tasks"] == ["turn_on_led", "move_slider_left"]
    assert info["feedback"]["train_feedback"] == (
        "Trial 1 completed. Completed rewarding tasks last trial: turn on the led. Completed unrewarding tasks last "
        f"trial: move the door to the left. Episode objects: {listed}")
    # trial 2: both rewarding subtasks -> reward on the step of the second
    obs, reward, term, info = do_tasks(env, obs, ["close_drawer", "turn_on_led"])
    assert reward == 1.0 and info["trial_results"][-1]["ended_by"] == "reward"
    assert info["feedback"]["train_feedback"] == (
        "Trial 2 completed. Completed rewarding tasks last trial: push the handle to close the drawer; turn on the "
        f"led. Completed unrewarding tasks last trial: None . Episode objects: {listed}")
    # trial 3: only one rewarding subtask -> no reward
    obs, reward, term, info = do_tasks(env, obs, ["close_drawer"])
    assert reward == 0.0 and term and info["trial_results"][-1]["ended_by"] == "step_limit"
    assert [r["reward"] for r in info["trial_results"]] == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("overrides", [["env=explore", "env.num_objs=7"], ["env=combi_explore"],
                                       ["env=single_object", "env.object=drawer"]])
def test_configs_instantiate_with_the_real_simulator(overrides):
    from hydra.utils import instantiate

    from metamanip.settings.describe import compose_env

    cfg = compose_env([*overrides, "env.sim.cameras.static.width=32", "env.sim.cameras.static.height=32",
                       "env.sim.cameras.gripper.width=16", "env.sim.cameras.gripper.height=16"])
    env = instantiate(cfg.env)
    try:
        obs, info = env.reset(seed=0)
        assert obs["rgb_static"].shape == (32, 32, 3) and obs["scene_obs"].shape == (24,)
        for key in ("feedback", "trial", "trial_done", "decision_point", "completed_tasks", "explored_objects",
                    "episode_objects", "meta_task", "trial_results"):
            assert key in info
        obs, reward, term, trunc, info = env.step(IDLE)
        assert info["action_rel"].shape == (7,) and not term and info["trial_step"] == 1
        assert env.sim.get_info()["base_pos"].shape == (3,)
    finally:
        env.close()
