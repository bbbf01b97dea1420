"""Task detectors on hand-made snapshots: CALVIN thresholds, lift contact rules, unknown names."""
import numpy as np
import pytest

from metamanip.envs.scene import make_scene_obs
from metamanip.envs.tasks import TASKS, detect_tasks


def snap(scene=None, **contacts):
    s = make_scene_obs(False, False, False, False) if scene is None else scene
    base = {"red": {("table", -1)}, "blue": {("table", 6)}, "pink": {("table", 6)}}
    base.update(contacts)
    return {"scene_obs": np.array(s, dtype=float), "contacts": {k: frozenset(v) for k, v in base.items()}}


def moved(index, delta, scene=None):
    s = (make_scene_obs(False, False, False, False) if scene is None else scene).copy()
    s[index] += delta
    return s


def test_the_fourteen_tasks_exist():
    assert len(TASKS) == 14 and len(set(TASKS)) == 14
    assert {"open_drawer", "move_slider_left", "turn_off_led", "lift_pink_block_slider"} <= set(TASKS)


@pytest.mark.parametrize("index, delta, fired", [
    (0, 0.151, "move_slider_left"), (0, -0.151, "move_slider_right"),
    (1, 0.121, "open_drawer"), (1, -0.121, "close_drawer")])
def test_doors_fire_past_the_threshold_only(index, delta, fired):
    start = snap(make_scene_obs(True, True, False, False)) if delta < 0 else snap()
    scene = start["scene_obs"].copy()
    scene[index] += delta
    assert detect_tasks(start, snap(scene)) == {fired}
    near = start["scene_obs"].copy()
    near[index] += delta * 0.95  # a near miss: 95 % of the threshold
    assert detect_tasks(start, snap(near)) == set()


def test_lights_fire_on_a_flip_and_not_on_a_repeat():
    off, on = snap(), snap(make_scene_obs(False, False, True, True))
    assert detect_tasks(off, on) == {"turn_on_led", "turn_on_lightbulb"}
    assert detect_tasks(on, off) == {"turn_off_led", "turn_off_lightbulb"}
    assert detect_tasks(on, on) == set()


def test_lift_needs_height_robot_only_contact_and_start_surface():
    start = snap()
    lifted = moved(8, 0.06)  # red z + 0.06
    assert detect_tasks(start, snap(lifted, red={("robot", 9), ("robot", 10)})) == {"lift_red_block_table"}
    # near misses: too low, still touching the table, touching another block, not held at all
    assert detect_tasks(start, snap(moved(8, 0.049), red={("robot", 9)})) == set()
    assert detect_tasks(start, snap(lifted, red={("robot", 9), ("table", -1)})) == set()
    assert detect_tasks(start, snap(lifted, red={("robot", 9), ("block_blue", -1)})) == set()
    assert detect_tasks(start, snap(lifted, red=set())) == set()
    # a block that started on the plank is lifted from the slider, not from the table
    assert detect_tasks(snap(red={("table", 6)}), snap(lifted, red={("robot", 9)})) == {"lift_red_block_slider"}


def test_slider_lift_uses_the_plank_and_its_lower_threshold():
    start = snap()
    blue_up = moved(14, 0.031)
    assert detect_tasks(start, snap(blue_up, blue={("robot", 10)})) == {"lift_blue_block_slider"}
    assert detect_tasks(start, snap(moved(14, 0.029), blue={("robot", 10)})) == set()


def test_only_the_asked_tasks_are_reported():
    start = snap()
    assert detect_tasks(start, snap(moved(1, 0.2)), ["close_drawer"]) == set()


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown task.*'open_the_fridge'.*valid tasks.*open_drawer"):
        detect_tasks(snap(), snap(), ["open_the_fridge"])


def test_extra_block_tasks_are_reported_only_when_asked():
    start = snap()
    pushed = moved(6, 0.11)  # red x + 0.11, still on the table
    assert detect_tasks(start, snap(pushed)) == set()
    assert detect_tasks(start, snap(pushed), ["push_red_block_right", "push_red_block_left"]) == {"push_red_block_right"}
    assert detect_tasks(start, snap(moved(6, 0.09)), ["push_red_block_right"]) == set()
    # carried in the air is not a push
    assert detect_tasks(start, snap(pushed, red={("robot", 9)}), ["push_red_block_right"]) == set()
    assert detect_tasks(start, snap(moved(6, -0.11)), ["push_red_block_left"]) == {"push_red_block_left"}


def test_rotation_needs_yaw_flat_block_small_shift_and_a_support():
    start = snap()
    turned = moved(11, np.radians(65))  # red yaw + 65°
    names = ["rotate_red_block_left", "rotate_red_block_right"]
    assert detect_tasks(start, snap(turned), names) == {"rotate_red_block_left"}
    assert detect_tasks(start, snap(moved(11, np.radians(-65))), names) == {"rotate_red_block_right"}
    assert detect_tasks(start, snap(moved(11, np.radians(55))), names) == set()
    tilted = turned.copy()
    tilted[9] = np.radians(35)
    assert detect_tasks(start, snap(tilted), names) == set()
    shifted = turned.copy()
    shifted[6] += 0.12
    assert detect_tasks(start, snap(shifted), names) == set()
    assert detect_tasks(start, snap(turned, red={("robot", 9)}), names) == set()
