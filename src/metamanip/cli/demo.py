"""`metamanip-demo`: the scripted expert performs a few tasks in a row; the video goes to the job dir.

    metamanip-demo
    metamanip-demo demo.tasks='[open_drawer,lift_red_block_table]' demo.video=demo.mp4

Writes `<job dir>/demo.gif` (or .mp4), `metrics.json` (tasks done, steps) and `status.json`, and prints
one line per task.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from metamanip.atomic import atomic_path
from metamanip.cli.entry import entry_point
from metamanip.cli.jobstate import job, write_metrics

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"
VIDEO_SUFFIXES = (".gif", ".mp4")


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Write frames as a GIF or MP4, atomically (a temp file in the same dir, then a rename)."""
    import imageio.v2 as imageio

    if path.suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"demo.video must end in one of {VIDEO_SUFFIXES}, got {path.name!r}")
    if not frames:
        raise ValueError("no frames to write: the simulator has no static camera (set sim.cameras.static)")
    with atomic_path(path) as tmp:
        if path.suffix == ".gif":
            imageio.mimsave(tmp, frames, duration=1000.0 / fps, loop=0)
        else:
            imageio.mimsave(tmp, frames, fps=fps, macro_block_size=1)


def run_demo(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Run the tasks of `cfg.demo` one after the other with the scripted primitives; return the metrics."""
    from hydra.utils import instantiate

    from metamanip.envs.scene import make_scene_obs
    from metamanip.envs.tasks import check_tasks, detect_tasks
    from metamanip.oracle.primitives import feasible, make_primitive

    d = cfg.demo
    tasks = check_tasks(list(d.tasks))
    if Path(str(d.video)).suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"demo.video must end in one of {VIDEO_SUFFIXES}, got {d.video!r}")
    scene_kwargs = OmegaConf.to_container(d.scene, resolve=True)
    scene = make_scene_obs(**scene_kwargs, rng=np.random.default_rng(int(cfg.seed)))
    env = instantiate(cfg.sim)
    if "static" not in env.camera_names:
        raise ValueError("the demo films the static camera: keep sim.cameras.static")
    options: dict[str, Any] = {"scene_obs": scene}
    if d.base_pos is not None:
        options["base_pos"] = list(d.base_pos)
    obs, _ = env.reset(seed=int(cfg.seed), options=options)
    frames = [obs["rgb_static"]]
    results = []
    total = 0
    try:
        for task in tasks:
            if not feasible(task, obs["scene_obs"]):
                raise ValueError(f"demo.tasks: {task} is not possible in the state the earlier tasks left "
                                 f"(scene_obs[:6]={np.round(obs['scene_obs'][:6], 3).tolist()}); reorder demo.tasks")
            start = env.get_info()
            prim = make_primitive(task)
            prim.reset(obs)
            done_at = None
            for step in range(int(d.max_steps_per_task)):
                obs, *_ = env.step(prim.act(obs))
                total += 1
                if total % int(d.frame_every) == 0:
                    frames.append(obs["rgb_static"])
                if done_at is None and task in detect_tasks(start, env.get_info(), [task]):
                    done_at = step + 1
                if prim.done:
                    break
            results.append({"task": task, "done": done_at is not None, "steps": step + 1, "detected_at": done_at})
            log.info("%s: %s after %d steps", task, "done" if done_at else "NOT done", step + 1)
    finally:
        env.close()
    video = output_dir / str(d.video)
    write_video(video, frames, float(d.fps))
    metrics = {"tasks": len(tasks), "tasks_done": sum(r["done"] for r in results), "steps": total,
               "frames": len(frames), "video": str(video), "per_task": results}
    write_metrics(output_dir, metrics)
    return metrics


@entry_point("demo")
def main(cfg: DictConfig) -> None:
    with job(cfg) as out:
        m = run_demo(cfg, out)
    for r in m["per_task"]:
        print(f"{r['task']:28s} {'done' if r['done'] else 'NOT done':9s} {r['steps']:4d} steps")
    print(f"{m['tasks_done']}/{m['tasks']} tasks, video: {m['video']}")


if __name__ == "__main__":
    main()
