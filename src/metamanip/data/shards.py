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
        text/strings (S,) str; text/<kind> (T,) i32 indices into strings, kinds in TEXT_KINDS
        state/<path> (T,...)            flattened simulator state for re-rendering

Why HDF5 and not Zarr: one file per shard (an episode part or a finalised shard is a single file that
`os.replace` publishes atomically; Zarr is a directory tree that cannot be swapped in one step), h5py is
already a dependency, and HDF5's Fletcher-32 checksum filter lets a reader refuse a corrupted chunk.

Images are stored with a lossless temporal-delta codec: in each chunk of `k` frames the first frame is
stored as is and the others as the byte-wise difference to the previous frame (mod 256), then deflated.
Rendered frames change only where the robot moves, so the differences are mostly zeros; every chunk decodes
on its own, so a window reads at most two chunks. The codec is recorded in the dataset's `codec` attribute.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import h5py
import numpy as np

log = logging.getLogger(__name__)

FORMAT = "metamanip-shard"
FORMAT_VERSION = 1
TEXT_KINDS = ("train_feedback", "alt_feedback", "lm_feedback", "oracle_text", "instruction")
IMAGE_KEYS = ("rgb_static", "rgb_gripper")
STEP_KEYS = ("robot_obs", "scene_obs", "actions", "actions_abs", "trial", "reward")
SHARD_RE = re.compile(r"^shard-(\d{5})\.h5$")
PART_RE = re.compile(r"^ep-(.+)\.h5$")


class CorruptShardError(RuntimeError):
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


def encode_frames(frames: np.ndarray, chunk: int) -> np.ndarray:
    """Temporal-delta encode uint8 frames (T,...) in independent chunks of `chunk` frames."""
    out = frames.copy()
    if chunk <= 1 or len(frames) < 2:
        return out
    diff = np.diff(frames, axis=0)  # uint8 arithmetic wraps, which is what makes it lossless
    out[1:] = diff
    out[::chunk] = frames[::chunk]  # each chunk starts with a key frame
    return out


