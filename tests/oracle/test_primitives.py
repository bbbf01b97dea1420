"""Scripted primitives on the real simulator: every detector fires on a robot-performed task and stays
silent on a near miss of the same motion (halted just short of the threshold), and nothing is teleported."""
import numpy as np
import pytest

from metamanip.envs.playtable import PlayTableEnv
from metamanip.envs.scene import BLOCK_INDEX, make_scene_obs
from metamanip.envs.tasks import TASKS, detect_tasks
from metamanip.oracle.primitives import feasible, make_primitive

BASES = [(-0.34, -0.46, 0.24), (-0.49, -0.48, 0.34), (-0.19, -0.44, 0.19)]


def start_scene(task: str) -> np.ndarray:
    """An initial state from which `task` is feasible (switch exactly at 0.07 when the bulb is on)."""
    on = task.startswith("turn_off")
    blocks = {"red": "table", "blue": "slider_left", "pink": "slider_right"}
    if "block" in task:
        color, surface = task.split("_")[1], task.split("_")[3]
        others = [c for c in blocks if c != color]
        if surface == "table":
            blocks = {color: "table", others[0]: "slider_left", others[1]: "slider_right"}
        else:
            blocks = {color: "slider_left", others[0]: "table", others[1]: "slider_right"}
    scene = make_scene_obs(drawer_open=task == "close_drawer", slider_left=task == "move_slider_right",
                           led_on=on and task.endswith("led"), lightbulb_on=on and task.endswith("lightbulb"),
                           blocks=blocks)
    assert feasible(task, scene), task
    return scene


def near_miss_reached(task: str, start: np.ndarray, now: np.ndarray) -> bool:
    """Part way to the task, short of its detector's threshold."""
    if task == "move_slider_left":
        return now[0] - start[0] > 0.10
    if task == "move_slider_right":
        return start[0] - now[0] > 0.10
    if task == "open_drawer":
        return now[1] - start[1] > 0.08
    if task == "close_drawer":
        return start[1] - now[1] > 0.08
    if task == "turn_on_lightbulb":
        return now[3] > 0.025
    if task == "turn_off_lightbulb":
        return now[3] < 0.062
    if task.endswith("_led"):
        return now[2] > 0.003
    color, surface = task.split("_")[1], task.split("_")[3]
    z = BLOCK_INDEX[color] + 2
    return now[z] - start[z] > (0.02 if surface == "table" else 0.008)


@pytest.fixture(scope="module")
def env():
    e = PlayTableEnv(cameras={})
    yield e
    e.close()


@pytest.mark.parametrize("task", TASKS)
def test_primitive_does_the_task_and_a_near_miss_does_not_count(env, task, monkeypatch):
    base = BASES[TASKS.index(task) % len(BASES)]
    obs, start = env.reset(seed=0, options={"scene_obs": start_scene(task), "base_pos": base})
    start_scene_obs = obs["scene_obs"].copy()
    # after the reset nothing may set a joint or move a body: tasks happen through contacts only
    for name in ("resetJointState", "resetBasePositionAndOrientation", "resetBaseVelocity"):
        monkeypatch.setattr(env._p, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} called during a rollout"))
    prim = make_primitive(task)
    prim.reset(obs)
    halted = False
    for step in range(200):
        a = prim.act(obs)
        if task.endswith("_led") and prim.phase == "press":
            a[2] = max(a[2], -0.1)  # creep onto the button so that the near miss can stop short of the trigger
        obs, _, _, _, info = env.step(a)
        if not halted and near_miss_reached(task, start_scene_obs, obs["scene_obs"]):
            halted = True
            for _ in range(4):  # hold still just short of the threshold
                obs, _, _, _, info = env.step(np.array([0, 0, 0, 0, 0, 0, a[6]], dtype=np.float32))
            assert detect_tasks(start, env.get_info()) == set(), f"{task}: fired on a near miss"
        if prim.done:
            break
    assert halted, f"{task}: the motion never got near the task"
    assert prim.done and step < 150, f"{task}: primitive still in phase {prim.phase} after {step + 1} steps"
    assert detect_tasks(start, env.get_info()) == {task}


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown task 'open_fridge'.*valid tasks.*open_drawer"):
        make_primitive("open_fridge")
    with pytest.raises(ValueError, match="valid tasks"):
        feasible("open_fridge", np.zeros(24))


