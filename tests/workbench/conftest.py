"""Fixtures for the workbench tests: composing the real config tree, a stand-in config tree that holds only
the workbench's own groups, and the local SLURM cluster."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from workbench_helpers import CONF, REPO, STANDIN_PRIMARY


@pytest.fixture(autouse=True)
def _clear_hydra():
    """Every test composes from scratch (the Compose API keeps global state)."""
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


@pytest.fixture
def standin_conf(tmp_path: Path) -> Path:
    """A config dir with the workbench's groups (hydra, paths, hparams_search, local) copied from conf/
    and a small stand-in primary `train.yaml`, so the workbench can be tested on its own."""
    d = tmp_path / "conf"
    d.mkdir()
    for group in ("hydra", "paths", "hparams_search", "local"):
        shutil.copytree(CONF / group, d / group)
    (d / "train.yaml").write_text(STANDIN_PRIMARY)
    return d


def _cluster_script(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "slurm" / "local-cluster.sh"), *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The single-node cluster of slurm/local-cluster.sh, started (idempotently) for the session and
    stopped again at its end if this session started it.

    Skips only where it cannot exist: not root and no cluster running, or the packages
    (slurm/ci-prepare.sh) are not installed. Any other failure to start is a test failure.
    """
    was_up = _cluster_script("status").returncode == 0
    if not was_up:
        if os.geteuid() != 0:
            pytest.skip("no local SLURM cluster running and starting one needs root (CI runs as root): "
                        "sudo slurm/local-cluster.sh up")
        missing = [b for b in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")
                   if not Path(f"/usr/sbin/{b}").exists()]
        if missing:
            pytest.skip(f"SLURM packages not installed ({', '.join(missing)} missing): run slurm/ci-prepare.sh")
        r = _cluster_script("up")
        assert r.returncode == 0, f"slurm/local-cluster.sh up failed:\n{r.stdout}\n{r.stderr}"
    yield "debug"
    if not was_up:  # leave a cluster someone else started running
        _cluster_script("down")
