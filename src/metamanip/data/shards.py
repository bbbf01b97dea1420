"""The on-disk dataset format: HDF5 shards of whole episodes, written so that a crash loses at most one.

Layout of a dataset directory (one per collection)::

    collection.json                    config + fingerprint that made it (refuses a foreign config)
    shard-00000.h5                     finalised shard: every episode the shard collected
    shard-00001.parts/ep-*.h5          a shard still being collected: one small file per episode
    shard-00001.progress.json          attempts / successes so far (oracle success rate across resumes)
    card.json, card.md                 dataset card

Every `.h5` file, finalised shard or episode part, has the same layout, so a reader sees all of them alike:

    /  attrs: format="metamanip-shard", format_version, shard_id
    /episodes/<episode_id>/            attrs: num_steps, meta (JSON)
        rgb_static (T,H,W,3) u8, rgb_gripper (T,h,w,3) u8     only when images were rendered
        robot_obs (T,15) f32, scene_obs (T,24) f32
        actions (T,7) f32 relative, actions_abs (T,7) f32
        trial (T,) i16, reward (T,) f32
        text/index (T,K) i32           per step, for each of TEXT_KINDS, a row of the string table
        text/strings (B,) u8            the episode's string table, UTF-8 JSON (HDF5 cannot compress
                                        variable-length strings; a byte array compresses)
        state (T,D) f64                 simulator state for re-rendering, every `get_state()` field
                                        flattened into columns (layout in the `state_layout` attribute)

Why HDF5 and not Zarr: one file per shard (an episode part or a finalised shard is a single file that
`os.replace` publishes atomically; Zarr is a directory tree that cannot be swapped in one step), h5py is
already a dependency, and HDF5's Fletcher-32 checksum filter lets a reader refuse a corrupted chunk.

Images are stored losslessly, deduplicated and compressed in chunks of frames (`<key>/` groups):

    <key>/index (T,) i32      row of the episode's unique-frame table that step t shows
    <key>/data, <key>/offsets  codec "lzma": the unique frames, `k` per xz blob (blob i is
                               data[offsets[i]:offsets[i+1]], with the xz format's own CRC)
    <key>/frames (U,H,W,3)     codec "gzip": the unique frames as a plain gzip+Fletcher-32 dataset

Every trial restores the same initial state and the scripted oracle repeats the rewarding task with the
same closed-loop motion, so many frames recur byte for byte (a third to three quarters of an Explore
episode): they are stored once. LZMA over a chunk of consecutive frames finds the parts of the picture
that only moved; it is several times smaller than per-frame deflate (benchmarks/collect_speed.py). The
"gzip" codec trades size for files any HDF5 tool reads without our reader.
"""
from __future__ import annotations

import json
import logging
import lzma
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import h5py
import numpy as np

from metamanip.atomic import json_default
from metamanip.errors import UserError

log = logging.getLogger(__name__)

FORMAT = "metamanip-shard"
FORMAT_VERSION = 1
TEXT_KINDS = ("train_feedback", "alt_feedback", "lm_feedback", "oracle_text", "instruction")
IMAGE_KEYS = ("rgb_static", "rgb_gripper")
STEP_KEYS = ("robot_obs", "scene_obs", "actions", "actions_abs", "trial", "reward")
SHARD_RE = re.compile(r"^shard-(\d{5})\.h5$")
PART_RE = re.compile(r"^ep-(.+)\.h5$")


class CorruptShardError(UserError, RuntimeError):
    """A shard file that cannot be read completely (truncated, corrupted bytes, wrong format)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        super().__init__(
            f"corrupt or truncated shard {self.path}: {reason}. Delete it and re-collect that shard "
            f"(`metamanip-collect` resumes), or read the rest with skip_corrupt=True "
            f"(data.skip_corrupt=true).")


def shard_path(root: str | os.PathLike, shard_id: int) -> Path:
    return Path(root) / f"shard-{shard_id:05d}.h5"


def parts_dir(root: str | os.PathLike, shard_id: int) -> Path:
    return Path(root) / f"shard-{shard_id:05d}.parts"


# --------------------------------------------------------------------------------------------------
# image codec


IMAGE_CODECS = ("lzma", "gzip")


def dedup_frames(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, unique): `unique[index[t]] == frames[t]`, unique frames in order of first appearance."""
    seen: dict[bytes, int] = {}
    index = np.empty(len(frames), np.int32)
    rows: list[int] = []
    for t, f in enumerate(frames):
        key = f.tobytes()
        row = seen.get(key)
        if row is None:
            row = seen[key] = len(rows)
            rows.append(t)
        index[t] = row
    return index, frames[rows]


