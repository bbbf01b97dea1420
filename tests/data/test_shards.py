"""Shard format: round trip, atomic parts, finalise, merge, corrupt/truncated shards refused by name."""
from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import make_buffer  # noqa: E402

from metamanip.data.shards import (CorruptShardError, EpisodeReader, ShardWriter, WriteOptions,  # noqa: E402
                                   _ChunkCache, dedup_frames, list_episodes, merge_dataset, open_shard,
                                   read_images, shard_path, trial_segments, write_images)


@pytest.mark.parametrize("codec,k", [("lzma", 1), ("lzma", 4), ("lzma", 16), ("gzip", 1)])
def test_image_codec_is_lossless_for_any_window(codec, k):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (37, 5, 4, 3), dtype=np.uint8)
    frames[20:30] = frames[3:13]  # a repeated trial: stored once
    with h5py.File("mem.h5", "w", driver="core", backing_store=False) as f:
        write_images(f, "x", frames, WriteOptions(image_codec=codec, image_chunk=k, lzma_preset=1))
        g = f["x"]
        assert g.attrs["codec"] == codec
        cache = _ChunkCache(2)
        for s, e in [(0, 37), (3, 15), (15, 17), (36, 37), (16, 32), (20, 30), (5, 5)]:
            np.testing.assert_array_equal(read_images(g, s, e, cache), frames[s:e])


def test_dedup_keeps_first_appearance_order():
    frames = np.array([[1], [2], [1], [3], [2]], np.uint8)
    index, unique = dedup_frames(frames)
    assert index.tolist() == [0, 1, 0, 2, 1] and unique[:, 0].tolist() == [1, 2, 3]


def test_repeated_frames_cost_nothing(tmp_path):
    rng = np.random.default_rng(1)
    clip = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    sizes = {}
    for name, frames in (("once", clip), ("thrice", np.concatenate([clip, clip, clip]))):
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            write_images(f, "x", frames, WriteOptions())
            sizes[name] = f["x/data"].size
    assert sizes["thrice"] == sizes["once"]


def test_round_trip_episode(tmp_path):
    buf = make_buffer(num_trials=3, steps_per_trial=5)
    w = ShardWriter(tmp_path, 0, WriteOptions(image_chunk=4))
    w.write_episode("s0-e0", buf, {"meta_task": "open_drawer", "bucket": 2})
    refs = list_episodes(tmp_path)
    assert [r.episode_id for r in refs] == ["s0-e0"]
    ref = refs[0]
    assert ref.num_steps == 15 and ref.has_images and ref.meta["bucket"] == 2
    r = EpisodeReader()
    expected = buf.stacked()
    for key in ("rgb_static", "rgb_gripper", "robot_obs", "scene_obs", "actions", "actions_abs", "trial",
                "reward"):
        np.testing.assert_array_equal(r.read(ref, key), expected[key])
    np.testing.assert_array_equal(r.read(ref, "rgb_static", 5, 11), expected["rgb_static"][5:11])
    assert r.texts(ref, "train_feedback") == buf.texts["train_feedback"]
    assert r.texts(ref, "oracle_text", 0, 1)[0].startswith("Explanation:")
    states = list(r.states(ref))
    assert len(states) == 15 and states[3]["t"] == 3 and isinstance(states[3]["robot"]["gripper"], float)
    np.testing.assert_array_equal(states[4]["robot"]["q"], buf.states[4]["robot/q"])
    assert trial_segments(r.read(ref, "trial")) == [(0, 0, 5), (1, 5, 10), (2, 10, 15)]


def test_finalise_gathers_parts_and_keeps_resume_view(tmp_path):
    w = ShardWriter(tmp_path, 3)
    for i in range(3):
        w.write_episode(f"s3-e{i}", make_buffer(seed=i), {"attempt": i})
    with pytest.raises(FileExistsError):
        w.write_episode("s3-e1", make_buffer(), {})
    assert len(ShardWriter(tmp_path, 3).existing_episodes()) == 3
    final = w.finalise()
    assert final == shard_path(tmp_path, 3) and not w.parts.exists()
    assert [r.episode_id for r in list_episodes(tmp_path)] == ["s3-e0", "s3-e1", "s3-e2"]
    assert all(r.path == final for r in list_episodes(tmp_path))
    with pytest.raises(RuntimeError, match="finalised"):
        w.write_episode("s3-e9", make_buffer(), {})


