"""`WindowDataset`: fixed-length windows of steps from a shard dataset, for behaviour cloning.

Windows never cross a trial boundary (the env restores the initial state between trials, so such a
window would splice two unrelated clips). `text` is the feedback in force at the window's last step.

With `fwd_pred_next_n=k > 1` (a decoder predicting action chunks), each item also holds every step's
next k actions, `action_chunk` (T, k, 7), and `chunk_mask` (T, k), False where step t + j lies past the
end of the window's trial (which is the episode's end for its last trial); the padded entries repeat the
trial's last action and must be ignored (the decoders' loss masks them). The windows are the same for
every k (a window near a trial's end keeps its masked chunk tail), so k = 1 items are unchanged.
h5py handles are opened lazily inside each DataLoader worker, so any number of workers read in parallel.

Reading is cached per process (each DataLoader worker has its own cache, bounded by `cache_mb`): an
episode's per-step arrays and texts are read once, whole, and each image chunk (16 unique frames, one
xz blob) is decoded once instead of once per window that shows it; a least-recently-used entry is
dropped when the bound is reached, so a dataset bigger than the cache streams through it. A batch is
fetched in one `__getitems__` call, which decodes each chunk its windows share once even with
`cache_mb=0`.
"""
from __future__ import annotations

import bisect
import json
import logging
import lzma
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from metamanip.data.shards import (CorruptShardError, EpisodeReader, EpisodeRef, TEXT_KINDS, image_layout,
                                   list_episodes, read_image_chunk, trial_segments)

log = logging.getLogger(__name__)

CAMERAS = {"static": "rgb_static", "gripper": "rgb_gripper"}
FEEDBACK_KINDS = ("train_feedback", "alt_feedback", "lm_feedback")
STEP_ARRAYS = ("robot_obs", "scene_obs", "actions", "actions_abs")
DEFAULT_CACHE_MB = 256.0
# trial: the feedback in force at a window's last step; first_trial: the episode's first feedback in every
# window (the feedback ablation: the policy cannot know what it already tried)
TEXT_MODES = ("trial", "first_trial")