def write_images(group: h5py.Group, key: str, frames: np.ndarray, options: "WriteOptions") -> None:
    """Write uint8 frames (T,H,W,C) as a deduplicated, compressed image group `key`."""
    if options.image_codec not in IMAGE_CODECS:
        raise ValueError(f"image codec {options.image_codec!r}: use one of {IMAGE_CODECS}")
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    index, unique = dedup_frames(frames)
    g = group.create_group(key)
    g.attrs["codec"] = options.image_codec
    g.attrs["frame_shape"] = unique.shape[1:]
    g.create_dataset("index", data=index, chunks=(max(1, min(4096, len(index))),), compression="gzip",
                     fletcher32=True)
    if options.image_codec == "lzma":
        k = max(1, int(options.image_chunk))
        blobs = [lzma.compress(unique[i:i + k].tobytes(), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                               preset=int(options.lzma_preset)) for i in range(0, len(unique), k)]
        g.attrs["frames_per_chunk"] = k
        g.create_dataset("offsets", data=np.cumsum([0] + [len(b) for b in blobs], dtype=np.int64))
        g.create_dataset("data", data=np.frombuffer(b"".join(blobs), np.uint8))
    else:
        g.create_dataset("frames", data=unique, chunks=(1,) + unique.shape[1:], compression="gzip",
                         compression_opts=options.compression_level, fletcher32=True)


class _ChunkCache:
    """The few most recently decoded lzma chunks (windows of one episode share chunks)."""

    def __init__(self, size: int = 8):
        self.size = size
        self.items: dict[tuple, np.ndarray] = {}

    def get(self, key: tuple, make) -> np.ndarray:
        arr = self.items.pop(key, None)
        if arr is None:
            arr = make()
        self.items[key] = arr
        while len(self.items) > self.size:
            self.items.pop(next(iter(self.items)))
        return arr


def image_layout(g: h5py.Group) -> tuple[str, int, tuple[int, ...]]:
    """(codec, frames per chunk, frame shape) of an image group written by `write_images`; a gzip group
    is read in chunks of 16 unique frames."""
    codec = g.attrs["codec"]
    if codec not in IMAGE_CODECS:
        raise ValueError(f"unknown image codec {codec!r} in {g.name}; update metamanip")
    k = int(g.attrs["frames_per_chunk"]) if codec == "lzma" else 16
    return codec, k, tuple(int(v) for v in g.attrs["frame_shape"])


def read_image_chunk(g: h5py.Group, c: int, layout: tuple[str, int, tuple[int, ...]] | None = None,
                     offsets: np.ndarray | None = None) -> np.ndarray:
    """Unique frames [c*k, (c+1)*k) of an image group, decoded (one xz blob for the lzma codec).
    `offsets` (the group's `offsets` array, read once) saves a read per chunk."""
    codec, k, shape = layout or image_layout(g)
    if codec == "gzip":
        return g["frames"][c * k:(c + 1) * k]
    if offsets is None:
        lo, hi = (int(v) for v in g["offsets"][c:c + 2])
    else:
        lo, hi = int(offsets[c]), int(offsets[c + 1])
    raw = lzma.decompress(g["data"][lo:hi].tobytes(), format=lzma.FORMAT_XZ)
    return np.frombuffer(raw, np.uint8).reshape((-1,) + shape)