def test_leftover_tmp_is_removed_and_ignored(tmp_path):
    w = ShardWriter(tmp_path, 0)
    w.write_episode("s0-e0", make_buffer(), {})
    half = w.parts / ".ep-s0-e1.h5.abc.tmp"
    half.write_bytes(b"\x89HDF half written")
    assert len(list_episodes(tmp_path)) == 1
    ShardWriter(tmp_path, 0)
    assert not half.exists()


def test_merge_two_shards(tmp_path):
    for shard in (0, 1):
        w = ShardWriter(tmp_path, shard)
        for i in range(2):
            w.write_episode(f"s{shard}-e{i}", make_buffer(seed=shard * 10 + i), {})
        if shard == 0:
            w.finalise()
    dest = merge_dataset(tmp_path, tmp_path / "merged" / "all.h5")
    info = open_shard(dest, verify=True)
    assert sorted(r.episode_id for r in info.episodes) == ["s0-e0", "s0-e1", "s1-e0", "s1-e1"]
    r = EpisodeReader()
    ref = next(e for e in info.episodes if e.episode_id == "s1-e1")
    np.testing.assert_array_equal(r.read(ref, "rgb_static"), make_buffer(seed=11).stacked()["rgb_static"])


def _corrupt_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    # flip bytes well inside the file (chunk data), not the superblock
    for i in range(len(data) // 3, len(data) // 3 + 4000, 7):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_truncated_shard_refused_with_name_and_skippable(tmp_path):
    for shard in (0, 1):
        w = ShardWriter(tmp_path, shard)
        w.write_episode(f"s{shard}-e0", make_buffer(seed=shard), {})
        w.finalise()
    bad = shard_path(tmp_path, 1)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(CorruptShardError, match="shard-00001.h5"):
        list_episodes(tmp_path)
    assert [r.episode_id for r in list_episodes(tmp_path, skip_corrupt=True)] == ["s0-e0"]


def test_corrupted_bytes_detected_by_checksums(tmp_path):
    w = ShardWriter(tmp_path, 0)
    w.write_episode("s0-e0", make_buffer(size=64, steps_per_trial=20), {})
    path = w.finalise()
    _corrupt_middle(path)
    with pytest.raises(CorruptShardError, match="shard-00000.h5"):
        list_episodes(tmp_path, verify=True)


def test_not_a_shard_refused(tmp_path):
    p = tmp_path / "shard-00000.h5"
    with h5py.File(p, "w") as f:
        f["x"] = 1
    with pytest.raises(CorruptShardError, match="not a metamanip-shard"):
        list_episodes(tmp_path)
    (tmp_path / "shard-00001.h5").write_text("hello")
    with pytest.raises(CorruptShardError, match="shard-0000"):
        list_episodes(tmp_path)


def test_missing_directory_has_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metamanip-collect"):
        list_episodes(tmp_path / "nope")


def test_finalise_interrupted_after_rename_is_completed(tmp_path):
    w = ShardWriter(tmp_path, 0)
    w.write_episode("s0-e0", make_buffer(seed=0), {})
    w.finalise()
    # a crash between the rename and the removal of the parts leaves both: finishing it again is safe
    w.parts.mkdir()
    ShardWriter(tmp_path / "other", 0).write_episode("s0-e1", make_buffer(seed=1), {})
    (tmp_path / "other" / "shard-00000.parts" / "ep-s0-e1.h5").rename(w.parts / "ep-s0-e1.h5")
    assert [r.episode_id for r in list_episodes(tmp_path)] == ["s0-e0", "s0-e1"]
    w.finalise()
    assert not w.parts.exists()
    assert [r.episode_id for r in open_shard(w.final).episodes] == ["s0-e0", "s0-e1"]
