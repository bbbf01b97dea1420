"""End to end with the simulator: resume after kill -9, two parallel shards, render-later pixels."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from metamanip.data.dataset import WindowDataset
from metamanip.data.shards import EpisodeReader, list_episodes, merge_dataset, open_shard

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TINY = ["env.num_objs=3", "env.num_trials=3", "env.rollout_steps=450",
        "env.sim.cameras.static.width=32", "env.sim.cameras.static.height=32",
        "env.sim.cameras.gripper.width=24", "env.sim.cameras.gripper.height=24",
        "collect.progress=false", "seed=7"]


def _cmd(tmp: Path, name: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "metamanip.cli.collect", *TINY, *overrides,
            f"hydra.run.dir={tmp / 'jobs' / name}", f"paths.root_dir={tmp}"]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"collector exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{path} did not appear in {timeout}s")
        time.sleep(0.05)


def test_resume_after_kill_mid_episode(tmp_path):
    data = tmp_path / "ds"
    # live rendering (tiny cameras) makes an episode take seconds, so the kill lands inside the second one
    cmd = _cmd(tmp_path, "a", f"collect.dir={data}", "collect.episodes=3")
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(data / "shard-00000.parts" / "ep-0000000.h5", proc)
    time.sleep(0.3)  # the second episode is now in flight
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (data / "shard-00000.h5").exists()
    saved = [r.episode_id for r in list_episodes(data)]
    assert saved and len(saved) < 3, saved
    status = json.loads((tmp_path / "jobs" / "a" / "status.json").read_text())
    assert status["status"] == "running"  # what a kill -9 leaves

    done = subprocess.run(_cmd(tmp_path, "b", f"collect.dir={data}", "collect.episodes=3"),
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    logs = done.stdout + done.stderr + "".join(f.read_text() for f in (tmp_path / "jobs" / "b").glob("*.log"))
    assert "took over the lock" in logs and f"pid {proc.pid}" in logs  # the killed collector's lock
    assert not (data / "shard-00000.parts").exists()
    assert not list(data.rglob("*.tmp"))
    info = open_shard(data / "shard-00000.h5", verify=True)
    assert sorted(r.episode_id for r in info.episodes) == ["0000000", "0000001", "0000002"]
    card = json.loads((data / "card.json").read_text())
    assert card["episodes"] == 3 and sum(card["per_meta_task"].values()) == 3
    assert card["oracle_attempts"] >= 3
    for ref in info.episodes:  # every episode whole: trials, rewards, states all there
        rewards = ref.meta["trial_rewards"]
        assert len(rewards) == 3 and rewards[-1] == 1.0
        assert len(list(EpisodeReader().states(ref))) == ref.num_steps
        assert EpisodeReader().read(ref, "rgb_static").shape == (ref.num_steps, 32, 32, 3)

    # a different config into the same directory is refused, with the difference named
    bad = subprocess.run(_cmd(tmp_path, "c", f"collect.dir={data}", "collect.episodes=5"),
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "collect.episodes: 3 -> 5" in bad.stderr and "Traceback" not in bad.stderr


def test_a_second_collector_into_the_same_dir_is_refused_and_the_first_completes(tmp_path):
    data = tmp_path / "ds"
    first = subprocess.Popen(_cmd(tmp_path, "a", f"collect.dir={data}", "collect.episodes=3"), cwd=REPO,
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(data / "shard-00000.parts" / "ep-0000000.h5", first)  # it is collecting
    second = subprocess.run(_cmd(tmp_path, "b", f"collect.dir={data}", "collect.episodes=3"), cwd=REPO,
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"pid {first.pid} on host" in second.stderr and "collect.num_shards" in second.stderr
    assert "FileExistsError" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    info = open_shard(data / "shard-00000.h5", verify=True)
    assert sorted(r.episode_id for r in info.episodes) == ["0000000", "0000001", "0000002"]  # each once


def test_two_parallel_shards_read_and_merge_as_one(tmp_path):
    data = tmp_path / "ds"
    procs = [subprocess.Popen(_cmd(tmp_path, f"s{i}", f"collect.dir={data}", "collect.episodes=4",
                                   "collect.num_shards=2", f"collect.shard={i}", "collect.render=later"),
                              cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    assert (data / "shard-00000.h5").exists() and (data / "shard-00001.h5").exists()
    refs = list_episodes(data)
    assert [r.episode_id for r in refs] == ["0000000", "0000001", "0000002", "0000003"]
    assert {r.meta["shard_id"] for r in refs} == {0, 1}
    ds = WindowDataset(data, window_size=4, cameras=())
    assert len(ds) > 0 and ds[len(ds) - 1]["actions"].shape == (4, 7)
    merged = merge_dataset(data, tmp_path / "merged.h5")
    assert sorted(r.episode_id for r in open_shard(merged, verify=True).episodes) == [r.episode_id for r in refs]


def test_render_later_gives_the_live_pixels(tmp_path):
    from metamanip.cli import collect, render
    from metamanip.cli.pipeline import compose

    short = [*TINY, "collect.episodes=1", "env.num_trials=2", "env.rollout_steps=300"]
    collect.run(compose("collect", [*short, f"collect.dir={tmp_path / 'live'}"], output_dir=tmp_path / "j1"))
    collect.run(compose("collect", [*short, f"collect.dir={tmp_path / 'later'}", "collect.render=later"],
                        output_dir=tmp_path / "j2"))
    assert not list_episodes(tmp_path / "later")[0].has_images
    render.run(compose("render", [f"dataset={tmp_path / 'later'}", "render.workers=2", "render.progress=false"],
                       output_dir=tmp_path / "j3"))
    (a,), (b,) = list_episodes(tmp_path / "live"), list_episodes(tmp_path / "later")
    r = EpisodeReader()
    assert b.has_images and a.num_steps == b.num_steps
    for key in ("rgb_static", "rgb_gripper", "robot_obs", "actions"):
        np.testing.assert_array_equal(r.read(a, key), r.read(b, key))
