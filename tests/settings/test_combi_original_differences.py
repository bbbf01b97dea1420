"""The four Combi-Explore cases where our feedback differs from the original Meta-CALVIN code on the same
history (settings/README.md, items 12-15), pinned: several subtasks completed in one step, an unrewarding
subtask on the step-limit step, three subtasks in one step, and the pair positions of each trial-limit bucket."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from settings_standins import BUTTON, DRAWER, NOOP, SLIDER, SWITCH, FakeSim

from metamanip.settings.combi import CombiExploreEnv
from metamanip.settings.objects import task_instruction
from metamanip.settings.trial_limits import combi_unrewarded_trials, meta_positions

STATE = {"slider": "left", "drawer": "closed", "led": 1, "lightbulb": 0}
# feasible in STATE: move_slider_right, open_drawer, turn_off_led, turn_on_lightbulb
PAIR = ("open_drawer", "turn_on_lightbulb")


class MultiSim(FakeSim):
    """FakeSim whose action may carry several commands (one per action dim), so several subtasks complete
    on one step."""

    def step(self, action):
        out = None
        for a in action[:3]:
            if round(float(a) * 10):
                out = super().step(np.array([a, 0, 0, 0, 0, 0, 0], np.float32))
                self.steps -= 1
        self.steps += 1
        return out if out is not None else super().step(np.zeros(7, np.float32))


def acts(*cmds: int) -> np.ndarray:
    a = np.zeros(7, np.float32)
    a[:len(cmds)] = np.array(cmds, np.float32) / 10.0
    return a


@pytest.fixture
def env(fake_world):
    e = CombiExploreEnv(MultiSim(), trial_steps=6)
    _, info = e.reset(seed=1, options={"pair": PAIR, "initial_state": STATE, "meta_position": (0, 2)})
    e.listed = ", ".join(info["episode_objects"])
    return e


def _named(tasks) -> str:
    return "; ".join(task_instruction(t) for t in tasks)


def _end(info) -> str:
    assert info["trial_done"], info
    return info["feedback"]["train_feedback"]


def test_two_subtasks_in_one_step_are_each_named_by_their_own_instruction(env):
    """Item 12: the original named the first subtask's instruction for both."""
    _, r, _, _, info = env.step(acts(DRAWER, BUTTON))  # open_drawer (rewarding) + turn_off_led, same step
    assert r == 0.0 and info["completed_tasks"] == ["open_drawer", "turn_off_led"]
    assert not info["feedback"]["train_feedback"].startswith("You completed a task")  # no mid-trial message
    assert _end(info) == ("Trial 1 completed. Completed rewarding tasks last trial: pull the handle to open the "
                          "drawer. Completed unrewarding tasks last trial: turn off the led. "
                          f"Episode objects: {env.listed}")
    _, r, _, _, info = env.step(acts(SWITCH, DRAWER))  # both rewarding subtasks in one step: rewarded
    assert r == 1.0 and info["trial_results"][-1]["ended_by"] == "reward"
    assert set(info["completed_tasks"]) == set(PAIR)
    assert f"Completed rewarding tasks last trial: {_named(info['completed_tasks'])}. Completed unrewarding " \
           "tasks last trial: None ." in _end(info)


def test_an_unrewarding_subtask_on_the_step_limit_step_is_reported(env):
    """Item 13: the original did not record it ("None ")."""
    for _ in range(5):
        _, _, _, _, info = env.step(acts(NOOP))
    assert not info["trial_done"]
    _, r, _, _, info = env.step(acts(BUTTON))  # step 6 of 6 completes turn_off_led
    assert r == 0.0 and info["trial_results"][-1]["ended_by"] == "step_limit"
    assert info["trial_results"][-1]["completed_tasks"] == ["turn_off_led"]
    assert "Completed rewarding tasks last trial: None . Completed unrewarding tasks last trial: turn off the " \
           "led. " in _end(info)


def test_three_subtasks_in_one_step_end_the_trial(env):
    """Item 14: the original's `== 2` test let a trial with three completions go on."""
    _, r, _, _, info = env.step(acts(DRAWER, BUTTON, SLIDER))
    assert r == 0.0 and info["trial_results"][-1]["ended_by"] == "task"
    done = info["completed_tasks"]
    assert sorted(done) == ["move_slider_right", "open_drawer", "turn_off_led"]
    unrewarding = [t for t in done if t != "open_drawer"]
    assert _end(info) == ("Trial 1 completed. Completed rewarding tasks last trial: pull the handle to open the "
                          f"drawer. Completed unrewarding tasks last trial: {_named(unrewarding)}. "
                          f"Episode objects: {env.listed}")
    assert "move the door to the right" in _end(info)
    assert info["trial"] == 1  # the next action belongs to trial 2


def test_each_trial_limit_bucket_gets_the_pair_positions_a_listed_order_explorer_needs():
    """Item 15: bucket k holds the pair positions after which the listed-order oracle is rewarded only after
    k unrewarded trials; together the buckets cover every pair of the 4 positions once."""
    assert meta_positions("combi_explore", 0) == [(0, 1)]
    assert meta_positions("combi_explore", 1) == [(0, 2), (1, 2), (2, 3)]
    assert meta_positions("combi_explore", 2) == [(0, 3), (1, 3)]
    assert meta_positions("combi_explore", 3) == []
    buckets = [p for k in range(3) for p in meta_positions("combi_explore", k)]
    assert sorted(buckets) == list(itertools.combinations(range(4), 2))
    for i, j in itertools.combinations(range(4), 2):  # the explorer: try (0, 1); keep a rewarding one
        tried, failures, pair = [0, 1], 0, {0, 1}
        while pair != {i, j}:
            failures += 1
            kept = [o for o in pair if o in (i, j)]
            untried = [o for o in range(4) if o not in tried]
            pair = {kept[0], untried[0]} if kept else set(untried[:2])
            tried += [o for o in pair if o not in tried]
        assert combi_unrewarded_trials((i, j)) == failures, (i, j)
