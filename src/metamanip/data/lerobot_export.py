"""Export a shard dataset to LeRobot's `LeRobotDataset` layout (format v3.0), so LeRobot's policies (ACT,
diffusion, SmolVLA, pi0) train on Meta-CALVIN data and its dataset viewer opens it.

Output (`<out>/`, written into a temporary sibling and renamed into place when complete):

    meta/info.json                                  codebase_version v3.0, fps 30, features, paths
    meta/stats.json                                 min / max / mean / std / count per feature
    meta/tasks.parquet                              one row per distinct task text (index) → task_index
    meta/episodes/chunk-000/file-000.parquet        one row per episode: length, frame range, file refs
    data/chunk-000/file-000.parquet                 one row per frame (files roll over at ~100 MB)
    videos/observation.images.<cam>/chunk-000/file-XXX.mp4   one H.264 video per episode and camera

Per frame: `observation.images.static` / `.gripper` (videos), `observation.state` = `robot_obs` (15),
`observation.environment_state` = `scene_obs` (24), `action` = the relative action (7, gripper ±1; what
our policies learn), `action.absolute` (7), the task = the feedback text in force (`train_feedback` by
default, so a trial's frames share a task and the next trial gets the new feedback), `trial_index`,
`next.reward` (1 on the step that ends a rewarded trial), `next.done` (last frame of the episode), plus
LeRobot's `timestamp`, `frame_index`, `episode_index`, `index`, `task_index`. The episodes table keeps our
episode id and meta task (`metamanip/episode_id`, `metamanip/meta_task`).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from metamanip.atomic import write_json
from metamanip.data.shards import EpisodeReader, list_episodes
from metamanip.errors import ConfigValueError, MissingInputError, UserError

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
FPS = 30  # the simulator's control rate
CHUNK_SIZE = 1000  # files per chunk folder
DATA_FILE_SIZE_MB = 100
VIDEO_FILE_SIZE_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
CAMERAS = ("static", "gripper")
ROBOT_OBS_NAMES = ["tcp_x", "tcp_y", "tcp_z", "tcp_roll", "tcp_pitch", "tcp_yaw", "gripper_width",
                   *[f"joint_{i}" for i in range(1, 8)], "gripper_action"]
ACTION_NAMES = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
TASK_TEXTS = ("train_feedback", "alt_feedback", "lm_feedback", "instruction")


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover  (a dependency of metamanip)
        raise UserError("the LeRobot export writes parquet files and needs pyarrow",
                        fix="pip install pyarrow") from e
    return pa, pq


def _chunk_file(i: int) -> dict[str, int]:
    return {"chunk_index": i // CHUNK_SIZE, "file_index": i % CHUNK_SIZE}


class _VideoWriter:
    """One mp4 (H.264) of RGB frames through imageio's ffmpeg."""

    def __init__(self, path: Path, fps: int, pix_fmt: str, crf: int) -> None:
        import imageio.v2 as imageio

        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = imageio.get_writer(str(path), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                         pixelformat=pix_fmt, macro_block_size=1,
                                         ffmpeg_params=["-crf", str(crf), "-g", "2"],
                                         ffmpeg_log_level="error")

    def write(self, frames: np.ndarray) -> None:
        for f in frames:
            self.writer.append_data(np.ascontiguousarray(f))

    def close(self) -> None:
        self.writer.close()


