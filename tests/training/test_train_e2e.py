"""`metamanip-train` as a researcher runs it: killed and resumed, DDP through torchrun, a submitit job
that times out and is requeued. Real processes, the tiny policy, a small real dataset."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metamanip.training.checkpointing import load_checkpoint
from train_standins import write_dataset

pytestmark = pytest.mark.slow
VENV_BIN = Path(sys.executable).parent
COMMON = ["trainer=smoke", "policy=tiny", "policy.window_size=3", "trainer.batch_size=2",
          "trainer.progress=false", "trainer.rgb_pad=2", "trainer.gripper_pad=1", "data.val_episodes=1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), episodes=4, trials=2, steps=6, size=32)


def env():
    e = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    e.pop("RANK", None)
    e.pop("WORLD_SIZE", None)
    return e


def train_cmd(*overrides, multirun=False):
    return [sys.executable, "-m", "metamanip.cli.train", *(["-m"] if multirun else []), *COMMON,
            *overrides]


def wait_for(predicate, timeout, what, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before {what}:\n{proc.stdout.read()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def checkpoint_step(path: Path) -> int:
    try:
        return load_checkpoint(path)["step"]
    except (FileNotFoundError, ValueError):
        return -1


def test_killed_run_resumes_to_the_same_steps_and_loss(tmp_path, dataset):
    args = [f"data.dir={dataset}", "trainer.max_steps=12", "trainer.save_every_steps=2", "logger=none"]
    ref = subprocess.Popen(train_cmd(*args, f"hydra.run.dir={tmp_path}/ref"), env=env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = tmp_path / "run"
    victim = subprocess.Popen(train_cmd(*args, f"hydra.run.dir={run_dir}"), env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt = run_dir / "checkpoints/last.pt"
    wait_for(ckpt.exists, 240, "the first checkpoint", victim)  # step 2 of 12
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    killed_at = checkpoint_step(ckpt)
    assert victim.returncode == -signal.SIGKILL and 2 <= killed_at < 12
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out
    resumed = subprocess.run(train_cmd(*args, f"hydra.run.dir={run_dir}"), env=env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    a = json.loads((tmp_path / "ref/metrics.json").read_text())
    b = json.loads((run_dir / "metrics.json").read_text())
    assert b["resumed_from_step"] == killed_at
    assert a["steps"] == b["steps"] == 12
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5, abs=1e-7)
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5, abs=1e-7)
    log_steps = [line.split(",")[0] for line in (run_dir / "train_log.csv").read_text().splitlines()[1:]]
    assert log_steps == ["5", "10", "12"]
    assert json.loads((run_dir / "status.json").read_text())["attempt"] == 2


def test_torchrun_two_process_cpu_ddp_writes_one_checkpoint(tmp_path, dataset):
    out = tmp_path / "ddp"
    cmd = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "metamanip.cli.train",
           *COMMON, f"data.dir={dataset}", "trainer.max_steps=4", "trainer.save_every_steps=0",
           "trainer.num_workers=1", "trainer.device=cpu", "logger=none", f"hydra.run.dir={out}"]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rank 1/2" in done.stdout + done.stderr and "via gloo" in done.stdout + done.stderr
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["last.pt"]
    ckpt = load_checkpoint(out / "checkpoints/last.pt")
    assert ckpt["step"] == 4 and ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["val_loss"] is not None
    # 3 training episodes x 2 trials x 4 windows = 24 windows: 12 per rank, 6 batches of 2 -> 4 steps = 2/3 epoch
    assert metrics["epochs"] == pytest.approx(4 / 6)


def test_submitit_job_that_times_out_is_requeued_and_resumes(tmp_path, dataset):
    sweep = tmp_path / "sweep"
    cmd = train_cmd("hydra/launcher=local", "hydra.launcher.timeout_min=5", f"hydra.sweep.dir={sweep}",
                    f"data.dir={dataset}", "trainer.max_steps=16", "trainer.save_every_steps=2", "logger=wandb",
                    multirun=True)
    driver = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job_dir = sweep / "0"
    wait_for((job_dir / "checkpoints/last.pt").exists, 240, "the first checkpoint", driver)  # step 2 of 16
    status = json.loads((job_dir / "status.json").read_text())
    assert status["status"] == "running", status
    # what SLURM (and submitit's local executor) sends before the time limit
    os.kill(status["pid"], signal.SIGUSR2)
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, out
    final = json.loads((job_dir / "status.json").read_text())
    assert final["status"] == "done" and final["attempt"] == 2, (final, out[-3000:])
    metrics = json.loads((job_dir / "metrics.json").read_text())
    assert metrics["steps"] == 16 and metrics["resumed_from_step"] >= 2
    logs = "".join(p.read_text() for p in Path(final["submitit_folder"]).glob("*_log.*"))
    assert "timed-out" in logs and "Requeued" in logs
    runs = sorted((job_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({r.name.rsplit("-", 1)[-1] for r in runs}) == 1  # same wandb run id


def test_torchrun_ddp_trains_a_state_policy_whose_vision_parts_get_no_gradient(tmp_path, dataset):
    out = tmp_path / "ddp_state"
    cmd = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "metamanip.cli.train",
           *COMMON, f"data.dir={dataset}", "policy.obs=state", "trainer.max_steps=3", "trainer.save_every_steps=0",
           "trainer.device=cpu", "logger=none", f"hydra.run.dir={out}"]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ckpt = load_checkpoint(out / "checkpoints/last.pt")
    assert ckpt["step"] == 3 and ckpt["world_size"] == 2
    assert bool(ckpt["policy"]["state_dict"]["state_encoder.stats_set"])
