"""The optimal explorer's yardstick figures and the trial-limit presets' validation."""
from __future__ import annotations

import pytest

from metamanip.settings.latch import TaskLatch
from metamanip.settings.optimal import balanced_positions, optimal_explorer
from metamanip.settings.trial_limits import TrialLimits, combi_unrewarded_trials, meta_positions


def same(a, b):
    return (a["average_reward"] == pytest.approx(b["average_reward"])
            and a["ratio_reward_found"] == pytest.approx(b["ratio_reward_found"])
            and a["success_by_trial"] == pytest.approx(b["success_by_trial"]))


def test_explore_uniform_is_listed_order():
    r = optimal_explorer("explore", 5, 4)
    assert r["average_reward"] == pytest.approx((4 + 3 + 2) / 3)
    assert r["success_by_trial"] == pytest.approx([1 / 3, 2 / 3, 1, 1])
    assert r["ratio_reward_found"] == pytest.approx(1.0)
    assert same(r, optimal_explorer("explore", 5, 4, strategy="listed"))


def test_thesis_balanced_evaluation_positions():
    assert balanced_positions(4, 5) == [0.25] * 4
    assert balanced_positions(3, 4) == pytest.approx([1 / 3] * 3)
    r = optimal_explorer("explore", 7, 5, balanced_positions(4, 5))
    assert r["average_reward"] == pytest.approx(3.5)  # num_trials - idx, averaged over idx 0..3
    assert r["success_by_trial"] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_skewed_distribution_beats_listed_order():
    probs = [0.1, 0.3, 0.6]
    best = optimal_explorer("explore", 3, 4, probs)
    listed = optimal_explorer("explore", 3, 4, probs, strategy="listed")
    assert best["average_reward"] == pytest.approx(0.6 * 4 + 0.3 * 3 + 0.1 * 2)
    assert listed["average_reward"] == pytest.approx(0.1 * 4 + 0.3 * 3 + 0.6 * 2)
    assert best["average_reward"] > listed["average_reward"]


def test_too_few_trials_cannot_always_find_the_reward():
    r = optimal_explorer("explore", 7, 2)
    assert r["ratio_reward_found"] == pytest.approx(0.5)
    assert r["success_by_trial"] == pytest.approx([0.25, 0.5])


def test_combi_uniform_pairs():
    r = optimal_explorer("combi_explore", None, 4)
    # failures before the pair is found: 0 (1 pair), 1 (3 pairs), 2 (2 pairs)
    assert r["success_by_trial"] == pytest.approx([1 / 6, 4 / 6, 1, 1])
    assert r["average_reward"] == pytest.approx(4 - 7 / 6)
    assert same(r, optimal_explorer("combi_explore", None, 4, strategy="listed"))
    one = optimal_explorer("combi_explore", None, 4, {(2, 3): 1.0})
    assert one["success_by_trial"] == [1.0] * 4  # a known pair is done from the first trial


def test_optimal_explorer_bad_input():
    with pytest.raises(ValueError, match="one of"):
        optimal_explorer("explore", 4, 4)
    with pytest.raises(ValueError, match="sum to 1"):
        optimal_explorer("explore", 5, 4, [0.5, 0.1, 0.1])
    with pytest.raises(ValueError, match="needs 3 values"):
        optimal_explorer("explore", 5, 4, [0.5, 0.5])
    with pytest.raises(ValueError, match="setting must be"):
        optimal_explorer("explore7", 5, 4)


def test_trial_limits():
    t = TrialLimits(10, 30, 60)
    assert t.total == 100 and t.position_probs() == pytest.approx([0.1, 0.3, 0.6])
    assert t.position_probs("explore", 4) == pytest.approx([0.1, 0.3, 0.6, 0.0])
    combi = TrialLimits(100, 100, 100).position_probs("combi_explore", 4)
    assert combi[(0, 1)] == pytest.approx(1 / 3) and combi[(0, 3)] == pytest.approx(1 / 6)
    # the yardstick for collected data: a listed-order explorer on the thesis' 7-object limits
    r = optimal_explorer("explore", 7, 5, TrialLimits(5, 15, 30).position_probs("explore", 4), strategy="listed")
    assert r["average_reward"] == pytest.approx((5 * 5 + 15 * 4 + 30 * 3) / 50)
    r = optimal_explorer("combi_explore", None, 4, combi, strategy="listed")
    assert r["success_by_trial"] == pytest.approx([1 / 3, 2 / 3, 1, 1])
    t.check_feasible("explore", 4, 3)
    with pytest.raises(ValueError, match="trial_limits.two=60 cannot be met with num_trials=3"):
        t.check_feasible("explore", 3, 3)
    TrialLimits(5, 0, 0).check_feasible("single_object", 2, 1)
    with pytest.raises(ValueError, match="with 1 objects per episode"):
        TrialLimits(5, 5, 0).check_feasible("single_object", 3, 1)
    with pytest.raises(ValueError, match="all zero"):
        TrialLimits(0, 0, 0)
    with pytest.raises(ValueError, match="non-negative integer"):
        TrialLimits(-1, 2, 3)


def test_meta_positions_realise_unrewarded_trials():
    assert meta_positions("explore", 2, 3) == [2]
    assert meta_positions("explore", 3, 3) == []
    for k in (0, 1, 2):
        for pos in meta_positions("combi_explore", k):
            assert combi_unrewarded_trials(pos) == k
            curve = optimal_explorer("combi_explore", None, 4, {pos: 1.0}, strategy="listed")["success_by_trial"]
            assert curve.index(1.0) == k
    assert sorted(len(meta_positions("combi_explore", k)) for k in (0, 1, 2)) == [1, 2, 3]


def test_latch_events_and_toggle_rule():
    latch = TaskLatch(["open_drawer", "close_drawer", "lift_red_block_table"])
    assert latch.update({"open_drawer"}) == ["open_drawer"]
    assert latch.update({"open_drawer"}) == []
    assert latch.update(set()) == ["close_drawer"]  # opened, then pushed back: closed it
    assert latch.update({"lift_red_block_table"}) == ["lift_red_block_table"]
    assert latch.update(set()) == []  # a put-down block stays lifted
    assert latch.completed == ["open_drawer", "close_drawer", "lift_red_block_table"]


def test_random_object_strategy_is_one_in_k_per_trial_and_ignores_feedback():
    from metamanip.settings.optimal import balanced_positions, optimal_explorer

    r = optimal_explorer("explore", 3, 3, balanced_positions(3, 3), strategy="random")
    assert r["success_by_trial"] == pytest.approx([1 / 3] * 3)
    assert r["average_reward"] == pytest.approx(1.0)
    assert r["ratio_reward_found"] == pytest.approx(1 - (2 / 3) ** 3)
    combi = optimal_explorer("combi_explore", None, 2, strategy="random")  # one of 6 pairs
    assert combi["success_by_trial"] == pytest.approx([1 / 6, 1 / 6])
    opt = optimal_explorer("explore", 3, 3, balanced_positions(3, 3))
    assert opt["average_reward"] > r["average_reward"]
