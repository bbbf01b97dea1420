"""WindowDataset for state policies: windows without cameras, state statistics, the first-trial text ablation."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import make_buffer  # noqa: E402

from metamanip.data.dataset import WindowDataset  # noqa: E402
from metamanip.data.shards import ShardWriter  # noqa: E402


@pytest.fixture
def dataset(tmp_path):
    w = ShardWriter(tmp_path, 0)
    for i in range(3):
        w.write_episode(f"e{i}", make_buffer(num_trials=3, steps_per_trial=6, seed=i), {"meta_task": "open_drawer"})
    w.finalise()
    return tmp_path


def test_state_windows_have_the_right_shapes_and_no_images(dataset):
    ds = WindowDataset(dataset, window_size=4, cameras=())
    item = ds[5]
    assert not any(k.startswith("rgb_") for k in item)
    assert item["robot_obs"].shape == (4, 15) and item["robot_obs"].dtype == torch.float32
    assert item["scene_obs"].shape == (4, 24) and item["scene_obs"].dtype == torch.float32
    assert item["actions"].shape == (4, 7)


def test_state_stats_are_over_every_step_of_every_episode(dataset):
    ds = WindowDataset(dataset, window_size=4, cameras=())
    stats = ds.state_stats()
    assert stats["mean"].shape == (39,) and stats["std"].shape == (39,)
    ref = WindowDataset(dataset, window_size=1, cameras=())
    allx = np.stack([np.concatenate([ref[i]["robot_obs"][0].numpy(), ref[i]["scene_obs"][0].numpy()])
                     for i in range(len(ref))])
    np.testing.assert_allclose(stats["mean"], allx.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["std"], allx.std(0), rtol=1e-4, atol=1e-6)


def test_first_trial_text_removes_the_trial_information(dataset):
    trial = WindowDataset(dataset, window_size=4, cameras=())
    ablated = WindowDataset(dataset, window_size=4, cameras=(), text="first_trial")
    assert len(trial) == len(ablated)
    texts = {trial[i]["text"] for i in range(len(trial))}
    assert len(texts) > 1  # the real feedback changes across trials
    for i in range(len(ablated)):
        ref, _ = ablated.locate(i)
        first = trial[[j for j in range(len(trial)) if trial.locate(j) == (ref, 0)][0]]["text"]
        assert ablated[i]["text"] == first
        assert ablated[i]["text"].startswith("first trial")
    with pytest.raises(ValueError, match="text mode"):
        WindowDataset(dataset, window_size=4, cameras=(), text="none")
