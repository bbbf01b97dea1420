"""slurm/*.sbatch: the commands they build (with stand-in srun/scontrol), and the torchrun one for real on
the local cluster."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench_helpers import CONF, REPO, write_tiny_dataset

TEMPLATES = sorted((REPO / "slurm").glob("*.sbatch"))


def sbatch_options(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=?(\S*)", path.read_text(), flags=re.M))


def fake_slurm_bin(tmp_path: Path) -> Path:
    """srun that records its arguments (and runs nothing), scontrol that expands a node list."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$FAKE_SRUN_ARGS"\n')
    (bin_dir / "scontrol").write_text(
        '#!/bin/bash\nif [ "$1 $2" = "show hostnames" ]; then echo gpu03; echo gpu04; else echo "$@" >> "$FAKE_SCONTROL"; fi\n')
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return bin_dir


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_template_is_valid_bash_and_requeueable(path):
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    opts = sbatch_options(path)
    assert "requeue" in opts and opts["signal"].startswith("B:USR2@")  # the batch shell traps it
    assert opts["open-mode"] == "append"  # a requeued job appends to its log instead of wiping it


def _run_template(tmp_path, name, args, env):
    bin_dir = fake_slurm_bin(tmp_path)
    full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_SRUN_ARGS": str(tmp_path / "srun"),
                "FAKE_SCONTROL": str(tmp_path / "scontrol"), "METAMANIP_ROOT": str(tmp_path / "repo"), **env}
    r = subprocess.run(["bash", str(REPO / "slurm" / name), *args], env=full_env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return (tmp_path / "srun").read_text().splitlines()


def test_torchrun_template_rendezvous_from_the_node_list(tmp_path):
    argv = _run_template(tmp_path, "train_torchrun.sbatch", ["experiment=explore_5", "decoder=gpt"],
                         {"SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "4",
                          "SLURM_JOB_NODELIST": "gpu[03-04]", "SLURM_CPUS_PER_TASK": "32"})
    root = tmp_path / "repo"
    assert "--ntasks-per-node=1" in argv  # one torchrun per node
    for a in ("--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d", "--rdzv_endpoint=gpu03:24242",
              "--rdzv_id=4242"):
        assert a in argv, argv
    assert argv[-4:] == ["metamanip.cli.train", f"hydra.run.dir={root}/logs/train/slurm/4242",
                         "experiment=explore_5", "decoder=gpt"]
    assert argv[argv.index("metamanip.cli.train") - 1] == "-m"


def test_collect_template_one_shard_per_array_task(tmp_path):
    argv = _run_template(tmp_path, "collect_array.sbatch", ["experiment=explore_7"],
                         {"SLURM_JOB_ID": "901", "SLURM_ARRAY_JOB_ID": "900", "SLURM_ARRAY_TASK_ID": "3",
                          "SLURM_ARRAY_TASK_COUNT": "8"})
    root = tmp_path / "repo"
    assert argv[argv.index("metamanip.cli.collect"):] == [
        "metamanip.cli.collect", "collect.shard=3", "collect.num_shards=8", f"collect.dir={root}/data/collect_900",
        f"hydra.run.dir={root}/logs/collect/slurm/900/3", "experiment=explore_7"]


@pytest.mark.slow
@pytest.mark.slurm
def test_torchrun_template_trains_on_the_local_cluster(tmp_path, slurm_cluster):
    """sbatch the template for real: torchrun under srun, one process, the tiny training to the end."""
    data = write_tiny_dataset(tmp_path / "data")
    (tmp_path / "logs" / "slurm").mkdir(parents=True)
    no_env = [] if (CONF / "env/sim/playtable.yaml").exists() else ["~env"]
    overrides = [*no_env, "experiment=smoke", f"data.dir={data}", "logger=none", "trainer.progress=false",
                 "trainer.max_steps=3", "trainer.batch_size=2", "data.val_episodes=1"]
    env = {**os.environ, "METAMANIP_ROOT": str(tmp_path), "METAMANIP_PYTHON": sys.executable,
           "NPROC_PER_NODE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["sbatch", "--parsable", "--partition=debug", "--gpus-per-node=0", "--cpus-per-task=1",
                        "--mem=2G", "--time=10", f"--chdir={tmp_path}", str(REPO / "slurm" / "train_torchrun.sbatch"),
                        *overrides], env=env, capture_output=True, text=True, check=True)
    job_id = r.stdout.strip().split(";")[0]
    deadline, state = time.time() + 300, ""
    while time.time() < deadline:
        state = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id], capture_output=True,
                               text=True).stdout.strip()
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"):
            break
        time.sleep(2)
    log = next((tmp_path / "logs" / "slurm").glob(f"*-{job_id}.out"), None)
    assert state == "COMPLETED", f"{state}\n{log.read_text()[-4000:] if log else 'no log'}"
    run_dir = tmp_path / "logs" / "train" / "slurm" / job_id
    metrics = json.loads((run_dir / "metrics.json").read_text())
    status = json.loads((run_dir / "status.json").read_text())
    assert metrics["steps"] == 3 and status["status"] == "done" and status["slurm_job_id"] == job_id
