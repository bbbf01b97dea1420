"""WindowDataset(fwd_pred_next_n=k): every step's next k actions and where they leave the trial."""
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

STEPS = 6  # per trial, 3 trials


@pytest.fixture
def dataset_dir(tmp_path):
    w = ShardWriter(tmp_path, 0)
    for i in range(2):
        w.write_episode(f"e{i}", make_buffer(num_trials=3, steps_per_trial=STEPS, seed=i), {"meta_task": "open_drawer"})
    w.finalise()
    return tmp_path


def test_chunks_hold_the_next_k_actions_masked_past_the_trial_end(dataset_dir):
    k, window = 3, 4
    ds = WindowDataset(dataset_dir, window_size=window, cameras=(), fwd_pred_next_n=k)
    assert len(ds) == len(WindowDataset(dataset_dir, window_size=window, cameras=()))  # same windows for every k
    for i in range(len(ds)):
        ref, s = ds.locate(i)
        actions = make_buffer(num_trials=3, steps_per_trial=STEPS, seed=int(ref.episode_id[1:])).stacked()["actions"]
        end = (s // STEPS + 1) * STEPS  # the window's trial end (the episode's end for the last trial)
        item = ds[i]
        assert item["action_chunk"].shape == (window, k, 7) and item["chunk_mask"].dtype == torch.bool
        for t in range(window):
            for j in range(k):
                step = s + t + j
                assert bool(item["chunk_mask"][t, j]) == (step < end)
                if step < end:
                    np.testing.assert_allclose(item["action_chunk"][t, j].numpy(), actions[step])
        np.testing.assert_allclose(item["action_chunk"][:, 0].numpy(), item["actions"].numpy())
    last = ds[len(ds) - 1]  # the episode's last window: its final step has only itself
    assert last["chunk_mask"][-1].tolist() == [True, False, False]


def test_k1_items_are_unchanged_and_chunk_batches_collate(dataset_dir):
    plain = WindowDataset(dataset_dir, window_size=4, cameras=("static",))
    one = WindowDataset(dataset_dir, window_size=4, cameras=("static",), fwd_pred_next_n=1)
    a, b = plain[5], one[5]
    assert a.keys() == b.keys() and "action_chunk" not in b
    assert all(torch.equal(a[key], b[key]) for key in a if key != "text") and a["text"] == b["text"]
    batch = next(iter(DataLoader(WindowDataset(dataset_dir, window_size=4, cameras=(), fwd_pred_next_n=2),
                                 batch_size=3)))
    assert batch["action_chunk"].shape == (3, 4, 2, 7) and batch["chunk_mask"].shape == (3, 4, 2)
    with pytest.raises(ValueError, match="fwd_pred_next_n"):
        WindowDataset(dataset_dir, window_size=4, cameras=(), fwd_pred_next_n=0)
