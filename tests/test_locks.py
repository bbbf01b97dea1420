"""Single-writer directories (`metamanip.locks`): a second writer is refused naming the holder, a lock left by
a killed process is taken over, and the job dirs of every entry point are locked (`jobstate.job`)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from metamanip.cli.jobstate import LOCK_NAME, job
from metamanip.errors import DirectoryLockedError
from metamanip.locks import dir_lock, holder

HOLD = """
import sys, time
from metamanip.locks import dir_lock
with dir_lock(sys.argv[1], "test holder"):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held(tmp_path):
    """A lock file held by another live process; yields (path, process)."""
    path = tmp_path / "out" / ".shard-00000.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield path, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_second_writer_is_refused_naming_the_holder_and_the_fix(held):
    path, proc = held
    with pytest.raises(DirectoryLockedError) as e:
        with dir_lock(path, "collect shard 0", hint="use collect.shard / collect.num_shards"):
            pytest.fail("entered a held lock")
    msg = str(e.value)
    assert f"pid {proc.pid} on host {socket.gethostname()}" in msg and "collect shard 0" in msg
    assert msg.endswith("— use collect.shard / collect.num_shards")
    assert holder(path)["pid"] == proc.pid  # the refused writer did not touch the record


def test_a_lock_left_by_a_killed_process_is_taken_over(held, caplog):
    path, proc = held
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert holder(path)["state"] == "held"  # its record survives the kill ...
    with dir_lock(path, "next writer") as lock:  # ... but the kernel dropped its lock
        assert lock.took_over and lock.previous["pid"] == proc.pid
        assert holder(path)["pid"] == os.getpid()
    assert "no longer running" in caplog.text
    assert holder(path)["state"] == "released"
    with dir_lock(path, "after a clean release") as lock:
        assert not lock.took_over


def test_job_dirs_are_single_writer(tmp_path):
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")}, "seed": 0})
    with job(cfg) as out:
        status = (out / "status.json").read_text()
        with pytest.raises(DirectoryLockedError, match="hydra.run.dir"):
            with job(cfg):
                pytest.fail("a second job entered the same dir")
        assert (out / "status.json").read_text() == status  # the refused job wrote nothing
        assert json.loads(status)["status"] == "running"
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "done"
    assert holder(tmp_path / "run" / LOCK_NAME)["state"] == "released"
    with job(cfg):  # a re-run after the first ended (resume) is fine
        pass


def test_collect_refuses_a_second_collector_before_any_work(held, tmp_path):
    """`metamanip-collect` into a dataset whose shard another collector holds: exit 2 at once, naming the
    holder and how to shard."""
    path, proc = held
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "metamanip.cli.collect", f"collect.dir={path.parent}",
                        f"hydra.run.dir={tmp_path / 'job'}", f"paths.root_dir={tmp_path}", "collect.progress=false"],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert line.startswith("error: collect shard 0 of 1") and "\n" not in line and "Traceback" not in line
    assert f"pid {proc.pid}" in line and "collect.shard=<i> collect.num_shards=<N>" in line
    assert not (path.parent / "collection.json").exists() and not list(path.parent.glob("*.parts"))
    assert time.time() - t0 < 60
