"""Collection speed, render-later fidelity, bytes on disk vs CALVIN's npz layout, and loader throughput.

Collects the same Explore-5 episodes with the scripted oracle twice — rendering live (default
200×200 / 84×84 cameras) and states-only — renders the states-only dataset afterwards and compares
its pixels with the live ones, exports the live dataset to CALVIN's per-step npz layout, and reads
windows back through a multi-worker DataLoader. Prints a short table; the last line is the JSON.

    python benchmarks/collect_speed.py [--episodes 3] [--workers 2]

Goals: bytes_ratio_vs_calvin_npz <= 0.25, render_later_identical, states-only >= 10x live.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=3, help="episodes per collection")
    ap.add_argument("--workers", type=int, default=2, help="render and DataLoader workers")
    ap.add_argument("--windows", type=int, default=256, help="windows read for the loader figure")
    ap.add_argument("--keep", default=None, help="keep the datasets in this directory")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import torch
    from torch.utils.data import DataLoader

    from metamanip.cli import collect, render
    from metamanip.cli.pipeline import compose
    from metamanip.data.calvin_export import export_calvin
    from metamanip.data.dataset import WindowDataset
    from metamanip.data.shards import EpisodeReader, dataset_files, list_episodes

    torch.set_num_threads(1)
    work = Path(args.keep or tempfile.mkdtemp(prefix="collect_speed_"))
    if args.keep:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    base = ["env=explore", "env.num_objs=5", "trial_limits=thesis_3_5", f"collect.episodes={args.episodes}",
            "collect.progress=false", "seed=0"]

    t0 = time.perf_counter()
    live = collect.run(compose("collect", [*base, f"collect.dir={work / 'live'}"], output_dir=work / "job_live"))
    t_live = time.perf_counter() - t0
    t0 = time.perf_counter()
    later = collect.run(compose("collect", [*base, f"collect.dir={work / 'later'}", "collect.render=later"],
                                output_dir=work / "job_later"))
    t_states = time.perf_counter() - t0
    t0 = time.perf_counter()
    render.run(compose("render", [f"dataset={work / 'later'}", f"render.workers={args.workers}",
                                  "render.progress=false"], output_dir=work / "job_render"))
    t_render = time.perf_counter() - t0

    reader = EpisodeReader()
    live_refs, later_refs = list_episodes(work / "live"), list_episodes(work / "later")
    identical = len(live_refs) == len(later_refs) > 0 and all(
        a.num_steps == b.num_steps and all(np.array_equal(reader.read(a, k), reader.read(b, k))
                                           for k in ("rgb_static", "rgb_gripper"))
        for a, b in zip(live_refs, later_refs))

    ours = sum(p.stat().st_size for p in dataset_files(work / "live"))
    t0 = time.perf_counter()
    exported = export_calvin(work / "live", work / "calvin", progress=False)
    t_export = time.perf_counter() - t0
    calvin_bytes = _dir_bytes(work / "calvin")

    ds = WindowDataset(work / "live", window_size=12)
    n = min(args.windows, len(ds))
    sampler = torch.utils.data.RandomSampler(ds, num_samples=n, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=args.workers,
                        persistent_workers=False)
    t0 = time.perf_counter()
    seen = sum(len(batch["actions"]) for batch in loader)
    t_load = time.perf_counter() - t0

    steps = live["steps"]
    result = {
        "episodes_per_hour_live": round(live["shard_episodes"] / t_live * 3600, 1),
        "episodes_per_hour_states_only": round(later["shard_episodes"] / t_states * 3600, 1),
        "render_later_identical": bool(identical),
        "bytes_ratio_vs_calvin_npz": round(ours / calvin_bytes, 4),
        "loader_windows_per_s": round(seen / t_load, 1),
    }
    rows = [
        ("episodes (each run)", live["shard_episodes"]), ("steps (live)", steps),
        ("collect live, s", f"{t_live:.1f}"), ("collect states-only, s", f"{t_states:.1f}"),
        ("states-only speed-up", f"{t_live / t_states:.1f}x"),
        (f"render later ({args.workers} workers), s", f"{t_render:.1f}"),
        ("render-later pixels identical", identical),
        ("our shards, bytes", f"{ours:,} ({ours / steps:.0f} per step)"),
        ("CALVIN npz export, bytes", f"{calvin_bytes:,} ({calvin_bytes / exported['frames']:.0f} per step, "
                                     f"{t_export:.1f} s)"),
        (f"loader, windows/s (window 12, {args.workers} workers)", result["loader_windows_per_s"]),
    ]
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