def test_feasibility_follows_the_scene():
    closed_right = make_scene_obs(False, False, False, False,
                                  blocks={"red": "table", "blue": "slider_left", "pink": "slider_right"})
    assert feasible("open_drawer", closed_right) and not feasible("close_drawer", closed_right)
    assert feasible("move_slider_left", closed_right) and not feasible("move_slider_right", closed_right)
    assert feasible("turn_on_led", closed_right) and not feasible("turn_off_led", closed_right)
    # the door (q = 0) covers the right slot: pink is hidden, blue can be lifted
    assert feasible("lift_blue_block_slider", closed_right) and not feasible("lift_pink_block_slider", closed_right)
    assert feasible("lift_red_block_table", closed_right) and not feasible("lift_red_block_slider", closed_right)


def test_actions_stay_in_range(env):
    obs, _ = env.reset(seed=3)
    for task in ("open_drawer", "close_drawer", "lift_red_block_table"):
        prim = make_primitive(task)
        prim.reset(obs)
        for _ in range(20):
            a = prim.act(obs)
            assert a.shape == (7,) and a.dtype == np.float32
            assert np.all(np.abs(a) <= 1.0) and a[6] in (-1.0, 1.0)


@pytest.mark.parametrize("first, second, base", [
    ("move_slider_left", "open_drawer", (-0.482, -0.45, 0.271)),   # leaves the hand over the shelf
    ("open_drawer", "turn_on_lightbulb", (-0.2, -0.46, 0.29)),      # from in front of the drawer, far right
    ("turn_on_led", "move_slider_left", (-0.34, -0.46, 0.24)),
])
def test_primitives_chain_from_where_the_last_one_stopped(env, first, second, base):
    """Combi-Explore switches primitive the moment a subtask is detected; the second must not undo the first."""
    obs, start = env.reset(seed=0, options={"scene_obs": start_scene("move_slider_left"), "base_pos": base})
    for task in (first, second):
        before = env.get_info()
        prim = make_primitive(task)
        prim.reset(obs)
        for _ in range(150):
            obs, *_ = env.step(prim.act(obs))
            if task in detect_tasks(before, env.get_info(), [task]):
                break
        else:
            pytest.fail(f"{task} not done after {first}")
    for _ in range(30):  # let the second primitive finish its retreat
        if prim.done:
            break
        obs, *_ = env.step(prim.act(obs))
    assert detect_tasks(start, env.get_info()) == {first, second}


def test_a_scripted_push_fires_only_the_push_detector(env):
    """The detectors-only extras work on real contacts too: push the red block 13 cm to the right."""
    from metamanip.envs.tasks import EXTRA_TASKS
    from metamanip.oracle.primitives import CLOSE, LOW_TRAVEL_Z, Phase, Primitive, _travel

    obs, start = env.reset(seed=0, options={"scene_obs": start_scene("lift_red_block_table")})
    x0, y0, z = obs["scene_obs"][6:9]  # the TCP at the block's centre height, fingertips 1 cm lower
    push = Primitive("push_red_block_right", [
        *_travel("approach", lambda o: (x0 - 0.06, y0), CLOSE, z=LOW_TRAVEL_Z),
        Phase("descend", lambda o: (x0 - 0.06, y0, z), CLOSE, tol=0.006),
        Phase("push", lambda o: (x0 + 0.09, y0, z), CLOSE, tol=0.01, speed=0.4,
              until=lambda o: o["scene_obs"][6] > x0 + 0.13),
        Phase("retreat", lambda o: (x0 + 0.05, y0, LOW_TRAVEL_Z), CLOSE, tol=0.015)])
    push.reset(obs)
    while not push.done:
        obs, *_ = env.step(push.act(obs))
    assert obs["scene_obs"][6] - x0 > 0.1 and abs(obs["scene_obs"][8] - z) < 0.01
    assert detect_tasks(start, env.get_info(), TASKS + EXTRA_TASKS) == {"push_red_block_right"}
