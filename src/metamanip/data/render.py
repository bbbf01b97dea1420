"""Render-later: add camera images to a states-only dataset from the simulator states it stored.

Collecting without cameras is many times faster; this pass restores each stored state into a fresh
simulator (`set_state`) and renders it (`render_cameras`), which gives the pixels live rendering gives.
Episodes are rendered in parallel processes, each into its own part file (so an interrupted render
resumes), then every shard file is rebuilt with its images and atomically replaces the states-only one.
"""
from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np
from tqdm.auto import tqdm

from metamanip.data.shards import (IMAGE_KEYS, EpisodeReader, WriteOptions, atomic_h5, list_episodes,
                                   open_shard, write_images)

log = logging.getLogger(__name__)

RENDER_DIR = ".render"
_worker_env: Any = None


def _make_sim(sim_cfg: Mapping[str, Any]) -> Any:
    from hydra.utils import instantiate

    cfg = dict(sim_cfg)
    if not cfg.get("cameras"):
        raise ValueError("the simulator config has no cameras to render; give render.cameras or collect "
                         "with env.sim.cameras set (collect.render=later keeps them for this pass)")
    return instantiate(cfg, _convert_="all")


def _init_worker(sim_cfg: Mapping[str, Any]) -> None:
    global _worker_env
    _worker_env = _make_sim(sim_cfg)


def render_states(sim: Any, states: list[dict]) -> dict[str, np.ndarray]:
    """Images of every state, stacked per camera (`rgb_static`, `rgb_gripper`)."""
    frames: dict[str, list[np.ndarray]] = {}
    for state in states:
        sim.set_state(state)
        for key, img in sim.render_cameras().items():
            if key in IMAGE_KEYS:
                frames.setdefault(key, []).append(img)
    return {k: np.stack(v) for k, v in frames.items()}


def _render_episode(job: tuple[str, str, int, str, WriteOptions]) -> str:
    path, episode_id, num_steps, out, options = job
    from metamanip.data.shards import EpisodeRef

    reader = EpisodeReader()
    ref = EpisodeRef(Path(path), episode_id, num_steps, {}, False)
    states = list(reader.states(ref))
    reader.close()
    images = render_states(_worker_env, states)
    with atomic_h5(Path(out)) as f:
        for key, arr in images.items():
            write_images(f, key, arr, options)
    return episode_id


def _part_path(root: Path, shard_file: Path, episode_id: str) -> Path:
    return root / RENDER_DIR / shard_file.stem / f"ep-{episode_id}.h5"


def render_dataset(root: str | os.PathLike, sim_cfg: Mapping[str, Any], workers: int = 1,
                   options: WriteOptions | None = None, skip_corrupt: bool = False,
                   progress: bool = True) -> dict[str, int]:
    """Render the images of every states-only episode under `root`; returns counts."""
    root = Path(root)
    options = options or WriteOptions()
    refs = [r for r in list_episodes(root, skip_corrupt=skip_corrupt) if not r.has_images]
    if not refs:
        log.info("every episode in %s already has images", root)
        return {"episodes": 0, "frames": 0, "files": 0}
    jobs = []
    for r in refs:
        part = _part_path(root, r.path, r.episode_id)
        if not part.exists():
            jobs.append((str(r.path), r.episode_id, r.num_steps, str(part), options))
    log.info("rendering %d episode(s) (%d already rendered) with %d worker(s)", len(jobs), len(refs) - len(jobs),
             workers)
    bar = tqdm(total=len(jobs), desc="render", unit="ep", disable=not progress)
    if workers <= 1:
        _init_worker(sim_cfg)
        for j in jobs:
            _render_episode(j)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                 initializer=_init_worker, initargs=(dict(sim_cfg),)) as pool:
            for _ in pool.map(_render_episode, jobs):
                bar.update(1)
    bar.close()
    files = sorted({r.path for r in refs})
    for path in files:
        _rebuild_with_images(root, path)
    shutil.rmtree(root / RENDER_DIR, ignore_errors=True)
    return {"episodes": len(refs), "frames": sum(r.num_steps for r in refs), "files": len(files)}


def _rebuild_with_images(root: Path, path: Path) -> None:
    """Rewrite `path` with every episode's images added (atomic replace)."""
    info = open_shard(path)
    with h5py.File(path, "r") as src, atomic_h5(path) as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        dst.require_group("episodes")
        for ref in info.episodes:
            src.copy(src["episodes"][ref.episode_id], dst["episodes"], name=ref.episode_id)
            if ref.has_images:
                continue
            part = _part_path(root, path, ref.episode_id)
            with h5py.File(part, "r") as pf:
                for key in IMAGE_KEYS:
                    if key in pf:
                        pf.copy(pf[key], dst["episodes"][ref.episode_id], name=key)
    log.info("added images to %s", path)


def sim_config_of(root: str | os.PathLike) -> dict[str, Any]:
    """The simulator config a dataset was collected with (from its collection.json)."""
    import json

    p = Path(root) / "collection.json"
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: {root} was not made by metamanip-collect; give render.sim "
                                f"explicitly")
    return dict(json.loads(p.read_text())["config"]["env"]["sim"])

