"""`WindowDataset`: fixed-length windows of steps from a shard dataset, for behaviour cloning.

Windows never cross a trial boundary (the env restores the initial state between trials, so such a
window would splice two unrelated clips). `text` is the feedback in force at the window's last step.
h5py handles are opened lazily inside each DataLoader worker, so any number of workers read in parallel.
"""
from __future__ import annotations

import bisect
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from metamanip.data.shards import EpisodeReader, EpisodeRef, TEXT_KINDS, list_episodes, trial_segments

log = logging.getLogger(__name__)

CAMERAS = {"static": "rgb_static", "gripper": "rgb_gripper"}
FEEDBACK_KINDS = ("train_feedback", "alt_feedback", "lm_feedback")


class WindowDataset(Dataset):
    """Windows of `window_size` consecutive steps inside one trial of one episode.

    Item: `rgb_static` uint8 (T,3,H,W), `rgb_gripper` uint8 (T,3,h,w) (the chosen `cameras`),
    `robot_obs` f32 (T,15), `scene_obs` f32 (T,24), `actions` f32 (T,7) relative with gripper ±1,
    `actions_abs` f32 (T,7), `text` str.
    """

    def __init__(self, root: str | os.PathLike, window_size: int = 12,
                 feedback: str = "train_feedback", cameras: Sequence[str] = ("static", "gripper"),
                 skip_corrupt: bool = False, episodes: Sequence[str] | None = None,
                 stride: int = 1):
        if feedback not in TEXT_KINDS:
            raise ValueError(f"feedback={feedback!r} is not a stored text; choose one of {TEXT_KINDS}")
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; choose from {sorted(CAMERAS)}")
        if window_size < 1 or stride < 1:
            raise ValueError(f"window_size ({window_size}) and stride ({stride}) must be >= 1")
        self.root = Path(root)
        self.window_size = int(window_size)
        self.feedback = feedback
        self.cameras = tuple(cameras)
        refs = list_episodes(self.root, skip_corrupt=skip_corrupt)
        if episodes is not None:
            wanted = set(episodes)
            refs = [r for r in refs if r.episode_id in wanted]
        if not refs:
            raise ValueError(f"no episodes in {self.root}; collect some with `metamanip-collect`")
        if self.cameras and not all(r.has_images for r in refs):
            missing = sum(not r.has_images for r in refs)
            raise ValueError(f"{missing} episode(s) in {self.root} have no images (collected with "
                             f"collect.render=later); run `metamanip-render` on it, or use cameras=()")
        self.refs: list[EpisodeRef] = refs
        self._reader = EpisodeReader()
        # index: per episode, the window starts that fit inside one trial
        self._starts: list[np.ndarray] = []
        short = 0
        for ref in refs:
            trial = self._reader.read(ref, "trial")
            starts = []
            for _t, s, e in trial_segments(trial):
                if e - s < self.window_size:
                    short += 1
                    continue
                starts.append(np.arange(s, e - self.window_size + 1, stride))
            self._starts.append(np.concatenate(starts) if starts else np.zeros(0, np.int64))
        self._reader.close()
        if short:
            log.info("%d trial(s) shorter than window_size=%d give no window", short, self.window_size)
        self._cum = np.cumsum([len(s) for s in self._starts]).tolist()
        if not self._cum or self._cum[-1] == 0:
            raise ValueError(f"no trial in {self.root} is at least window_size={self.window_size} "
                             f"steps long; lower window_size")

    def __len__(self) -> int:
        return self._cum[-1]

    def locate(self, index: int) -> tuple[EpisodeRef, int]:
        """The episode and first step of window `index`."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range (dataset has {len(self)})")
        e = bisect.bisect_right(self._cum, index)
        prev = self._cum[e - 1] if e else 0
        return self.refs[e], int(self._starts[e][index - prev])

    def __getitem__(self, index: int) -> dict:
        ref, s = self.locate(index)
        e = s + self.window_size
        r = self._reader
        item: dict = {}
        for cam in self.cameras:
            key = CAMERAS[cam]
            item[key] = torch.from_numpy(np.ascontiguousarray(r.read(ref, key, s, e).transpose(0, 3, 1, 2)))
        for key in ("robot_obs", "scene_obs", "actions", "actions_abs"):
            item[key] = torch.from_numpy(r.read(ref, key, s, e).astype(np.float32, copy=False))
        item["text"] = r.texts(ref, self.feedback, e - 1, e)[0]
        return item

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_reader"] = EpisodeReader()
        return state
