"""WindowDataset: item format, no window across trials, text in force, parallel DataLoader workers."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import make_buffer  # noqa: E402

from metamanip.data.dataset import WindowDataset  # noqa: E402
from metamanip.data.shards import ShardWriter  # noqa: E402


@pytest.fixture
def two_shard_dataset(tmp_path):
    for shard in (0, 1):
        w = ShardWriter(tmp_path, shard)
        for i in range(2):
            w.write_episode(f"s{shard}-e{i}", make_buffer(num_trials=3, steps_per_trial=6,
                                                          seed=shard * 2 + i), {"meta_task": "open_drawer"})
        if shard == 0:
            w.finalise()  # one finalised shard, one still in parts: the reader sees both
    return tmp_path


def test_windows_stay_inside_trials(two_shard_dataset):
    ds = WindowDataset(two_shard_dataset, window_size=4)
    # 4 episodes × 3 trials × (6 - 4 + 1) windows
    assert len(ds) == 4 * 3 * 3
    for i in range(len(ds)):
        ref, s = ds.locate(i)
        assert s // 6 == (s + 3) // 6  # same trial
    item = ds[4]
    assert item["rgb_static"].shape == (4, 3, 16, 16) and item["rgb_static"].dtype == torch.uint8
    assert item["rgb_gripper"].shape == (4, 3, 8, 8)
    assert item["robot_obs"].shape == (4, 15) and item["scene_obs"].shape == (4, 24)
    assert item["actions"].dtype == torch.float32 and item["actions"].shape == (4, 7)
    assert item["actions_abs"].shape == (4, 7)
    # window 4 of episode s0-e0 starts in trial 1 at step 6 -> text of trial 1
    ref, s = ds.locate(4)
    assert (ref.episode_id, s) == ("s0-e0", 7)
    assert item["text"] == "no reward last trial 1"
    expected = make_buffer(num_trials=3, steps_per_trial=6, seed=0).stacked()
    np.testing.assert_array_equal(item["rgb_static"].numpy(), expected["rgb_static"][7:11].transpose(0, 3, 1, 2))
    np.testing.assert_allclose(item["actions"].numpy(), expected["actions"][7:11])


def test_feedback_kind_and_cameras(two_shard_dataset):
    ds = WindowDataset(two_shard_dataset, window_size=6, feedback="alt_feedback", cameras=("static",))
    item = ds[0]
    assert "rgb_gripper" not in item and item["text"] == "alt 0"
    with pytest.raises(ValueError, match="feedback"):
        WindowDataset(two_shard_dataset, window_size=4, feedback="nonsense")
    with pytest.raises(ValueError, match="window_size"):
        WindowDataset(two_shard_dataset, window_size=7)


def test_states_only_dataset_asks_for_render(tmp_path):
    w = ShardWriter(tmp_path, 0)
    w.write_episode("s0-e0", make_buffer(images=False), {})
    with pytest.raises(ValueError, match="metamanip-render"):
        WindowDataset(tmp_path, window_size=3)
    assert len(WindowDataset(tmp_path, window_size=3, cameras=())) == 3 * 5


def test_parallel_workers_read_everything(two_shard_dataset):
    ds = WindowDataset(two_shard_dataset, window_size=4)
    loader = DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
    seen = []
    for batch in loader:
        assert batch["rgb_static"].shape[1:] == (4, 3, 16, 16)
        seen.append(batch["actions"])
    got = torch.cat(seen)
    want = torch.stack([ds[i]["actions"] for i in range(len(ds))])
    assert torch.equal(got, want)
