"""Object pools and train / held-out splits: the thesis' counts, no leak of held-out pairs, clear errors."""
from __future__ import annotations

import itertools

import pytest

from metamanip.settings.objects import LogicalState, feasible_task
from metamanip.settings.splits import combi_pairs, explore_pool


@pytest.mark.parametrize("num_objs, train, heldout, tasks, per_episode", [
    (3, 1, 1, 6, 3), (5, 7, 3, 9, 3), (7, 21, 10, 14, 4)])
def test_explore_counts_as_the_thesis_ran(num_objs, train, heldout, tasks, per_episode):
    pool = explore_pool(num_objs)
    assert (len(pool.train), len(pool.heldout), len(pool.tracked_tasks)) == (train, heldout, tasks)
    assert pool.objects_per_episode == per_episode
    if num_objs > 3:
        assert not set(pool.train) & set(pool.heldout)
        assert all("slider" in c and "led" in c for c in pool.heldout)
        assert not any("slider" in c and "led" in c for c in pool.train)


def test_seven_objects_never_use_three_blocks_and_block_holdout_option():
    pool = explore_pool(7)
    blocks = {"red_block", "pink_block", "blue_block"}
    assert not any(blocks <= set(c) for c in pool.train + pool.heldout)
    fixed = explore_pool(7, block_holdout=True)
    assert (len(fixed.train), len(fixed.heldout)) == (16, 15)
    assert not any("red_block" in c and "blue_block" in c for c in fixed.train)
    with pytest.raises(ValueError, match="only to num_objs=7"):
        explore_pool(5, block_holdout=True)


@pytest.mark.parametrize("bad", [0, 4, 6, 8, "7"])
def test_num_objs_outside_allowed_values(bad):
    with pytest.raises(ValueError, match=r"env.num_objs must be one of \[3, 5, 7\]"):
        explore_pool(bad)


def test_combination_checks():
    pool = explore_pool(5)
    assert pool.check_combination(("drawer", "red_block", "lightbulb"), "train") == ("red_block", "drawer", "lightbulb")
    with pytest.raises(ValueError, match="heldout split"):
        pool.check_combination(("led", "slider", "drawer"), "train")
    with pytest.raises(ValueError, match="3 distinct objects"):
        pool.check_combination(("led", "led", "drawer"), "train")
    with pytest.raises(ValueError, match="3 distinct objects"):
        pool.check_combination(("blue_block", "led", "drawer"), "train")


def test_combi_pairs_twenty_four_hold_out_four_in_either_order():
    pairs = combi_pairs()
    assert (len(pairs.train), len(pairs.heldout)) == (20, 4)
    train_sets = {frozenset(p) for p in pairs.train}
    for p in pairs.heldout:
        assert frozenset(p) not in train_sets
        for order in itertools.permutations(p):
            with pytest.raises(ValueError, match="either order"):
                pairs.check_pair(order, "train")
            assert pairs.check_pair(order, "heldout") == p
    assert frozenset({"turn_on_led", "turn_off_lightbulb"}) not in train_sets  # the pair the original leaked
    with pytest.raises(ValueError, match="two different objects"):
        pairs.check_pair(("open_drawer", "close_drawer"), "train")


def test_one_feasible_task_per_object():
    s = LogicalState(slider="left", drawer="open", led=1, lightbulb=0, red_block="slider_left",
                     pink_block="table", blue_block="slider_right")
    assert feasible_task("slider", s) == "move_slider_right"
    assert feasible_task("drawer", s) == "close_drawer"
    assert feasible_task("led", s) == "turn_off_led"
    assert feasible_task("lightbulb", s) == "turn_on_lightbulb"
    assert feasible_task("red_block", s) is None  # behind the door
    assert feasible_task("blue_block", s) == "lift_blue_block_slider"
    assert feasible_task("pink_block", s) == "lift_pink_block_table"
    with pytest.raises(ValueError, match="cannot share slider_left"):
        LogicalState(red_block="slider_left", blue_block="slider_left")
