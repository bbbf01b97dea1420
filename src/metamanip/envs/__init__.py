"""The simulated world: a PyBullet playtable with a Franka Panda.

- `playtable.py`: `PlayTableEnv`, the gymnasium env (actions, observations, cameras, state save/restore).
- `scene.py`: `make_scene_obs`, the 24-value scene state of a logical initial state.
- `tasks.py`: `TASKS` and `detect_tasks`, CALVIN-style detectors over two `get_info()` snapshots.
- `layout.py`: where every part is; `playtable_urdf.py` writes the URDFs in `assets/` from it.
"""
