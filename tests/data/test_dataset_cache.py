"""WindowDataset's per-process cache and batched reads: the same items as plain slice reads, whatever the
cache keeps; the cache stays under its bound; each image chunk is decoded once; DataLoader workers
(forked after the parent filled its cache, or spawned) read what one process reads."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import make_buffer  # noqa: E402

import metamanip.data.dataset as dataset_mod  # noqa: E402
from metamanip.data.dataset import ByteLRU, WindowDataset  # noqa: E402
from metamanip.data.shards import EpisodeReader, ShardWriter, WriteOptions  # noqa: E402

WINDOW = 4


def _write(root: Path, codec: str) -> Path:
    # chunks of 4 unique frames: most windows span two chunks; finalised shard + parts
    options = WriteOptions(image_codec=codec, image_chunk=4, lzma_preset=1)
    for shard in (0, 1):
        w = ShardWriter(root, shard, options)
        for i in range(2):
            w.write_episode(f"s{shard}-e{i}", make_buffer(num_trials=3, steps_per_trial=9, size=16,
                                                          seed=shard * 2 + i), {})
        if shard == 0:
            w.finalise()
    return root


@pytest.fixture(params=["lzma", "gzip"])
def dataset_dir(request, tmp_path):
    return _write(tmp_path, request.param)


def reference_item(ds: WindowDataset, index: int) -> dict:
    """A window read with plain slice reads through `EpisodeReader`, no dataset cache."""
    ref, s = ds.locate(index)
    e = s + ds.window_size
    r = EpisodeReader()
    try:
        item = {}
        for cam in ds.cameras:
            key = f"rgb_{cam}"
            item[key] = torch.from_numpy(np.ascontiguousarray(r.read(ref, key, s, e).transpose(0, 3, 1, 2)))
        for key in ("robot_obs", "scene_obs", "actions", "actions_abs"):
            item[key] = torch.from_numpy(r.read(ref, key, s, e).astype(np.float32))
        item["text"] = r.texts(ref, ds.feedback, e - 1, e)[0]
        return item
    finally:
        r.close()


def assert_same_item(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if isinstance(value, str):
            assert got[key] == value, key
        else:
            assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
            assert got[key].is_contiguous(), key
            assert torch.equal(got[key], value), key


@pytest.mark.parametrize("cache_mb", [0, 0.004, 64])
def test_cached_and_uncached_items_are_identical(dataset_dir, cache_mb):
    ds = WindowDataset(dataset_dir, window_size=WINDOW, feedback="alt_feedback", cache_mb=cache_mb)
    plain = WindowDataset(dataset_dir, window_size=WINDOW, feedback="alt_feedback", cache_mb=0)
    want = [reference_item(ds, i) for i in range(len(ds))]
    order = np.random.default_rng(0).permutation(len(ds))
    for _ in range(2):  # second pass: served from whatever the cache kept
        for i in order:
            assert_same_item(ds[int(i)], want[i])
    # batched reads, in shuffled batches, equal single reads
    for lo in range(0, len(order), 7):
        batch = [int(i) for i in order[lo:lo + 7]]
        for i, item in zip(batch, ds.__getitems__(batch)):
            assert_same_item(item, want[i])
        for i, item in zip(batch, plain.__getitems__(batch)):
            assert_same_item(item, want[i])
    assert_same_item(ds[-1], want[-1])
    with pytest.raises(IndexError):
        ds[len(ds)]
    if cache_mb == 0:
        assert ds.cache_info()["entries"] == 0


def test_items_do_not_alias_the_cache(dataset_dir):
    ds = WindowDataset(dataset_dir, window_size=WINDOW, cache_mb=64)
    first = ds[3]
    want = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in first.items()}
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            value.zero_() if value.dtype == torch.uint8 else value.fill_(-7.0)
    assert_same_item(ds[3], want)


def test_cache_respects_its_bound(dataset_dir, monkeypatch):
    cache_mb = 0.004  # 4 KiB: an episode's arrays and a chunk or two; far less than the dataset
    ds = WindowDataset(dataset_dir, window_size=WINDOW, cache_mb=cache_mb)
    bound = int(cache_mb * 2**20)
    order = np.random.default_rng(1).permutation(len(ds))
    for lo in range(0, len(order), 5):
        ds.__getitems__([int(i) for i in order[lo:lo + 5]])
        info = ds.cache_info()
        assert info["max_bytes"] == bound
        assert info["nbytes"] <= bound
    info = ds.cache_info()
    assert info["peak_nbytes"] <= bound and info["evictions"] > 0 and info["entries"] > 0
    # entries are counted at their real size
    kept = sum(v.nbytes for v, _ in ds._cache._items.values() if isinstance(v, np.ndarray))
    assert kept <= info["nbytes"]


def test_byte_lru_evicts_least_recently_used():
    lru = ByteLRU(100)
    for k in "abc":
        lru.get(k, lambda k=k: (k, 40))  # c evicts a
    assert "a" not in lru and "b" in lru and "c" in lru and lru.nbytes == 80
    lru.get("b", lambda: pytest.fail("b is cached"))  # b is now the most recent
    lru.get("d", lambda: ("d", 40))  # evicts c, not b
    assert "b" in lru and "c" not in lru and "d" in lru
    assert lru.get("big", lambda: ("big", 101)) == "big" and "big" not in lru and lru.nbytes == 80
    assert ByteLRU(0).get("x", lambda: ("x", 1)) == "x"
    assert (lru.hits, lru.evictions) == (1, 2)


def test_each_chunk_decoded_once_with_a_big_enough_cache(dataset_dir, monkeypatch):
    calls: list[tuple] = []
    real = dataset_mod.read_image_chunk

    def counting(g, c, *args, **kwargs):
        calls.append((g.file.filename, g.name, c))
        return real(g, c, *args, **kwargs)

    monkeypatch.setattr(dataset_mod, "read_image_chunk", counting)
    ds = WindowDataset(dataset_dir, window_size=WINDOW, cache_mb=64)
    for _ in range(2):
        for i in range(len(ds)):
            ds[i]
    assert calls and len(calls) == len(set(calls))
    # without a cache a batch still decodes each chunk it needs once
    calls.clear()
    plain = WindowDataset(dataset_dir, window_size=WINDOW, cache_mb=0)
    plain.__getitems__(list(range(len(plain))))
    assert calls and len(calls) == len(set(calls))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_multi_worker_reads_equal_single_process_reads(tmp_path, context):
    root = _write(tmp_path, "lzma")
    single = WindowDataset(root, window_size=WINDOW, cache_mb=0)
    order = [int(i) for i in np.random.default_rng(3).permutation(len(single))]
    want = list(DataLoader(single, batch_size=5, sampler=order))
    ds = WindowDataset(root, window_size=WINDOW, cache_mb=0.01)
    for i in range(0, len(ds), 3):  # the parent has open handles and a warm cache before the workers start
        ds[i]
    assert ds._reader._files and ds.cache_info()["entries"] > 0
    loader = DataLoader(ds, batch_size=5, sampler=order, num_workers=2, multiprocessing_context=context,
                        persistent_workers=True)
    for _epoch in range(2):
        got = list(loader)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert sorted(g) == sorted(w)
            for key in w:
                if key == "text":
                    assert g[key] == w[key]
                else:
                    assert torch.equal(g[key], w[key]), key
    # the parent's reads are unaffected by the workers
    assert_same_item(ds[7], reference_item(ds, 7))
