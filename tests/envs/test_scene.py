"""scene_obs construction: CALVIN layout, block spots, noise, and refusals of impossible layouts."""
import numpy as np
import pytest

from metamanip.envs import layout as L
from metamanip.envs.scene import (BLOCK_INDEX, block_location, make_scene_obs, random_scene_obs, slot_covered)


def test_layout_of_a_logical_state():
    s = make_scene_obs(drawer_open=True, slider_left=True, led_on=True, lightbulb_on=True,
                       blocks={"red": "slider_right", "blue": "table", "pink": "slider_left"})
    assert s.shape == (24,)
    assert s[0] == pytest.approx(0.28) and s[1] == pytest.approx(0.22)
    assert s[3] > L.SWITCH_TRIGGER and s[4] == 1.0 and s[5] == 1.0
    assert block_location(s, "red") == "slider_right"
    assert block_location(s, "blue") == "table"
    assert block_location(s, "pink") == "slider_left"
    assert slot_covered(s, "slider_left") and not slot_covered(s, "slider_right")
    off = make_scene_obs(False, False, False, False)
    assert off[:6].tolist() == [0, 0, 0, 0, 0, 0]
    assert [block_location(off, c) for c in L.BLOCKS] == ["table", "slider_left", "slider_right"]


def test_noise_needs_rng_and_moves_only_the_table_block():
    with pytest.raises(ValueError, match="rng"):
        make_scene_obs(False, False, False, False, block_noise=True)
    xs = [make_scene_obs(False, False, False, True, rng=np.random.default_rng(i), block_noise=True) for i in range(20)]
    red_x = np.array([s[BLOCK_INDEX["red"]] for s in xs])
    assert red_x.min() >= L.TABLE_SPOTS[0][0] and red_x.max() <= L.TABLE_SPOTS[0][0] + L.TABLE_NOISE_X[1]
    assert red_x.std() > 0.01
    blue_x = {s[BLOCK_INDEX["blue"]] for s in xs}
    assert blue_x == {L.SLOT_LEFT_X}
    yaws = np.array([s[BLOCK_INDEX["pink"] + 5] for s in xs])
    assert yaws.min() >= L.BLOCK_YAW[0] and yaws.max() <= L.BLOCK_YAW[1]
    switch = np.array([s[3] for s in xs])
    assert np.all(switch > L.SWITCH_TRIGGER + 0.015)


def test_same_rng_same_state():
    a = random_scene_obs(np.random.default_rng(3), block_noise=True)
    b = random_scene_obs(np.random.default_rng(3), block_noise=True)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("blocks, message", [
    ({"red": "table", "green": "table", "pink": "slider_left"}, "unknown block.*valid blocks"),
    ({"red": "table", "blue": "slider_left"}, "missing \\['pink'\\]"),
    ({"red": "table", "blue": "drawer", "pink": "slider_left"}, "unknown location 'drawer'.*valid locations"),
    ({"red": "slider_left", "blue": "slider_left", "pink": "table"}, "only one block fits slider_left"),
    ({"red": "table", "blue": "table", "pink": "table"}, "at most 2 blocks"),
])
def test_bad_block_layouts_are_refused(blocks, message):
    with pytest.raises(ValueError, match=message):
        make_scene_obs(False, False, False, False, blocks=blocks)


def test_unknown_block_name_in_lookup():
    with pytest.raises(ValueError, match="valid blocks"):
        block_location(np.zeros(24), "green")
