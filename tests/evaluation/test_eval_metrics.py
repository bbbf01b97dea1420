import pytest

from metamanip.evaluation.metrics import TrialRow, metrics_from_summary, summarize


def rows(group, episode, rewards, steps=10):
    return [TrialRow("explore", 5, group, episode, t + 1, "0", "open_drawer", r, steps, "open_drawer" if r else "")
            for t, r in enumerate(rewards)]


def test_thesis_figures_and_success_by_trial():
    data = rows("a", 0, [0, 1, 1, 1]) + rows("a", 1, [0, 0, 0, 0], steps=20) + rows("b", 0, [1, 1, 1, 1])
    s = summarize(data, num_trials=4, groups=["a", "b", "c"])
    assert s["total_reward"] == 7 and s["episodes"] == 3
    assert s["average_reward"] == pytest.approx(7 / 3)
    assert s["ratio_reward_found"] == pytest.approx(2 / 3)
    assert s["episode_length"] == pytest.approx((40 + 80 + 40) / 3)
    assert s["success_by_trial"] == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert list(s["groups"]) == ["a", "b", "c"]
    assert s["groups"]["a"]["average_reward"] == 1.5 and s["groups"]["a"]["ratio_reward_found"] == 0.5
    assert s["groups"]["c"]["episodes"] == 0


def test_metrics_keys_are_flat_and_one_based():
    s = summarize(rows("a", 0, [0, 1, 1, 1]), num_trials=4)
    m = metrics_from_summary(s)
    assert m["success_trial_1"] == 0.0 and m["success_trial_2"] == 1.0 and "success_trial_5" not in m
    assert m["average_reward"] == 3.0 and m["ratio_reward_found"] == 1.0


def test_malformed_row_names_the_problem():
    rec = dict(setting="explore", num_objs="x", group="a", episode="0", trial="1", meta_position="0",
               meta_task="t", reward="1", steps="3", completed_tasks="")
    with pytest.raises(ValueError, match="malformed trials.csv row"):
        TrialRow.from_strings(rec)