def read_images(g: h5py.Group, start: int, stop: int, cache: _ChunkCache | None = None) -> np.ndarray:
    """Frames [start, stop) of an image group written by `write_images`."""
    idx = g["index"][start:stop]
    shape = tuple(int(v) for v in g.attrs["frame_shape"])
    codec = g.attrs["codec"]
    if len(idx) == 0:
        return np.zeros((0,) + shape, np.uint8)
    if codec == "gzip":
        rows, inverse = np.unique(idx, return_inverse=True)
        return g["frames"][rows][inverse.reshape(-1)]
    if codec != "lzma":
        raise ValueError(f"unknown image codec {codec!r} in {g.name}; update metamanip")
    layout = image_layout(g)
    k = layout[1]
    out = np.empty((len(idx),) + shape, np.uint8)
    cache = cache or _ChunkCache(0)
    for c in np.unique(idx // k):
        block = cache.get((g.file.filename, g.name, int(c)), lambda c=int(c): read_image_chunk(g, c, layout))
        sel = idx // k == c
        out[sel] = block[idx[sel] - c * k]
    return out


def image_steps(g: h5py.Group) -> int:
    return int(g["index"].shape[0])


def verify_images(g: h5py.Group) -> None:
    """Decode every chunk of an image group (raises on a checksum or format error)."""
    if g.attrs["codec"] == "lzma":
        offsets = g["offsets"][()]
        data = g["data"]
        for c in range(len(offsets) - 1):
            lzma.decompress(data[offsets[c]:offsets[c + 1]].tobytes(), format=lzma.FORMAT_XZ)


# --------------------------------------------------------------------------------------------------
# simulator state flattening (nested dict of arrays -> flat name -> array)


def flatten_state(state: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Flatten a nested dict of numbers/arrays into `a/b/c -> ndarray` for per-step storage."""
    flat: dict[str, np.ndarray] = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_state(value, name + "/"))
        else:
            arr = np.asarray(value)
            if arr.dtype == object or arr.dtype.kind in "USV":
                raise TypeError(f"simulator state entry {name!r} is not numeric ({arr.dtype}); "
                                f"get_state() must return numbers and arrays only")
            flat[name] = arr
    return flat


def unflatten_state(flat: Mapping[str, np.ndarray], kinds: Mapping[str, str] | None = None) -> dict:
    """Inverse of `flatten_state`; `kinds` maps a name to "scalar" to give back Python numbers."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        parts = name.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if kinds and kinds.get(name) == "scalar":
            value = np.asarray(value).item()
        node[parts[-1]] = value
    return out


# --------------------------------------------------------------------------------------------------
# an episode in memory


@dataclass
class EpisodeBuffer:
    """Accumulates the steps of one episode in memory until it is written whole."""

    arrays: dict[str, list[np.ndarray]] = field(default_factory=dict)
    texts: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in TEXT_KINDS})
    states: list[dict[str, np.ndarray]] = field(default_factory=list)
    state_layout: list[tuple[str, list[int], str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.arrays.get("actions", []))

    def add_step(self, *, obs: Mapping[str, np.ndarray], action: np.ndarray, action_abs: np.ndarray,
                 trial: int, reward: float, texts: Mapping[str, str],
                 state: Mapping[str, Any] | None = None) -> None:
        """Record the observation an action was chosen on, the action, and the text in force."""
        row = {
            "robot_obs": np.asarray(obs["robot_obs"], np.float32),
            "scene_obs": np.asarray(obs["scene_obs"], np.float32),
            "actions": np.asarray(action, np.float32),
            "actions_abs": np.asarray(action_abs, np.float32),
            "trial": np.int16(trial),
            "reward": np.float32(reward),
        }
        for key in IMAGE_KEYS:
            if key in obs:
                row[key] = np.asarray(obs[key], np.uint8)
        for key, value in row.items():
            self.arrays.setdefault(key, []).append(value)
        for kind in TEXT_KINDS:
            self.texts[kind].append(str(texts.get(kind, "")))
        if state is not None:
            flat = flatten_state(state)
            if not self.state_layout:  # (name, shape, "scalar"|"array", dtype) of every field
                self.state_layout = [(k, list(np.shape(v)), "scalar" if np.ndim(v) == 0 and not isinstance(
                    _leaf(state, k), np.ndarray) else "array", np.asarray(v).dtype.str) for k, v in flat.items()]
            self.states.append(flat)

    def stacked(self) -> dict[str, np.ndarray]:
        out = {k: np.stack(v) for k, v in self.arrays.items()}
        if self.states:
            names = [f[0] for f in self.state_layout]
            out["state"] = np.stack([np.concatenate([np.asarray(s[n], np.float64).reshape(-1) for n in names])
                                     for s in self.states])
        return out


def _leaf(state: Mapping[str, Any], name: str) -> Any:
    node: Any = state
    for p in name.split("/"):
        node = node[p]
    return node


# --------------------------------------------------------------------------------------------------
# writing


@dataclass
class WriteOptions:
    """How episodes are compressed. Defaults chosen by benchmarks/collect_speed.py."""

    image_codec: str = "lzma"      # "lzma" (smallest) | "gzip" (plain HDF5, any tool reads it)
    image_chunk: int = 16          # frames per lzma blob
    lzma_preset: int = 6           # xz preset 0-9: higher is smaller and slower to write
    compression_level: int = 4     # gzip level of everything else
    step_chunk: int = 256          # rows per chunk for small per-step arrays


def write_episode_group(group: h5py.Group, arrays: Mapping[str, np.ndarray],
                        texts: Mapping[str, Sequence[str]], meta: Mapping[str, Any],
                        options: WriteOptions, state_layout: Sequence | None = None) -> None:
    """Write one episode (stacked per-step arrays, per-step texts, metadata) into `group`."""
    num_steps = len(arrays["actions"])
    for key, arr in arrays.items():
        if len(arr) != num_steps:
            raise ValueError(f"episode array {key!r} has {len(arr)} steps, actions have {num_steps}")
    group.attrs["num_steps"] = num_steps
    group.attrs["meta"] = json.dumps(dict(meta), sort_keys=True, default=json_default)
    gz = dict(compression="gzip", compression_opts=options.compression_level, fletcher32=True)
    for key, arr in arrays.items():
        if key in IMAGE_KEYS:
            write_images(group, key, arr, options)
        else:
            chunks = (max(1, min(options.step_chunk, num_steps)),) + arr.shape[1:]
            if arr.ndim == 0 or arr.size == 0:
                group.create_dataset(key, data=arr)
            else:
                group.create_dataset(key, data=arr, chunks=chunks, shuffle=arr.dtype.itemsize > 1, **gz)
    if state_layout:
        group.attrs["state_layout"] = json.dumps([list(f) for f in state_layout])
    # texts: per-episode string table + per-step indices
    table: dict[str, int] = {}
    tg = group.create_group("text")
    index = np.zeros((num_steps, len(TEXT_KINDS)), np.int32)
    for j, kind in enumerate(TEXT_KINDS):
        values = texts.get(kind, [""] * num_steps)
        if len(values) != num_steps:
            raise ValueError(f"text {kind!r} has {len(values)} steps, actions have {num_steps}")
        index[:, j] = np.fromiter((table.setdefault(v, len(table)) for v in values), np.int32, num_steps)
    tg.attrs["kinds"] = list(TEXT_KINDS)
    tg.create_dataset("index", data=index, chunks=(max(1, min(options.step_chunk, num_steps)), len(TEXT_KINDS)),
                      shuffle=True, **gz)
    blob = json.dumps(sorted(table, key=table.__getitem__)).encode()
    tg.create_dataset("strings", data=np.frombuffer(blob, np.uint8), chunks=(max(1, min(len(blob), 1 << 16)),),
                      **gz)


def _init_file(f: h5py.File, shard_id: int) -> None:
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["shard_id"] = shard_id
    f.require_group("episodes")


def atomic_h5(path: Path) -> "_AtomicH5":
    """Open a temporary HDF5 file next to `path`; on clean exit it is fsynced and renamed onto `path`."""
    return _AtomicH5(path)


class _AtomicH5:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp: Path | None = None
        self.file: h5py.File | None = None

    def __enter__(self) -> h5py.File:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(tmp)
        # HDF5 >= 1.10 structures: a small dataset costs ~0.4 kB of metadata instead of ~3 kB
        self.file = h5py.File(self.tmp, "w", libver=("v110", "latest"))
        return self.file

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.file is not None and self.tmp is not None
        self.file.close()
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardWriter:
    """Writes the episodes of one shard: each episode atomically as its own part file, then
    `finalise()` gathers the parts into `shard-XXXXX.h5` (also atomically) and removes them.

    A process killed at any moment leaves only whole episode files (and maybe a `.tmp` that the next
    writer deletes), so a resumed collection continues without duplicates or half-written episodes.
    """

    def __init__(self, root: str | os.PathLike, shard_id: int, options: WriteOptions | None = None):
        self.root = Path(root)
        self.shard_id = int(shard_id)
        self.options = options or WriteOptions()
        self.parts = parts_dir(self.root, self.shard_id)
        self.final = shard_path(self.root, self.shard_id)
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in list(self.root.glob(f".{self.final.name}.*.tmp")) + (
                list(self.parts.glob(".*.tmp")) if self.parts.is_dir() else []):
            log.info("removing half-written file %s left by an interrupted run", leftover)
            leftover.unlink(missing_ok=True)

    @property
    def finalised(self) -> bool:
        return self.final.exists()

    def existing_episodes(self) -> list["EpisodeRef"]:
        """Episodes this shard already holds (finalised file and parts), for resuming."""
        files = [self.final] if self.final.exists() else []
        if self.parts.is_dir():
            files += sorted(p for p in self.parts.iterdir() if PART_RE.match(p.name))
        refs: dict[str, EpisodeRef] = {}
        for path in files:
            for ref in open_shard(path).episodes:
                refs.setdefault(ref.episode_id, ref)
        return list(refs.values())

    def write_episode(self, episode_id: str, buffer: EpisodeBuffer, meta: Mapping[str, Any]) -> Path:
        """Write one whole episode as a part file, atomically."""
        if self.finalised:
            raise RuntimeError(f"shard {self.final} is already finalised; it takes no more episodes")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", episode_id):
            raise ValueError(f"episode id {episode_id!r} may only hold letters, digits, '_', '.', '-'")
        path = self.parts / f"ep-{episode_id}.h5"
        if path.exists():
            raise FileExistsError(f"episode {episode_id} already written to {path}")
        arrays = buffer.stacked()
        meta = dict(meta, episode_id=episode_id, shard_id=self.shard_id)
        with atomic_h5(path) as f:
            _init_file(f, self.shard_id)
            g = f["episodes"].create_group(episode_id)
            write_episode_group(g, arrays, buffer.texts, meta, self.options, buffer.state_layout)
        return path

    def finalise(self) -> Path:
        """Gather all part files into the shard file (atomic), then delete the parts."""
        if self.finalised and not self.parts.exists():
            return self.final  # nothing to gather (a finalise killed after its rename left parts: redo)
        sources = [self.final] if self.final.exists() else []
        if self.parts.is_dir():
            sources += sorted(p for p in self.parts.iterdir() if PART_RE.match(p.name))
        gather_files(sources, self.final, self.shard_id)
        if self.parts.is_dir():
            shutil.rmtree(self.parts)
        log.info("finalised shard %s", self.final)
        return self.final


def gather_files(sources: Iterable[Path], dest: Path, shard_id: int,
                 rename: Mapping[tuple[Path, str], str] | None = None) -> int:
    """Copy every episode group of `sources` (raw chunks, no re-compression) into `dest`, atomically.

    Validates every source first, so that a corrupt input is refused before anything is written.
    Returns the number of episodes written. Duplicate episode ids are kept once.
    """
    shards = [open_shard(p) for p in sources]
    seen: set[str] = set()
    n = 0
    with atomic_h5(dest) as out:
        _init_file(out, shard_id)
        for shard in shards:
            with h5py.File(shard.path, "r") as f:
                for ref in shard.episodes:
                    name = (rename or {}).get((shard.path, ref.episode_id), ref.episode_id)
                    if name in seen:
                        log.warning("episode %s appears twice (in %s); keeping the first", name, shard.path)
                        continue
                    seen.add(name)
                    f.copy(f["episodes"][ref.episode_id], out["episodes"], name=name)
                    n += 1
    return n


# --------------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class EpisodeRef:
    """Where one episode lives, its length, its metadata and its trial boundaries."""

    path: Path
    episode_id: str
    num_steps: int
    meta: dict
    has_images: bool

    @property
    def group(self) -> str:
        return f"episodes/{self.episode_id}"


@dataclass
class ShardInfo:
    path: Path
    shard_id: int
    episodes: list[EpisodeRef]


def open_shard(path: str | os.PathLike, verify: bool = False) -> ShardInfo:
    """Open and validate a shard file; `verify` also reads every chunk (checksums).

    Raises `CorruptShardError` naming the file when it is truncated, corrupted or not a shard.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise CorruptShardError(path, f"not a {FORMAT} file (format attribute "
                                              f"{f.attrs.get('format')!r})")
            version = int(f.attrs.get("format_version", -1))
            if version > FORMAT_VERSION:
                raise CorruptShardError(path, f"format version {version} is newer than this reader "
                                              f"({FORMAT_VERSION}); update metamanip")
            episodes = []
            for eid, g in f["episodes"].items():
                n = int(g.attrs["num_steps"])
                for key in STEP_KEYS + ("text/strings", "text/index"):
                    if key not in g:
                        raise CorruptShardError(path, f"episode {eid} lacks {key!r}")
                for key in STEP_KEYS + ("text/index",):
                    if g[key].shape[0] != n:
                        raise CorruptShardError(path, f"episode {eid}: {key} has {g[key].shape[0]} "
                                                      f"steps, expected {n}")
                for key in IMAGE_KEYS:
                    if key in g and image_steps(g[key]) != n:
                        raise CorruptShardError(path, f"episode {eid}: {key} has {image_steps(g[key])} "
                                                      f"steps, expected {n}")
                if verify:
                    g.visititems(_read_all)
                    for key in IMAGE_KEYS:
                        if key in g:
                            verify_images(g[key])
                episodes.append(EpisodeRef(path, eid, n, json.loads(g.attrs["meta"]),
                                           all(k in g for k in IMAGE_KEYS)))
            shard_id = int(f.attrs.get("shard_id", -1))
    except CorruptShardError:
        raise
    except (OSError, KeyError, ValueError, TypeError, lzma.LZMAError) as e:
        raise CorruptShardError(path, f"{type(e).__name__}: {e}") from e
    return ShardInfo(path, shard_id, episodes)


def _read_all(_name: str, obj: Any) -> None:
    # returns None so that visititems keeps going; reading runs the Fletcher-32 checksums
    if isinstance(obj, h5py.Dataset):
        obj[()]


def dataset_files(root: str | os.PathLike, include_parts: bool = True) -> list[Path]:
    """All shard files of a dataset directory: finalised shards, then pending episode parts."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist; collect one with "
                                f"`metamanip-collect` or fix data.root / paths.data_dir")
    # parts first: a shard finalised meanwhile has its final file by the time we list those
    parts: list[Path] = []
    if include_parts:
        for d in sorted(root.glob("shard-*.parts")):
            try:
                parts += sorted(p for p in d.iterdir() if PART_RE.match(p.name))
            except FileNotFoundError:  # finalised while we listed
                continue
    files = sorted(p for p in root.iterdir() if SHARD_RE.match(p.name))
    files += sorted(p for p in root.iterdir() if p.suffix == ".h5" and not SHARD_RE.match(p.name)
                    and not p.name.startswith("."))
    return files + parts


