"""Export a shard dataset to CALVIN's per-step `.npz` layout, so tools written for CALVIN data read ours.

Output (`<out>/<split>/`): `episode_XXXXXXX.npz` per step (np.savez_compressed; keys `actions`,
`rel_actions`, `robot_obs`, `scene_obs`, `rgb_static`, `rgb_gripper`, plus our `train_feedback`,
`alt_feedback`, `lm_feedback`, `lm_instruction`, `lm_output`, `trial`, `reward`, `idx`),
`ep_start_end_ids.npy` (inclusive start/end per episode), `ep_lens.npy`, and
`lang_annotations/auto_lang_ann.npy` with one annotation per trial (the feedback in force at its start).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from metamanip.atomic import atomic_path
from metamanip.data.shards import EpisodeReader, list_episodes, trial_segments

log = logging.getLogger(__name__)


def _atomic_save_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)


def _atomic_save_npy(path: Path, arr: np.ndarray, allow_pickle: bool = False) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, arr, allow_pickle=allow_pickle)


def export_calvin(root: str | os.PathLike, out_dir: str | os.PathLike, split: str = "training",
                  skip_corrupt: bool = False, progress: bool = True) -> dict:
    """Write every episode of the dataset at `root` as CALVIN per-step npz files under `out_dir/split`.

    Returns `{"frames", "episodes", "bytes"}`. Episodes without images (states-only) are refused:
    render them first with `metamanip-render`.
    """
    refs = list_episodes(root, skip_corrupt=skip_corrupt)
    if not refs:
        raise ValueError(f"no episodes to export in {root}")
    no_img = [r.episode_id for r in refs if not r.has_images]
    if no_img:
        raise ValueError(f"{len(no_img)} episode(s) have no images (e.g. {no_img[0]}); run "
                         f"`metamanip-render` on {root} before exporting to the CALVIN layout")
    out = Path(out_dir) / split
    (out / "lang_annotations").mkdir(parents=True, exist_ok=True)
    reader = EpisodeReader()
    frame = 0
    start_end, lens = [], []
    ann, tasks, indx = [], [], []
    for ref in tqdm(refs, desc="export calvin", unit="ep", disable=not progress):
        ep = reader.episode(ref, ["rgb_static", "rgb_gripper", "robot_obs", "scene_obs", "actions",
                                  "actions_abs", "trial", "reward"])
        texts = {k: reader.texts(ref, k) for k in ("train_feedback", "alt_feedback", "lm_feedback",
                                                  "oracle_text", "instruction")}
        start = frame
        for t in range(ref.num_steps):
            _atomic_save_npz(
                out / f"episode_{frame:07d}.npz",
                actions=ep["actions_abs"][t], rel_actions=ep["actions"][t],
                robot_obs=ep["robot_obs"][t], scene_obs=ep["scene_obs"][t],
                rgb_static=ep["rgb_static"][t], rgb_gripper=ep["rgb_gripper"][t],
                train_feedback=np.array(texts["train_feedback"][t]),
                alt_feedback=np.array(texts["alt_feedback"][t]),
                lm_feedback=np.array(texts["lm_feedback"][t]),
                lm_output=np.array(texts["oracle_text"][t]),
                lm_instruction=np.array(texts["instruction"][t]),
                trial=np.array(ep["trial"][t]), reward=np.array(ep["reward"][t]), idx=np.array(t))
            frame += 1
        start_end.append((start, frame - 1))
        lens.append(ref.num_steps)
        for _trial, s, e in trial_segments(ep["trial"]):
            ann.append(texts["train_feedback"][s])
            task = ref.meta.get("meta_task", "")
            tasks.append("+".join(task) if isinstance(task, (list, tuple)) else str(task))
            indx.append((start + s, start + e - 1))
    _atomic_save_npy(out / "ep_start_end_ids.npy", np.array(start_end, dtype=np.int64))
    _atomic_save_npy(out / "ep_lens.npy", np.array(lens, dtype=np.int64))
    lang = {"language": {"ann": ann, "task": tasks}, "info": {"indx": indx, "episodes": []}}
    _atomic_save_npy(out / "lang_annotations" / "auto_lang_ann.npy", np.array(lang, dtype=object),
                     allow_pickle=True)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log.info("exported %d frames of %d episodes to %s (%d bytes)", frame, len(refs), out, total)
    return {"frames": frame, "episodes": len(refs), "bytes": total}


def load_calvin_frame(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read one exported frame back (plain arrays, strings as str)."""
    with np.load(path) as z:
        return {k: (z[k].item() if z[k].dtype.kind == "U" else z[k]) for k in z.files}


def main(argv: list[str] | None = None) -> None:
    """`python -m metamanip.data.calvin_export <dataset> <out> [--split training]`."""
    import argparse

    ap = argparse.ArgumentParser(description="Export a metamanip dataset to CALVIN's per-step npz layout")
    ap.add_argument("dataset", help="dataset directory (collect.dir) or one shard file")
    ap.add_argument("out", help="output directory; the frames go to <out>/<split>/")
    ap.add_argument("--split", default="training", help="CALVIN split folder name (training | validation)")
    ap.add_argument("--skip-corrupt", action="store_true", help="skip unreadable shards instead of failing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    res = export_calvin(args.dataset, args.out, split=args.split, skip_corrupt=args.skip_corrupt)
    print(f"{res['frames']} frames of {res['episodes']} episodes, {res['bytes']:,} bytes in {args.out}/{args.split}")


if __name__ == "__main__":
    main()
