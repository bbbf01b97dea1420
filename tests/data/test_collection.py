"""Collection logic without a simulator: the balanced plan, shards, the thesis filter, config refusal."""
from __future__ import annotations

from collections import Counter

import pytest

from metamanip.cli.collect import ConfigMismatchError, check_or_claim, dataset_dir
from metamanip.data.collection import attempt_seed, plan_slots, shard_slots, thesis_filter

LIMITS_3_5 = {0: 10, 1: 30, 2: 60}


def test_plan_matches_thesis_limits_exactly_when_full():
    tasks = [f"t{i}" for i in range(6)]
    slots = plan_slots(tasks, LIMITS_3_5, 600)
    assert len(slots) == 600 and [s.index for s in slots] == list(range(600))
    cells = Counter((s.meta_task, s.bucket) for s in slots)
    assert all(cells[(t, b)] == n for t in tasks for b, n in LIMITS_3_5.items())


def test_plan_prefixes_are_balanced_and_capped():
    tasks = [f"t{i}" for i in range(14)]
    slots = plan_slots(tasks, {0: 5, 1: 15, 2: 30}, 1120)  # the thesis' 7-object bug: capped at 700
    assert len(slots) == 700
    first = Counter(s.meta_task for s in slots[:140])
    assert set(first.values()) == {10}  # every prefix of whole rounds has each task equally often
    buckets = Counter(s.bucket for s in slots[:140])
    assert buckets[2] > buckets[1] > buckets[0] > 0


def test_plan_drops_buckets_the_trials_cannot_hold():
    slots = plan_slots(["a", "b"], LIMITS_3_5, 10, max_bucket=0)
    assert {s.bucket for s in slots} == {0} and len(slots) == 10
    with pytest.raises(ValueError, match="num_trials"):
        plan_slots(["a"], {0: 0, 1: 3, 2: 0}, 5, max_bucket=0)


def test_shards_partition_the_plan():
    slots = plan_slots(["a", "b", "c"], LIMITS_3_5, 20)
    parts = [shard_slots(slots, i, 3) for i in range(3)]
    ids = [s.episode_id for p in parts for s in p]
    assert sorted(ids) == sorted(s.episode_id for s in slots) and len(set(ids)) == 20
    with pytest.raises(ValueError, match="collect.shard"):
        shard_slots(slots, 3, 3)


@pytest.mark.parametrize("rewards,completed,expected", [
    ([0, 0, 1, 1], [["a"], ["b"], ["c"], ["c"]], (True, "ok", 2)),
    ([1, 1, 1, 1], [["c"]] * 4, (True, "ok", 0)),
    ([0, 0, 0, 1], [["a"], ["b"], ["d"], ["c"]], (False, "reward_only_in_last_trial", 3)),
    ([0, 1, 0, 1], [["a"], ["c"], ["a"], ["c"]], (False, "reward_lost", 1)),
    ([0, 1, 1, 1], [[], ["c"], ["c"], ["c"]], (False, "trial_without_task", 1)),
    ([0, 0, 0, 0], [["a"]] * 4, (False, "no_reward", None)),
    ([0, 1], [["a"], ["c"]], (False, "episode_incomplete", None)),
])
def test_thesis_filter(rewards, completed, expected):
    assert thesis_filter(rewards, completed, 4) == expected


def test_attempt_seeds_differ_and_repeat():
    slots = plan_slots(["a"], LIMITS_3_5, 3)
    seeds = {attempt_seed(0, s, a) for s in slots for a in range(3)}
    assert len(seeds) == 9 and attempt_seed(0, slots[0], 1) == attempt_seed(0, slots[0], 1)
    assert attempt_seed(1, slots[0], 1) != attempt_seed(0, slots[0], 1)


def test_directory_of_another_config_is_refused(tmp_path):
    cfg = {"seed": 0, "env": {"num_objs": 3}, "collect": {"episodes": 4}}
    check_or_claim(tmp_path, cfg)
    check_or_claim(tmp_path, dict(cfg))  # a resume of the same config is fine
    other = {"seed": 0, "env": {"num_objs": 5}, "collect": {"episodes": 4}}
    with pytest.raises(ConfigMismatchError, match=r"env.num_objs: 3 -> 5"):
        check_or_claim(tmp_path, other)


def test_foreign_shards_without_collection_json_are_refused(tmp_path):
    (tmp_path / "shard-00000.h5").write_bytes(b"x")
    with pytest.raises(ConfigMismatchError, match="collection.json"):
        check_or_claim(tmp_path, {"seed": 0})


def test_dataset_dir_pointer(tmp_path):
    assert dataset_dir(tmp_path) == tmp_path / "dataset"
    (tmp_path / "dataset_dir.txt").write_text("/somewhere/else\n")
    assert str(dataset_dir(tmp_path)) == "/somewhere/else"


def test_shard_from_slurm_array_index(monkeypatch):
    from omegaconf import OmegaConf

    from metamanip.cli.collect import resolve_shard

    cfg = OmegaConf.create({"collect": {"shard": None}})
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert resolve_shard(cfg) == 0
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert resolve_shard(cfg) == 3
    assert resolve_shard(OmegaConf.create({"collect": {"shard": 1}})) == 1