def list_episodes(root: str | os.PathLike, skip_corrupt: bool = False, verify: bool = False,
                  include_parts: bool = True) -> list[EpisodeRef]:
    """Every episode of a dataset directory (or of one shard file), each once.

    A corrupt shard raises `CorruptShardError` with its name, or is logged and skipped with
    `skip_corrupt=True`.
    """
    root = Path(root)
    for _ in range(10):  # a shard finalised while we listed it moves its parts: list again
        files = [root] if root.is_file() else dataset_files(root, include_parts)
        refs: dict[str, EpisodeRef] = {}
        vanished = False
        for path in files:
            try:
                info = open_shard(path, verify=verify)
            except CorruptShardError as e:
                if not path.exists():
                    vanished = True
                    break
                if not skip_corrupt:
                    raise
                log.warning("skipping %s", e)
                continue
            for ref in info.episodes:
                refs.setdefault(ref.episode_id, ref)
        if not vanished:
            break
    return sorted(refs.values(), key=lambda r: r.episode_id)


class EpisodeReader:
    """Reads slices of episodes; keeps h5py files open, one handle per path and per process."""

    def __init__(self) -> None:
        self._files: dict[Path, h5py.File] = {}
        self._pid = os.getpid()
        self._cache = _ChunkCache()
        self._strings: dict[tuple[Path, str], list[str]] = {}

    def file(self, path: Path) -> h5py.File:
        if os.getpid() != self._pid:  # forked into a DataLoader worker: never share handles
            self._files = {}
            self._cache = _ChunkCache()
            self._pid = os.getpid()
        f = self._files.get(path)
        if f is None:
            try:
                f = h5py.File(path, "r")
            except OSError as e:
                raise CorruptShardError(path, str(e)) from e
            self._files[path] = f
        return f

    def read(self, ref: EpisodeRef, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = ref.num_steps if stop is None else stop
        g = self.file(ref.path)[ref.group]
        try:
            if key in IMAGE_KEYS:
                if key not in g:
                    raise KeyError(f"episode {ref.episode_id} in {ref.path} has no {key}: it was "
                                   f"collected states-only; run `metamanip-render` on the dataset first")
                return read_images(g[key], start, stop, self._cache)
            return g[key][start:stop]
        except (OSError, lzma.LZMAError) as e:
            raise CorruptShardError(ref.path, f"episode {ref.episode_id} {key}: {e}") from e

    def texts(self, ref: EpisodeRef, kind: str, start: int = 0, stop: int | None = None) -> list[str]:
        if kind not in TEXT_KINDS:
            raise ValueError(f"unknown text kind {kind!r}; choose one of {TEXT_KINDS}")
        g = self.file(ref.path)[ref.group]["text"]
        strings = self._strings.get((ref.path, ref.episode_id))
        if strings is None:
            strings = self._strings[(ref.path, ref.episode_id)] = json.loads(g["strings"][()].tobytes())
        idx = g["index"][start:(ref.num_steps if stop is None else stop), TEXT_KINDS.index(kind)]
        return [strings[i] for i in idx]

    def states(self, ref: EpisodeRef) -> Iterator[dict]:
        """The simulator state of every step, as `get_state()` returned it."""
        g = self.file(ref.path)[ref.group]
        if "state" not in g:
            raise KeyError(f"episode {ref.episode_id} in {ref.path} stored no simulator state "
                           f"(collected with collect.record_state=false)")
        data = g["state"][()]
        layout = json.loads(g.attrs["state_layout"])
        kinds = {name: kind for name, _shape, kind, _dt in layout}
        cols, col = [], 0
        for name, shape, _kind, dtype in layout:
            n = int(np.prod(shape)) if shape else 1
            cols.append((name, shape, np.dtype(dtype), col, col + n))
            col += n
        for t in range(ref.num_steps):
            row = data[t]
            yield unflatten_state({name: row[a:b].astype(dt).reshape(shape) for name, shape, dt, a, b in cols}, kinds)

    def episode(self, ref: EpisodeRef, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        keys = list(keys) if keys is not None else list(STEP_KEYS) + [
            k for k in IMAGE_KEYS if ref.has_images]
        return {k: self.read(ref, k) for k in keys}

    def close(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except Exception:  # pragma: no cover
                pass
        self._files = {}
        self._cache = _ChunkCache()
        self._strings = {}

    def __getstate__(self) -> dict:  # picklable for DataLoader workers: handles are reopened lazily
        return {"_files": {}, "_pid": -1, "_cache": _ChunkCache(), "_strings": {}}


def trial_segments(trial: np.ndarray) -> list[tuple[int, int, int]]:
    """(trial index, start, stop) of each run of equal trial indices."""
    trial = np.asarray(trial)
    if len(trial) == 0:
        return []
    cuts = np.flatnonzero(np.diff(trial)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(trial)]])
    return [(int(trial[s]), int(s), int(e)) for s, e in zip(starts, stops)]


def merge_dataset(root: str | os.PathLike, dest: str | os.PathLike | None = None,
                  skip_corrupt: bool = False) -> Path:
    """Merge every shard (and pending part) of a dataset into one shard file `dest`."""
    root = Path(root)
    dest = Path(dest) if dest is not None else root / "merged" / shard_path(root, 0).name
    sources = []
    for p in dataset_files(root):
        try:
            open_shard(p)
        except CorruptShardError as e:
            if not skip_corrupt:
                raise
            log.warning("skipping %s", e)
            continue
        sources.append(p)
    n = gather_files(sources, dest, 0)
    log.info("merged %d episodes from %d files into %s", n, len(sources), dest)
    return dest