class _Stats:
    """Running min / max / sum / sum of squares per feature (images: per channel, scaled to [0, 1])."""

    def __init__(self) -> None:
        self.acc: dict[str, dict[str, Any]] = {}

    def add(self, key: str, x: np.ndarray, image: bool = False) -> None:
        x = np.asarray(x, dtype=np.float64)
        if image:  # (T, H, W, 3) uint8 -> per channel over T, H, W
            x = x.reshape(-1, x.shape[-1]) / 255.0
        else:
            x = x.reshape(x.shape[0], -1)
        a = self.acc.setdefault(key, {"min": np.full(x.shape[1], np.inf), "max": np.full(x.shape[1], -np.inf),
                                      "sum": np.zeros(x.shape[1]), "sq": np.zeros(x.shape[1]), "n": 0,
                                      "frames": 0, "image": image})
        a["min"] = np.minimum(a["min"], x.min(0))
        a["max"] = np.maximum(a["max"], x.max(0))
        a["sum"] += x.sum(0)
        a["sq"] += (x * x).sum(0)
        a["n"] += x.shape[0]

    def frames(self, key: str, n: int) -> None:
        self.acc[key]["frames"] += n

    def as_json(self) -> dict[str, dict[str, list]]:
        out = {}
        for key, a in self.acc.items():
            mean = a["sum"] / a["n"]
            std = np.sqrt(np.maximum(a["sq"] / a["n"] - mean * mean, 0.0))
            shape = (lambda v: [[[float(c)]] for c in v]) if a["image"] else (lambda v: [float(c) for c in v])
            count = a["frames"] if a["image"] else a["n"]
            out[key] = {"min": shape(a["min"]), "max": shape(a["max"]), "mean": shape(mean), "std": shape(std),
                        "count": [int(count)]}
        return out


def _features(cameras: dict[str, tuple[int, int]], pix_fmt: str) -> dict[str, dict[str, Any]]:
    feats: dict[str, dict[str, Any]] = {}
    for cam, (h, w) in cameras.items():
        feats[f"observation.images.{cam}"] = {
            "dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": h, "video.width": w, "video.codec": "h264", "video.pix_fmt": pix_fmt,
                     "video.is_depth_map": False, "video.fps": FPS, "video.channels": 3, "has_audio": False}}
    feats.update({
        "observation.state": {"dtype": "float32", "shape": [15], "names": ROBOT_OBS_NAMES},
        "observation.environment_state": {"dtype": "float32", "shape": [24], "names": None},
        "action": {"dtype": "float32", "shape": [7], "names": ACTION_NAMES},
        "action.absolute": {"dtype": "float32", "shape": [7], "names": ACTION_NAMES},
        "trial_index": {"dtype": "int64", "shape": [1], "names": None},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    })
    return feats


def _frame_table(pa: Any, ep: dict[str, np.ndarray], episode_index: int, start: int, task_index: np.ndarray) -> Any:
    n = len(ep["actions"])

    def vec(x: np.ndarray, d: int) -> Any:
        flat = pa.array(np.ascontiguousarray(x, dtype=np.float32).reshape(-1), type=pa.float32())
        return pa.FixedSizeListArray.from_arrays(flat, d)

    done = np.zeros(n, bool)
    done[-1] = True
    return pa.table({
        "observation.state": vec(ep["robot_obs"], 15),
        "observation.environment_state": vec(ep["scene_obs"], 24),
        "action": vec(ep["actions"], 7),
        "action.absolute": vec(ep["actions_abs"], 7),
        "trial_index": pa.array(ep["trial"].astype(np.int64)),
        "next.reward": pa.array(ep["reward"].astype(np.float32)),
        "next.done": pa.array(done),
        "timestamp": pa.array((np.arange(n) / FPS).astype(np.float32)),
        "frame_index": pa.array(np.arange(n, dtype=np.int64)),
        "episode_index": pa.array(np.full(n, episode_index, np.int64)),
        "index": pa.array(np.arange(start, start + n, dtype=np.int64)),
        "task_index": pa.array(task_index.astype(np.int64)),
    })