def decode_frames(ds: h5py.Dataset, start: int, stop: int) -> np.ndarray:
    """Read frames [start, stop) of an image dataset written with `encode_frames`."""
    k = int(ds.attrs.get("delta_chunk", 1))
    if k <= 1:
        return ds[start:stop]
    lo = (start // k) * k
    raw = ds[lo:stop]
    n = len(raw)
    pad = (-n) % k
    if pad:
        raw = np.concatenate([raw, np.zeros((pad,) + raw.shape[1:], raw.dtype)])
    blocks = raw.reshape((-1, k) + raw.shape[1:])
    dec = np.cumsum(blocks, axis=1, dtype=np.uint8).reshape(raw.shape)[:n]
    return dec[start - lo:]


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
    state_kinds: dict[str, str] = field(default_factory=dict)

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
            if not self.state_kinds:
                self.state_kinds = {k: ("scalar" if np.ndim(v) == 0 and not isinstance(
                    _leaf(state, k), np.ndarray) else "array") for k, v in flat.items()}
            self.states.append(flat)

    def set_last_reward(self, reward: float) -> None:
        self.arrays["reward"][-1] = np.float32(reward)

    def stacked(self) -> dict[str, np.ndarray]:
        out = {k: np.stack(v) for k, v in self.arrays.items()}
        if self.states:
            for name in self.states[0]:
                out[f"state/{name}"] = np.stack([s[name] for s in self.states])
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

    image_chunk: int = 16          # frames per HDF5 chunk and per delta group
    compression_level: int = 4     # gzip level
    step_chunk: int = 256          # rows per chunk for small per-step arrays


def write_episode_group(group: h5py.Group, arrays: Mapping[str, np.ndarray],
                        texts: Mapping[str, Sequence[str]], meta: Mapping[str, Any],
                        options: WriteOptions, state_kinds: Mapping[str, str] | None = None) -> None:
    """Write one episode (stacked per-step arrays, per-step texts, metadata) into `group`."""
    num_steps = len(arrays["actions"])
    for key, arr in arrays.items():
        if len(arr) != num_steps:
            raise ValueError(f"episode array {key!r} has {len(arr)} steps, actions have {num_steps}")
    group.attrs["num_steps"] = num_steps
    group.attrs["meta"] = json.dumps(dict(meta), sort_keys=True, default=_json_default)
    gz = dict(compression="gzip", compression_opts=options.compression_level, fletcher32=True)
    for key, arr in arrays.items():
        if key in IMAGE_KEYS:
            k = max(1, min(options.image_chunk, num_steps))
            ds = group.create_dataset(key, data=encode_frames(arr, k), chunks=(k,) + arr.shape[1:], **gz)
            ds.attrs["codec"] = f"delta{k}+gzip"
            ds.attrs["delta_chunk"] = k
        else:
            chunks = (max(1, min(options.step_chunk, num_steps)),) + arr.shape[1:]
            if arr.ndim == 0 or arr.size == 0:
                group.create_dataset(key, data=arr)
            else:
                group.create_dataset(key, data=arr, chunks=chunks, shuffle=arr.dtype.itemsize > 1, **gz)
    if state_kinds:
        group.attrs["state_kinds"] = json.dumps(dict(state_kinds), sort_keys=True)
    # texts: per-episode string table + per-step indices (vlen strings cannot be compressed by HDF5)
    table: dict[str, int] = {}
    tg = group.create_group("text")
    for kind in TEXT_KINDS:
        values = texts.get(kind, [""] * num_steps)
        if len(values) != num_steps:
            raise ValueError(f"text {kind!r} has {len(values)} steps, actions have {num_steps}")
        idx = np.fromiter((table.setdefault(v, len(table)) for v in values), np.int32, num_steps)
        tg.create_dataset(kind, data=idx, chunks=(max(1, min(options.step_chunk, num_steps)),), **gz)
    strings = sorted(table, key=table.__getitem__)
    tg.create_dataset("strings", data=np.array(strings, dtype=h5py.string_dtype()))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


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
        self.file = h5py.File(self.tmp, "w")
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
            write_episode_group(g, arrays, buffer.texts, meta, self.options, buffer.state_kinds)
        return path

    def finalise(self) -> Path:
        """Gather all part files into the shard file (atomic), then delete the parts."""
        if self.finalised and not self.parts.exists():
            return self.final
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
                for key in STEP_KEYS + ("text/strings",) + tuple(f"text/{k}" for k in TEXT_KINDS):
                    if key not in g:
                        raise CorruptShardError(path, f"episode {eid} lacks {key!r}")
                for key in STEP_KEYS + IMAGE_KEYS + tuple(f"text/{k}" for k in TEXT_KINDS):
                    if key in g and g[key].shape[0] != n:
                        raise CorruptShardError(path, f"episode {eid}: {key} has {g[key].shape[0]} "
                                                      f"steps, expected {n}")
                if verify:
                    g.visititems(_read_all)
                episodes.append(EpisodeRef(path, eid, n, json.loads(g.attrs["meta"]),
                                           all(k in g for k in IMAGE_KEYS)))
            shard_id = int(f.attrs.get("shard_id", -1))
    except CorruptShardError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
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

    def file(self, path: Path) -> h5py.File:
        if os.getpid() != self._pid:  # forked into a DataLoader worker: never share handles
            self._files = {}
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
                return decode_frames(g[key], start, stop)
            return g[key][start:stop]
        except OSError as e:
            raise CorruptShardError(ref.path, f"episode {ref.episode_id} {key}: {e}") from e

    def texts(self, ref: EpisodeRef, kind: str, start: int = 0, stop: int | None = None) -> list[str]:
        if kind not in TEXT_KINDS:
            raise ValueError(f"unknown text kind {kind!r}; choose one of {TEXT_KINDS}")
        g = self.file(ref.path)[ref.group]["text"]
        strings = g["strings"].asstr()[()]
        idx = g[kind][start:(ref.num_steps if stop is None else stop)]
        return [strings[i] for i in idx]

    def state_names(self, ref: EpisodeRef) -> list[str]:
        g = self.file(ref.path)[ref.group]
        if "state" not in g:
            return []
        names: list[str] = []
        g["state"].visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        return names

    def states(self, ref: EpisodeRef) -> Iterator[dict]:
        """The simulator state of every step, as `get_state()` returned it."""
        g = self.file(ref.path)[ref.group]
        if "state" not in g:
            raise KeyError(f"episode {ref.episode_id} in {ref.path} stored no simulator state")
        names = self.state_names(ref)
        data = {n: g["state"][n][()] for n in names}
        kinds = json.loads(g.attrs.get("state_kinds", "{}"))
        for t in range(ref.num_steps):
            yield unflatten_state({n: data[n][t] for n in names}, kinds)

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

    def __getstate__(self) -> dict:  # picklable for DataLoader workers: handles are reopened lazily
        return {"_files": {}, "_pid": -1}


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