class ByteLRU:
    """A least-recently-used map holding at most `max_bytes` of values (sizes given by the caller).

    A value larger than the whole bound is handed back but not kept; `max_bytes=0` keeps nothing."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max(0, int(max_bytes))
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.nbytes = 0
        self.peak_nbytes = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable, make: Callable[[], tuple[Any, int]]) -> Any:
        """The value under `key`, else `make()` -> (value, nbytes), kept when it fits."""
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return hit[0]
        self.misses += 1
        value, nbytes = make()
        nbytes = int(nbytes)
        if nbytes <= self.max_bytes:
            while self.nbytes + nbytes > self.max_bytes:
                _, (_, size) = self._items.popitem(last=False)
                self.nbytes -= size
                self.evictions += 1
            self._items[key] = (value, nbytes)
            self.nbytes += nbytes
            self.peak_nbytes = max(self.peak_nbytes, self.nbytes)
        return value

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0

    def info(self) -> dict:
        return {"entries": len(self._items), "nbytes": self.nbytes, "peak_nbytes": self.peak_nbytes,
                "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses,
                "evictions": self.evictions}


class _Episode:
    """What every window of one episode needs besides image pixels, read whole once."""

    __slots__ = ("arrays", "text_index", "strings", "images", "nbytes")

    def __init__(self, arrays: dict[str, np.ndarray], text_index: np.ndarray, strings: list[str],
                 images: dict[str, tuple[np.ndarray, tuple, np.ndarray | None]]):
        self.arrays, self.text_index, self.strings, self.images = arrays, text_index, strings, images
        self.nbytes = (sum(a.nbytes for a in arrays.values()) + text_index.nbytes
                       + sum(len(x) + 64 for x in strings)
                       + sum(idx.nbytes + (off.nbytes if off is not None else 0) for idx, _, off in images.values())
                       + 1024)


class WindowDataset(Dataset):
    """Windows of `window_size` consecutive steps inside one trial of one episode.

    Item: `rgb_static` uint8 (T,3,H,W), `rgb_gripper` uint8 (T,3,h,w) (the chosen `cameras`),
    `robot_obs` f32 (T,15), `scene_obs` f32 (T,24), `actions` f32 (T,7) relative with gripper ±1,
    `actions_abs` f32 (T,7), `text` str (`text="first_trial"`: the episode's first feedback in every window);
    with `fwd_pred_next_n` k > 1 also `action_chunk` f32 (T,k,7) and `chunk_mask` bool (T,k).

    `cache_mb`: bound of this process's cache of episode arrays and decoded image chunks, in MiB (per
    DataLoader worker; 0 = no cache across calls).
    """

    def __init__(self, root: str | os.PathLike, window_size: int = 12,
                 feedback: str = "train_feedback", cameras: Sequence[str] = ("static", "gripper"),
                 skip_corrupt: bool = False, episodes: Sequence[str] | None = None,
                 stride: int = 1, cache_mb: float = DEFAULT_CACHE_MB, text: str = "trial",
                 fwd_pred_next_n: int = 1):
        if isinstance(fwd_pred_next_n, bool) or int(fwd_pred_next_n) != fwd_pred_next_n or fwd_pred_next_n < 1:
            raise ValueError(f"fwd_pred_next_n ({fwd_pred_next_n!r}) must be an integer >= 1")
        self.fwd_pred_next_n = int(fwd_pred_next_n)
        if text not in TEXT_MODES:
            raise ValueError(f"text={text!r} is not a text mode; choose one of {TEXT_MODES}")
        self.text = text
        if feedback not in TEXT_KINDS:
            raise ValueError(f"feedback={feedback!r} is not a stored text; choose one of {TEXT_KINDS}")
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; choose from {sorted(CAMERAS)}")
        if window_size < 1 or stride < 1:
            raise ValueError(f"window_size ({window_size}) and stride ({stride}) must be >= 1")
        if cache_mb is None or float(cache_mb) < 0:
            raise ValueError(f"cache_mb ({cache_mb}) must be >= 0")
        self.cache_mb = float(cache_mb)
        self._cache = ByteLRU(int(self.cache_mb * 2**20))
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
        self._ends: list[np.ndarray] = []  # per window: the end (exclusive) of its trial
        short = 0
        for ref in refs:
            trial = self._reader.read(ref, "trial")
            starts, ends = [], []
            for _t, s, e in trial_segments(trial):
                if e - s < self.window_size:
                    short += 1
                    continue
                starts.append(np.arange(s, e - self.window_size + 1, stride))
                ends.append(np.full(len(starts[-1]), e, np.int64))
            self._starts.append(np.concatenate(starts) if starts else np.zeros(0, np.int64))
            self._ends.append(np.concatenate(ends) if ends else np.zeros(0, np.int64))
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
        e, s = self._locate_episode(index)
        return self.refs[e], s

    def __getitem__(self, index: int) -> dict:
        return self._items([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """A whole batch in one call (the DataLoader's fetcher uses it): chunks shared by its windows
        are decoded once."""
        return self._items(indices)

    def cache_info(self) -> dict:
        """This process's cache: entries, nbytes, peak_nbytes, max_bytes, hits, misses, evictions."""
        return self._cache.info()

    # reading -------------------------------------------------------------------------------------

    def _items(self, indices: Sequence[int]) -> list[dict]:
        memo: dict = {}  # this call's chunks, whatever the cache keeps
        return [self._window(*self._locate_window(int(i)), memo) for i in indices]

    def _locate_episode(self, index: int) -> tuple[int, int]:
        e, s, _end = self._locate_window(index)
        return e, s

    def _locate_window(self, index: int) -> tuple[int, int, int]:
        """Episode, first step and trial end (exclusive) of window `index`."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range (dataset has {len(self)})")
        e = bisect.bisect_right(self._cum, index)
        prev = self._cum[e - 1] if e else 0
        return e, int(self._starts[e][index - prev]), int(self._ends[e][index - prev])

    def _group(self, ref: EpisodeRef):
        return self._reader.file(ref.path)[ref.group]

    def _load_episode(self, e: int) -> tuple[_Episode, int]:
        ref = self.refs[e]
        try:
            g = self._group(ref)
            arrays = {k: np.asarray(g[k][()], np.float32) for k in STEP_ARRAYS}
            tg = g["text"]
            text_index = np.ascontiguousarray(tg["index"][:, TEXT_KINDS.index(self.feedback)])
            strings = json.loads(tg["strings"][()].tobytes())
            images = {}
            for cam in self.cameras:
                key = CAMERAS[cam]
                if key not in g:
                    raise KeyError(f"episode {ref.episode_id} in {ref.path} has no {key}: it was "
                                   f"collected states-only; run `metamanip-render` on the dataset first")
                ig = g[key]
                layout = image_layout(ig)
                offsets = ig["offsets"][()] if layout[0] == "lzma" else None
                images[key] = (ig["index"][()], layout, offsets)
        except (OSError, lzma.LZMAError) as err:
            raise CorruptShardError(ref.path, f"episode {ref.episode_id}: {err}") from err
        ep = _Episode(arrays, text_index, strings, images)
        return ep, ep.nbytes

    def _load_chunk(self, e: int, key: str, c: int, ep: _Episode) -> tuple[np.ndarray, int]:
        ref = self.refs[e]
        _index, layout, offsets = ep.images[key]
        try:
            block = read_image_chunk(self._group(ref)[key], c, layout, offsets)
        except (OSError, lzma.LZMAError) as err:
            raise CorruptShardError(ref.path, f"episode {ref.episode_id} {key} chunk {c}: {err}") from err
        block = np.ascontiguousarray(block.transpose(0, 3, 1, 2))  # (k,3,H,W), as items hold them
        return block, block.nbytes

    def _chunk(self, e: int, key: str, c: int, ep: _Episode, memo: dict) -> np.ndarray:
        ck = ("chunk", e, key, c)
        block = memo.get(ck)
        if block is None:
            block = memo[ck] = self._cache.get(ck, lambda: self._load_chunk(e, key, c, ep))
        return block

    def _window(self, e: int, s: int, end: int, memo: dict) -> dict:
        ek = ("episode", e)
        ep = memo.get(ek)
        if ep is None:
            ep = memo[ek] = self._cache.get(ek, lambda: self._load_episode(e))
        stop = s + self.window_size
        item: dict = {}
        for cam in self.cameras:
            key = CAMERAS[cam]
            index, (_codec, k, shape), _off = ep.images[key]
            rows = index[s:stop]
            chunks = rows // k
            c0 = int(chunks[0])
            if (chunks == c0).all():
                frames = self._chunk(e, key, c0, ep, memo)[rows - c0 * k]
            else:
                frames = np.empty((len(rows), shape[2], shape[0], shape[1]), np.uint8)
                for c in np.unique(chunks):
                    sel = chunks == c
                    frames[sel] = self._chunk(e, key, int(c), ep, memo)[rows[sel] - int(c) * k]
            item[key] = torch.from_numpy(frames)
        for key in STEP_ARRAYS:
            item[key] = torch.from_numpy(ep.arrays[key][s:stop].copy())
        if self.fwd_pred_next_n > 1:
            steps = np.arange(s, stop)[:, None] + np.arange(self.fwd_pred_next_n)[None, :]  # (T, k)
            item["action_chunk"] = torch.from_numpy(ep.arrays["actions"][np.minimum(steps, end - 1)])
            item["chunk_mask"] = torch.from_numpy(steps < end)
        at = 0 if self.text == "first_trial" else stop - 1
        item["text"] = ep.strings[int(ep.text_index[at])]
        return item

    def state_stats(self, keys: Sequence[str] = ("robot_obs", "scene_obs")) -> dict[str, np.ndarray]:
        """Mean and std per dimension of the concatenated state over every step of this dataset's episodes
        (what a state policy normalises with)."""
        rows = []
        for e in range(len(self.refs)):
            ep = self._cache.get(("episode", e), lambda e=e: self._load_episode(e))
            rows.append(np.concatenate([ep.arrays[k] for k in keys], axis=-1).astype(np.float64))
        x = np.concatenate(rows, axis=0)
        return {"mean": x.mean(0).astype(np.float32), "std": x.std(0).astype(np.float32)}

    def __getstate__(self) -> dict:  # pickled for spawned workers: no handles, an empty cache
        state = self.__dict__.copy()
        state["_reader"] = EpisodeReader()
        state["_cache"] = ByteLRU(self._cache.max_bytes)
        return state