def export_lerobot(root: str | os.PathLike, out_dir: str | os.PathLike, task_text: str = "train_feedback",
                   skip_corrupt: bool = False, pix_fmt: str = "yuv420p", crf: int = 18,
                   repo_id: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Write the dataset at `root` as a LeRobotDataset (v3.0) in `out_dir` (which must not exist yet, or
    be empty). Returns `{"episodes", "frames", "tasks", "bytes", "out"}`.

    `task_text` is the stored text that becomes LeRobot's per-frame task (`train_feedback`, `alt_feedback`,
    `lm_feedback` or `instruction`). Videos are H.264 in `pix_fmt` (yuv420p plays everywhere; yuv444p
    with `crf=0` is near-lossless). States-only episodes are refused (run `metamanip-render` first).
    """
    pa, pq = _pyarrow()
    root, out = Path(root), Path(out_dir)
    if task_text not in TASK_TEXTS:
        raise ConfigValueError(f"task text {task_text!r} is not one of {', '.join(TASK_TEXTS)}",
                               fix="use --task train_feedback (the policy's text) or another stored text")
    if not root.exists():
        raise MissingInputError(f"no dataset at {root}", fix="give the collect.dir of a metamanip-collect run")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty",
                        fix="choose a new output directory (the export is written whole, never over another)")
    refs = list_episodes(root, skip_corrupt=skip_corrupt)
    if not refs:
        raise MissingInputError(f"no episodes to export in {root}", fix="collect some with metamanip-collect")
    no_img = [r.episode_id for r in refs if not r.has_images]
    if no_img:
        raise UserError(f"{len(no_img)} episode(s) in {root} have no images (e.g. {no_img[0]})",
                        fix=f"run `metamanip-render dataset={root}` before exporting to LeRobot")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        result = _write(pa, pq, refs, tmp, task_text, pix_fmt, crf, repo_id or out.name, progress)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log.info("exported %d episodes, %d frames, %d tasks to %s (%d bytes)", result["episodes"], result["frames"],
             result["tasks"], out, total)
    return {**result, "bytes": total, "out": str(out)}


def _write(pa: Any, pq: Any, refs: list, out: Path, task_text: str, pix_fmt: str, crf: int, repo_id: str,
           progress: bool) -> dict[str, Any]:
    reader = EpisodeReader()
    tasks: dict[str, int] = {}
    stats = _Stats()
    episodes: list[dict[str, Any]] = []
    cameras: dict[str, tuple[int, int]] = {}
    data_file, data_rows, data_bytes = 0, [], 0
    frame = 0

    def flush_data() -> None:
        nonlocal data_rows, data_bytes, data_file
        if not data_rows:
            return
        path = out / DATA_PATH.format(**_chunk_file(data_file))
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(data_rows), path)
        data_rows, data_bytes = [], 0
        data_file += 1

    try:
        for i, ref in enumerate(tqdm(refs, desc="export lerobot", unit="ep", disable=not progress)):
            ep = reader.episode(ref, ["rgb_static", "rgb_gripper", "robot_obs", "scene_obs", "actions",
                                      "actions_abs", "trial", "reward"])
            texts = reader.texts(ref, task_text)
            n = ref.num_steps
            task_index = np.array([tasks.setdefault(str(t), len(tasks)) for t in texts], np.int64)
            row: dict[str, Any] = {"episode_index": i, "tasks": list(dict.fromkeys(str(t) for t in texts)),
                                   "length": n, "dataset_from_index": frame, "dataset_to_index": frame + n}
            for cam in CAMERAS:
                key = f"rgb_{cam}"
                if key not in ep:
                    continue
                frames = ep[key]
                hw = tuple(int(x) for x in frames.shape[1:3])
                if cameras.setdefault(cam, hw) != hw:
                    raise UserError(f"episode {ref.episode_id} has {cam} images of {hw[0]}x{hw[1]} but earlier "
                                    f"episodes {cameras[cam][0]}x{cameras[cam][1]}",
                                    fix="export datasets collected with one camera size")
                vkey = f"observation.images.{cam}"
                w = _VideoWriter(out / VIDEO_PATH.format(video_key=vkey, **_chunk_file(i)), FPS, pix_fmt, crf)
                try:
                    w.write(frames)
                finally:
                    w.close()
                stats.add(vkey, frames, image=True)
                stats.frames(vkey, n)
                loc = _chunk_file(i)
                row.update({f"videos/{vkey}/chunk_index": loc["chunk_index"],
                            f"videos/{vkey}/file_index": loc["file_index"],
                            f"videos/{vkey}/from_timestamp": 0.0, f"videos/{vkey}/to_timestamp": n / FPS})
            table = _frame_table(pa, ep, i, frame, task_index)
            for key, arr in (("observation.state", ep["robot_obs"]), ("observation.environment_state",
                             ep["scene_obs"]), ("action", ep["actions"]), ("action.absolute", ep["actions_abs"]),
                             ("next.reward", ep["reward"]), ("trial_index", ep["trial"]),
                             ("timestamp", np.arange(n) / FPS), ("frame_index", np.arange(n)),
                             ("episode_index", np.full(n, i)), ("index", np.arange(frame, frame + n)),
                             ("task_index", task_index), ("next.done", np.arange(n) == n - 1)):
                stats.add(key, arr)
            if data_rows and data_bytes + table.nbytes > DATA_FILE_SIZE_MB * 2**20:
                flush_data()
            loc = _chunk_file(data_file)
            row.update({"data/chunk_index": loc["chunk_index"], "data/file_index": loc["file_index"]})
            data_rows.append(table)
            data_bytes += table.nbytes
            meta_task = ref.meta.get("meta_task", "")
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                        "metamanip/episode_id": str(ref.episode_id),
                        "metamanip/meta_task": "+".join(meta_task) if isinstance(meta_task, (list, tuple))
                        else str(meta_task)})
            episodes.append(row)
            frame += n
        flush_data()
    finally:
        reader.close()

    path = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes), path)
    import pandas as pd

    pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task")).to_parquet(
        out / "meta" / "tasks.parquet")
    write_json(out / "meta" / "stats.json", stats.as_json())
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": "franka_panda", "total_episodes": len(episodes),
            "total_frames": frame, "total_tasks": len(tasks), "chunks_size": CHUNK_SIZE,
            "data_files_size_in_mb": DATA_FILE_SIZE_MB, "video_files_size_in_mb": VIDEO_FILE_SIZE_MB, "fps": FPS,
            "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
            "features": _features(cameras, pix_fmt)}
    write_json(out / "meta" / "info.json", info)
    (out / "README.md").write_text(
        f"---\ntags:\n- LeRobot\n- metamanip\n---\n# {repo_id}\n\nMeta-CALVIN episodes exported from metamanip "
        f"(LeRobotDataset {CODEBASE_VERSION}): {len(episodes)} episodes, {frame} frames at {FPS} fps, "
        f"{len(tasks)} distinct feedback texts as tasks ({task_text}).\n")
    return {"episodes": len(episodes), "frames": frame, "tasks": len(tasks)}


def main(argv: list[str] | None = None) -> None:
    """`metamanip-export lerobot <dataset> <out>` (also `python -m metamanip.data.lerobot_export`)."""
    import argparse

    ap = argparse.ArgumentParser(prog="metamanip-export lerobot",
                                 description="Export a metamanip dataset to LeRobot's LeRobotDataset layout (v3.0)")
    ap.add_argument("dataset", help="dataset directory (collect.dir) or one shard file")
    ap.add_argument("out", help="output directory (new or empty)")
    ap.add_argument("--task", default="train_feedback", choices=TASK_TEXTS,
                    help="stored text that becomes the per-frame task (default: train_feedback)")
    ap.add_argument("--pix-fmt", default="yuv420p", help="video pixel format (yuv420p plays everywhere)")
    ap.add_argument("--crf", type=int, default=18, help="H.264 quality, 0 = lossless luma (default 18)")
    ap.add_argument("--skip-corrupt", action="store_true", help="skip unreadable shards instead of failing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    res = export_lerobot(args.dataset, args.out, task_text=args.task, pix_fmt=args.pix_fmt, crf=args.crf,
                         skip_corrupt=args.skip_corrupt)
    print(f"{res['episodes']} episodes, {res['frames']} frames, {res['tasks']} tasks, {res['bytes']:,} bytes "
          f"in {res['out']} (LeRobotDataset {CODEBASE_VERSION})")


if __name__ == "__main__":
    main()
