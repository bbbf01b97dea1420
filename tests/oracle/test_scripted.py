"""Scripted decider: optimal play in Explore and Combi-Explore, and the thesis' reply template."""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from decision_world import DecisionWorld  # noqa: E402

from metamanip.oracle.agent import OracleAgent  # noqa: E402
from metamanip.oracle.llm import parse_instruction  # noqa: E402
from metamanip.oracle.scripted import ScriptedDecider  # noqa: E402
from metamanip.settings.trial_limits import combi_unrewarded_trials  # noqa: E402

EXPLORE_FEASIBLE = {"drawer": "open_drawer", "lightbulb": "turn_off_lightbulb", "slider": "move_slider_left",
                    "red_block": "lift_red_block_table"}
COMBI_FEASIBLE = {"slider": "move_slider_right", "drawer": "close_drawer", "led": "turn_on_led",
                  "lightbulb": "turn_off_lightbulb"}


@pytest.mark.parametrize("position", [0, 1, 2, 3])
def test_explore_finds_reward_in_listed_order_and_repeats_it(position):
    objects = ["drawer", "lightbulb", "slider", "red_block"]
    world = DecisionWorld("explore", objects, EXPLORE_FEASIBLE, EXPLORE_FEASIBLE[objects[position]], num_trials=5)
    rewards, decisions = world.play(ScriptedDecider())
    assert rewards == [0.0] * position + [1.0] * (5 - position)
    assert [d.task for d in decisions[:position]] == [EXPLORE_FEASIBLE[o] for o in objects[:position]]


def test_reply_follows_the_thesis_template():
    world = DecisionWorld("explore", ["drawer", "slider"], EXPLORE_FEASIBLE, "move_slider_left")
    _, decisions = world.play(ScriptedDecider())
    for d in decisions:
        assert d.text.startswith("Explanation: ") and " Notes: " in d.text
        assert parse_instruction(d.text) == d.instruction == world.task_instruction(d.task)
    assert "first trial" in decisions[0].text
    assert "was rewarding" in decisions[-1].text


@pytest.mark.parametrize("positions", list(itertools.combinations(range(4), 2)))
def test_combi_finds_every_pair_as_fast_as_the_trial_limits_assume(positions):
    objects = ["slider", "drawer", "led", "lightbulb"]
    meta = tuple(COMBI_FEASIBLE[objects[p]] for p in positions)
    world = DecisionWorld("combi_explore", objects, COMBI_FEASIBLE, meta)
    rewards, decisions = world.play(ScriptedDecider())
    k = combi_unrewarded_trials(positions)
    assert rewards == [0.0] * k + [1.0] * (4 - k), decisions
    assert k <= 2  # always before the last trial: the thesis filter passes


class _CountingPrimitive:
    def __init__(self, task, steps=3):
        self.task, self.left, self.done = task, steps, False

    def reset(self, obs):
        self.left, self.done = 3, False

    def act(self, obs):
        self.left -= 1
        self.done = self.left <= 0
        return np.array([0.1, 0, 0, 0, 0, 0, -1.0], np.float32)


def test_agent_decides_at_decision_points_and_holds_when_done():
    world = DecisionWorld("explore", ["drawer", "slider"], EXPLORE_FEASIBLE, "move_slider_left")
    made = []
    agent = OracleAgent(env=world, primitive_factory=lambda t: made.append(t) or _CountingPrimitive(t))
    info = world._info([], [])
    agent.reset_episode(info)
    a = agent.act({}, info)
    assert agent.new_decision and made == ["open_drawer"] and a[0] == pytest.approx(0.1)
    info["decision_point"] = False
    for _ in range(2):
        agent.act({}, info)
    held = agent.act({}, info)  # primitive done: hold still, keep the gripper closed
    assert not agent.new_decision and np.allclose(held[:6], 0) and held[6] == -1.0
    info2 = world._info([{"trial": 0, "reward": 0.0, "steps": 9, "completed_tasks": ["open_drawer"]}], [])
    agent.act({}, info2)
    assert made == ["open_drawer", "move_slider_left"]


def test_agent_without_env_is_a_clear_error():
    with pytest.raises(RuntimeError, match="bind"):
        OracleAgent().reset_episode({})
