"""Combi-Explore's trial rules and feedback, driven through a stand-in simulator (see settings_standins.py)."""
from __future__ import annotations

import numpy as np
import pytest
from settings_standins import BUTTON, DRAWER, NOOP, SLIDER, SWITCH, act

from metamanip.settings.combi import CombiExploreEnv
from metamanip.settings.objects import TASK_OBJECT

CMD = {"drawer": DRAWER, "slider": SLIDER, "led": BUTTON, "lightbulb": SWITCH}
STATE = {"slider": "left", "drawer": "closed", "led": 1, "lightbulb": 0}
# feasible in STATE: move_slider_right, open_drawer, turn_off_led, turn_on_lightbulb


def make(fake_world, **kw):
    kw.setdefault("trial_steps", 6)
    return CombiExploreEnv(fake_world(), **kw)


def cmd_for(task):
    return CMD[TASK_OBJECT[task]]


def test_reward_only_when_both_subtasks_in_one_trial_and_feedback_formats(fake_world):
    env = make(fake_world)
    _, info = env.reset(seed=2, options={"pair": ("turn_on_lightbulb", "open_drawer"), "initial_state": STATE,
                                         "meta_position": (0, 2)})
    objs = info["episode_objects"]
    listed = ", ".join(objs)
    assert info["meta_task"] == ("open_drawer", "turn_on_lightbulb") and info["meta_position"] == (0, 2)
    assert {objs[0], objs[2]} == {"drawer", "lightbulb"}
    assert info["feedback"]["train_feedback"] == f"first trial. episode objects: {listed}."
    assert sorted(env.tracked_tasks) == sorted(["move_slider_right", "open_drawer", "turn_off_led", "turn_on_lightbulb"])

    # trial 1: one rewarding subtask + one other -> mid-trial feedback, then unrewarded end
    _, r, _, _, info = env.step(act(DRAWER))
    assert r == 0.0 and not info["trial_done"] and info["decision_point"]
    assert info["feedback"]["train_feedback"] == f"You completed a task. Episode objects: {listed}"
    assert "Completed instruction: pull the handle to open the drawer." in info["feedback"]["lm_feedback"]["content"]
    assert "The drawer is currently open" in info["feedback"]["lm_feedback"]["content"]  # status after the task
    _, r, _, _, info = env.step(act(NOOP))
    assert not info["decision_point"]
    _, r, _, _, info = env.step(act(BUTTON))
    assert r == 0.0 and info["trial_done"] and info["completed_tasks"] == ["open_drawer", "turn_off_led"]
    assert info["feedback"]["train_feedback"] == (
        "Trial 1 completed. Completed rewarding tasks last trial: pull the handle to open the drawer. "
        f"Completed unrewarding tasks last trial: turn off the led. Episode objects: {listed}")

    # trial 2: nothing -> timeout, both lists empty ("None " as the original)
    for _ in range(6):
        _, r, _, _, info = env.step(act(NOOP))
    assert info["trial_done"] and r == 0.0
    assert info["feedback"]["train_feedback"] == (
        "Trial 2 completed. Completed rewarding tasks last trial: None . Completed unrewarding tasks last trial: None . "
        f"Episode objects: {listed}")

    # trial 3: both rewarding subtasks -> reward 1 on the step of the second
    _, r, _, _, info = env.step(act(SWITCH))
    assert r == 0.0 and not info["trial_done"]
    _, r, _, _, info = env.step(act(DRAWER))
    assert r == 1.0 and info["trial_done"] and info["trial_results"][-1]["ended_by"] == "reward"
    assert info["feedback"]["train_feedback"] == (
        "Trial 3 completed. Completed rewarding tasks last trial: turn on the lightbulb; pull the handle to open the "
        f"drawer. Completed unrewarding tasks last trial: None . Episode objects: {listed}")

    # trial 4: two non-rewarding subtasks end the trial at once
    env.step(act(SLIDER))
    _, r, term, _, info = env.step(act(BUTTON))
    assert term and r == 0.0
    assert [t["reward"] for t in info["trial_results"]] == [0.0, 0.0, 1.0, 0.0]


def test_repeating_an_object_does_not_count_twice(fake_world):
    env = make(fake_world, trial_steps=4)
    env.reset(seed=0, options={"pair": ("open_drawer", "turn_off_led"), "initial_state": STATE})
    env.step(act(BUTTON))  # led off
    _, _, _, _, info = env.step(act(BUTTON))  # led on again: turn_on_led is not a tracked subtask
    assert info["completed_tasks"] == ["turn_off_led"] and not info["trial_done"]


def test_heldout_pairs_refused_in_training_in_either_order(fake_world):
    env = make(fake_world)
    for pair in (("move_slider_right", "turn_off_led"), ("turn_off_led", "move_slider_right"),
                 ("turn_off_lightbulb", "turn_on_led")):
        with pytest.raises(ValueError, match="heldout split, in either order"):
            env.reset(options={"pair": pair})
    held = make(fake_world, split="heldout")
    for seed in range(40):
        _, info = held.reset(seed=seed)
        assert frozenset(info["meta_task"]) in {frozenset(p) for p in held.pairs()}
    train = make(fake_world)
    heldout = {frozenset(p) for p in train.pairs("heldout")}
    for seed in range(200):
        _, info = train.reset(seed=seed)
        assert frozenset(info["meta_task"]) not in heldout


def test_meta_position_places_the_pair(fake_world):
    env = make(fake_world)
    for pos in [(0, 1), (1, 3), (2, 3)]:
        _, info = env.reset(seed=1, options={"pair": ("open_drawer", "turn_off_led"), "meta_position": pos})
        objs = info["episode_objects"]
        assert {objs[pos[0]], objs[pos[1]]} == {"drawer", "led"} and info["meta_position"] == pos
    with pytest.raises(ValueError, match="two different indices"):
        env.reset(options={"pair": ("open_drawer", "turn_off_led"), "meta_position": (1, 1)})


def test_object_order_is_shuffled_across_episodes(fake_world):
    env = make(fake_world)
    orders = {tuple(env.reset(seed=s)[1]["episode_objects"]) for s in range(30)}
    assert len(orders) > 5


def test_same_initial_state_every_trial(fake_world):
    env = make(fake_world, trial_steps=2, reset_robot_pos=True)
    env.reset(seed=9)
    term = False
    while not term:
        _, _, term, _, _ = env.step(act(DRAWER))
    first = env.sim.resets[0]
    assert len(env.sim.resets) == 4
    for rec in env.sim.resets[1:]:
        np.testing.assert_array_equal(rec["scene_obs"], first["scene_obs"])
        np.testing.assert_array_equal(rec["base_pos"], first["base_pos"])
