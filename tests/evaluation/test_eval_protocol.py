from collections import Counter

import pytest

from metamanip.evaluation.protocol import (balanced_positions, combi_episodes, episode_seed, explore_episodes,
                                           mark_videos)

COMBOS = [("drawer", "led", "slider"), ("red_block", "led", "slider"), ("slider", "lightbulb", "led")]


def test_positions_are_balanced_over_the_first_num_trials_minus_one_places():
    specs = explore_episodes(COMBOS, num_resets=30, num_trials=4, seed=0)
    assert len(specs) == 90
    for combo in COMBOS:
        group = [s for s in specs if s.group == "/".join(combo)]
        assert Counter(s.meta_position for s in group) == {0: 10, 1: 10, 2: 10}
        for s in group:  # a permutation of the combination, listed order shuffled
            assert sorted(s.combination) == sorted(combo)
        assert len({s.combination for s in group}) > 1


def test_positions_never_exceed_the_objects_or_the_trials():
    four = [("drawer", "led", "slider", "red_block")]
    assert {s.meta_position for s in explore_episodes(four, 15, num_trials=5, seed=1)} == {0, 1, 2, 3}
    assert {s.meta_position for s in explore_episodes(four, 15, num_trials=3, seed=1)} == {0, 1}
    assert {s.meta_position for s in explore_episodes(four, 4, num_trials=1, seed=1)} == {0}
    assert balanced_positions(7, 3) == [0, 1, 2, 0, 1, 2, 0]


def test_seeds_depend_on_the_episode_identity_only():
    a = explore_episodes(COMBOS, 5, 4, seed=3)
    b = explore_episodes(COMBOS[1:], 5, 4, seed=3)
    assert [s for s in a if s.group != "drawer/led/slider"] == b
    assert len({s.seed for s in a}) == len(a)
    assert episode_seed(3, "explore", "x", 0) != episode_seed(4, "explore", "x", 0)
    assert explore_episodes(COMBOS, 5, 4, seed=3) == a


def test_reset_options_carry_the_spec():
    s = explore_episodes(COMBOS[:1], 3, 4, seed=0)[1]
    opts = s.reset_options()
    assert opts["combination"] == s.combination and opts["meta_position"] == 1
    c = combi_episodes([("move_slider_right", "turn_off_led")], 2, seed=0)
    assert c[0].reset_options() == {"pair": ("move_slider_right", "turn_off_led")}
    assert c[0].group == "move_slider_right+turn_off_led" and c[0].seed != c[1].seed


def test_videos_mark_the_first_k_episodes():
    specs = mark_videos(explore_episodes(COMBOS, 3, 4, seed=0), 2)
    assert [s.video for s in specs[:3]] == [True, True, False] and not any(s.video for s in specs[3:])


@pytest.mark.parametrize("bad", [dict(num_resets=0), dict(num_trials=0)])
def test_bad_counts_are_refused(bad):
    kw = dict(num_resets=3, num_trials=4, seed=0) | bad
    with pytest.raises(ValueError, match="must be >= 1"):
        explore_episodes(COMBOS, **kw)


def test_a_pair_needs_two_subtasks():
    with pytest.raises(ValueError, match="two subtasks"):
        combi_episodes([("open_drawer",)], 2, seed=0)
