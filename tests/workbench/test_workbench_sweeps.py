"""Real sweeps of the tiny training, run as a user would: `metamanip-train -m ...` in a subprocess.

- 2 × 2 jobs through `hydra/launcher=local` (submitit's local executor);
- the same through `hydra/launcher=slurm_gpu` on the cluster of slurm/local-cluster.sh;
- a SLURM training job requeued with `scontrol requeue` resumes from its checkpoint in the same dir;
- an optuna study of 4 trials grown by two sweeper processes at once ends with all 4 in one storage.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from workbench_helpers import CONF, write_tiny_dataset

pytestmark = pytest.mark.slow

SECRET = "wandb-key-that-must-not-be-saved"
SLURM_SMALL = ["hydra/launcher=slurm_gpu", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=null",
               "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=15"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_data"))


def tiny_train(dataset: Path, logs: Path, steps: int = 2) -> list[str]:
    """Overrides that make `experiment=smoke` a few seconds of CPU training."""
    no_env = [] if (CONF / "env/sim/playtable.yaml").exists() else ["~env"]  # until the sim config lands
    return [*no_env, "experiment=smoke", f"data.dir={dataset}", "data.val_episodes=1", "logger=none",
            "trainer.progress=false", f"trainer.max_steps={steps}", "trainer.batch_size=2",
            "trainer.save_every_steps=1", f"paths.log_dir={logs}"]


def run_train(args: list[str], cwd: Path, timeout: int = 300, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_API_KEY": SECRET, "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, "-m", "metamanip.cli.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, **popen)


def sweep_dir(logs: Path) -> Path:
    dirs = sorted((logs / "train" / "multiruns").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def check_grid_sweep(sweep: Path, expect_slurm: bool) -> None:
    """Four jobs 0..3 with the 2 × 2 overrides, each done with metrics, logs next to it, no secret saved."""
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    combos = set()
    for job in jobs:
        status = json.loads((job / "status.json").read_text())
        assert status["status"] == "done", status
        assert (status["slurm_job_id"] is not None) == expect_slurm
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["steps"] == 2 and metrics["train_loss"] > 0 and metrics["val_loss"] > 0
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        choices = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"]
        seed = next(o for o in overrides if o.startswith("seed="))
        combos.add((choices["decoder"], seed))
        assert choices["experiment"] == "smoke"
        assert (job / "resolved_config.yaml").exists() and (job / "checkpoints" / "last.pt").exists()
        logs = list((job / "submitit").glob("*_log.out"))  # submitit's logs, linked next to the output
        assert logs and status["submitit_job_id"] in logs[0].name
    assert combos == {(d, f"seed={s}") for d in ("lstm", "fc") for s in (1, 2)}
    leaked = [p for p in sweep.rglob("*") if p.is_file() and p.suffix in (".yaml", ".json", ".log", ".out")
              and SECRET in p.read_text(errors="ignore")]
    assert not leaked, f"the W&B key was written to {leaked}"
    from metamanip.results.loader import load_results

    res = load_results([sweep])
    assert len(res.jobs) == 4 and set(res.jobs["status"]) == {"done"}


def test_local_launcher_grid_sweep(dataset, tmp_path):
    logs = tmp_path / "logs"
    r = run_train(["-m", "hydra/launcher=local", "hydra.launcher.max_parallel=4", "decoder=lstm,fc", "seed=1,2",
                   *tiny_train(dataset, logs)],
                  cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sweep = sweep_dir(logs)
    assert (sweep / "multirun.yaml").exists() and (sweep / ".submitit").is_dir()
    check_grid_sweep(sweep, expect_slurm=False)


@pytest.mark.slurm
def test_slurm_launcher_grid_sweep(dataset, tmp_path, slurm_cluster):
    logs = tmp_path / "logs"
    r = run_train(["-m", *SLURM_SMALL, "decoder=lstm,fc", "seed=1,2", *tiny_train(dataset, logs)], cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sweep = sweep_dir(logs)
    check_grid_sweep(sweep, expect_slurm=True)
    # one job array, followed to the end through accounting
    array_ids = {json.loads((sweep / str(i) / "status.json").read_text())["submitit_job_id"].split("_")[0]
                 for i in range(4)}
    assert len(array_ids) == 1
    array_id = array_ids.pop()
    deadline = time.time() + 60  # a job's result is there a moment before SLURM accounts it as COMPLETED
    while True:
        sacct = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", array_id],
                               capture_output=True, text=True, check=True).stdout.split()
        if (len(sacct) == 4 and all(line.endswith("|COMPLETED") for line in sacct)) or time.time() > deadline:
            break
        time.sleep(1)
    assert len(sacct) == 4 and all(line.endswith("|COMPLETED") for line in sacct), sacct


@pytest.mark.slurm
def test_requeued_training_resumes_in_same_dir(dataset, tmp_path, slurm_cluster):
    logs = tmp_path / "logs"
    args = ["-m", *SLURM_SMALL, "seed=3", *tiny_train(dataset, logs, steps=16)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    driver = subprocess.Popen([sys.executable, "-m", "metamanip.cli.train", *args], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # wait until the job has written a checkpoint, then requeue it as a preemption would
        deadline = time.time() + 180
        job = None
        while time.time() < deadline:
            found = list((logs / "train" / "multiruns").glob("*/0/checkpoints/last.pt"))
            if found:
                job = found[0].parents[1]
                break
            assert driver.poll() is None, driver.stdout.read()
            time.sleep(0.5)
        assert job is not None, "the job wrote no checkpoint within 3 minutes"
        slurm_id = json.loads((job / "status.json").read_text())["slurm_job_id"]
        subprocess.run(["scontrol", "requeue", slurm_id], check=True, capture_output=True, text=True)
        out, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out[-4000:]
    status = json.loads((job / "status.json").read_text())
    metrics = json.loads((job / "metrics.json").read_text())
    assert status["status"] == "done" and status["attempt"] == 2, status
    assert status["slurm_job_id"] == slurm_id  # same job, same dir
    assert metrics["steps"] == 16 and metrics["resumed_from_step"] and metrics["resumed_from_step"] >= 1, metrics
    steps = [int(line.split(",")[0]) for line in (job / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and steps[-1] == 16  # the log continues, it does not restart at 0
    assert [p.name for p in job.parent.iterdir() if p.is_dir() and not p.name.startswith(".")] == ["0"]


def test_optuna_study_shared_by_two_sweeper_processes(dataset, tmp_path):
    import optuna

    logs = tmp_path / "logs"
    args = ["-m", "hparams_search=optuna_lr", "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=1", *tiny_train(dataset, logs, steps=2)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "metamanip.cli.train", *args]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    study_dir = logs / "train" / "optuna" / "shared"
    storage = f"sqlite:///{study_dir / 'study.db'}"
    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(study.trials) == 4 and len(trials) == 4
    sweeps = sorted(p for p in study_dir.iterdir() if p.is_dir())
    assert len(sweeps) == 2  # one sweep dir per sweeper process
    # every trial's value is the val_loss its job wrote, and its lr is the one the job ran with
    job_results = {}
    for sweep in sweeps:
        assert (sweep / "optimization_results.yaml").exists()
        for job in (p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()):
            metrics = json.loads((job / "metrics.json").read_text())
            lr = yaml.safe_load((job / "resolved_config.yaml").read_text())["trainer"]["lr"]
            job_results[round(lr, 12)] = metrics["val_loss"]
    assert len(job_results) == 4
    for t in trials:
        assert job_results[round(t.params["trainer.lr"], 12)] == pytest.approx(t.value)
