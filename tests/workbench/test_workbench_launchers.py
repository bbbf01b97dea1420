"""Launcher presets: what they compose to, the sbatch text the SLURM ones render, the local one's guard."""
from __future__ import annotations

import re
from pathlib import Path
from unittest import mock

import pytest
import submitit
from hydra.core.plugins import Plugins
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from submitit.slurm.slurm import SlurmExecutor

from hydra_plugins.metamanip.launchers import LocalLauncher, SlurmKeyUnderLocalLauncher
from workbench_helpers import check_target_binds, compose_job, resolve_all


class _Rendered(Exception):
    """Raised instead of submitting: carries the executor the launcher built."""

    def __init__(self, executor: submitit.AutoExecutor) -> None:
        self.executor = executor


def render_sbatch(config_dir: Path, tmp: Path, overrides: list[str], n_jobs: int = 2) -> tuple[str, dict]:
    """The sbatch script hydra's SLURM launcher would submit for an `n_jobs` sweep of this config.

    The launcher runs for real up to `map_array`; srun need not exist (SlurmExecutor's srun check is
    patched), nothing is submitted.
    """
    cfg = compose_job(config_dir, "train", overrides, tmp)
    launcher = Plugins.instance().instantiate_launcher(config=cfg, hydra_context=mock.MagicMock(),
                                                       task_function=lambda c: None)

    def fake_map_array(self, fn, *args):
        raise _Rendered(self)

    with mock.patch.object(SlurmExecutor, "affinity", classmethod(lambda cls: 2)), \
            mock.patch.object(submitit.AutoExecutor, "map_array", fake_map_array):
        with pytest.raises(_Rendered) as rendered:
            launcher.launch([[f"seed={i}"] for i in range(n_jobs)], initial_job_idx=0)
    ex = rendered.value.executor._executor
    ex.parameters["map_count"] = n_jobs
    return ex._make_submission_file_text(ex._submitit_command_str, "uid"), dict(ex.parameters)


def sbatch_lines(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = re.match(r"#SBATCH --([\w-]+)(?:=(.*))?$", line)
        if m:
            out[m.group(1)] = m.group(2) or ""
    return out


def test_slurm_gpu_renders_expected_sbatch(standin_conf, tmp_path):
    text, params = render_sbatch(standin_conf, tmp_path, ["hydra/launcher=slurm_gpu"], n_jobs=20)
    sb = sbatch_lines(text)
    sweep_dir = next((tmp_path / "logs" / "train" / "multiruns").iterdir())
    assert sb["partition"] == "gpu"
    assert sb["gpus-per-node"] == "1"
    assert sb["cpus-per-task"] == "8"
    assert sb["mem"] == "64GB"
    assert sb["time"] == "720"
    assert sb["nodes"] == "1" and sb["ntasks-per-node"] == "1"
    assert sb["array"] == "0-19%16"  # array_parallelism caps the jobs running at once
    assert sb["signal"] == "USR2@120"
    assert sb["job-name"] == "app"
    assert sb["output"] == f"{sweep_dir}/.submitit/%A_%a/%A_%a_0_log.out"
    # the job's environment: offline wandb on compute nodes, no secret
    setup = text.split("# setup")[1].split("# command")[0]
    assert "export WANDB_MODE=offline" in setup
    assert "KEY" not in setup and "TOKEN" not in setup
    assert re.search(r"srun --unbuffered --output .*python\S* -u -m submitit.core._submit", text)
    assert "account" not in sb and "qos" not in sb  # unset site keys are left out, not rendered as None


def test_slurm_cpu_renders_collection_array(standin_conf, tmp_path):
    text, _ = render_sbatch(standin_conf, tmp_path, ["hydra/launcher=slurm_cpu"], n_jobs=8)
    sb = sbatch_lines(text)
    assert sb["partition"] == "cpu"
    assert "gpus-per-node" not in sb or sb["gpus-per-node"] == "0"
    assert sb["cpus-per-task"] == "4" and sb["mem"] == "16GB" and sb["time"] == "1440"
    assert sb["array"] == "0-7%8"


def test_site_settings_come_from_the_cluster_node(standin_conf, tmp_path):
    """conf/local/default.yaml's `cluster` node reaches the sbatch script (account, qos, setup lines)."""
    (standin_conf / "local" / "default.yaml").write_text(
        "# @package _global_\ncluster:\n  gpu_partition: a100\n  account: mylab\n  qos: high\n"
        "  setup: module load cuda/12.1\n")
    text, _ = render_sbatch(standin_conf, tmp_path, ["hydra/launcher=slurm_gpu"])
    sb = sbatch_lines(text)
    assert (sb["partition"], sb["account"], sb["qos"]) == ("a100", "mylab", "high")
    assert "module load cuda/12.1" in text


def test_multinode_ddp_overrides_render(standin_conf, tmp_path):
    text, _ = render_sbatch(standin_conf, tmp_path, [
        "hydra/launcher=slurm_gpu", "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=4",
        "hydra.launcher.gpus_per_node=4"], n_jobs=1)
    sb = sbatch_lines(text)
    assert (sb["nodes"], sb["ntasks-per-node"], sb["gpus-per-node"]) == ("2", "4", "4")


@pytest.mark.parametrize("launcher", ["local", "slurm_gpu", "slurm_cpu"])
def test_launcher_presets_resolve_and_bind(standin_conf, tmp_path, launcher):
    cfg = compose_job(standin_conf, "train", [f"hydra/launcher={launcher}"], tmp_path)
    resolved = resolve_all(cfg)
    assert cfg.hydra.runtime.choices["hydra/launcher"] == launcher
    check_target_binds("hydra.launcher", resolved["hydra"]["launcher"])
    assert resolved["hydra"]["launcher"]["submitit_folder"].startswith(resolved["hydra"]["sweep"]["dir"])
    # the job subdir is the job number: a requeued job lands in the same directory
    assert resolved["hydra"]["sweep"]["subdir"] == "0"


def test_slurm_key_under_local_launcher_names_its_launcher(standin_conf, tmp_path):
    cfg = compose_job(standin_conf, "train", ["hydra/launcher=local", "hydra.launcher.partition=gpu"], tmp_path)
    with pytest.raises(InstantiationException) as e:
        instantiate(cfg.hydra.launcher)
    # by name: Hydra's plugin scan re-executes the module, so the class object may be a newer one
    assert type(e.value.__cause__).__name__ == SlurmKeyUnderLocalLauncher.__name__
    msg = str(e.value)
    assert "hydra.launcher.partition='gpu'" in msg
    assert "hydra/launcher=slurm_gpu" in msg and "hydra/launcher=slurm_cpu" in msg


def test_slurm_key_under_local_launcher_fails_the_cli(standin_conf, tmp_path):
    """Through a real `-m` run: the message reaches the user and no job starts."""
    import subprocess
    import sys

    app = tmp_path / "app.py"
    app.write_text("import hydra\n@hydra.main(version_base='1.3', config_path=None)\n"
                   "def main(cfg):\n    open('ran', 'w').write('x')\nmain()\n")
    r = subprocess.run([sys.executable, str(app), "--config-dir", str(standin_conf), "--config-name", "train",
                        "-m", "hydra/launcher=local", "hydra.launcher.account=mylab", "seed=1,2",
                        f"paths.log_dir={tmp_path}/logs"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    assert "hydra.launcher.account='mylab'" in r.stderr and "slurm_gpu" in r.stderr
    assert not (tmp_path / "ran").exists()


def test_local_launcher_starts_next_job_when_one_ends(tmp_path):
    """max_parallel=2 over 5 jobs: never more than 2 running, a new one starts as soon as any ends, the
    returns come back in job order."""
    launcher = LocalLauncher(max_parallel=2, submitit_folder=str(tmp_path / "%j"), timeout_min=1, cpus_per_task=1,
                             gpus_per_node=0, tasks_per_node=1, mem_gb=1, nodes=1, name="t",
                             stderr_to_stdout=False, max_num_timeout=3)
    launcher.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    submitted, running_at_submit = [], []

    class FakeJob:
        def __init__(self, num):
            self.num, self.polls = num, 0

        def done(self):  # job n finishes after n + 1 polls: later jobs run longer
            self.polls += 1
            return self.polls > self.num + 1

        def results(self):
            return [f"r{self.num}"]

    class FakeExecutor:
        def __init__(self, cluster, folder, **kwargs):
            assert cluster == "local" and kwargs == {"local_max_num_timeout": 3}

        def update_parameters(self, **params):
            assert "max_parallel" not in params and "partition" not in params

        def submit(self, fn, overrides, key, num, job_id, state):
            running_at_submit.append(sum(not j.done() for j in submitted))
            submitted.append(FakeJob(num))
            return submitted[-1]

    with mock.patch("submitit.AutoExecutor", FakeExecutor), mock.patch("time.sleep"):
        out = launcher.launch([[f"seed={i}"] for i in range(5)], initial_job_idx=10)
    assert [j.num for j in submitted] == [10, 11, 12, 13, 14]
    assert max(running_at_submit) <= 1  # the 3rd job waits until one of the first two is done
    assert out == ["r10", "r11", "r12", "r13", "r14"]
    with pytest.raises(ValueError, match="max_parallel"):
        LocalLauncher(max_parallel=0)


def test_local_preset_keeps_jobs_on_this_machine(standin_conf, tmp_path):
    cfg = compose_job(standin_conf, "train", ["hydra/launcher=local"], tmp_path)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.metamanip.launchers.LocalLauncher"
    assert launcher["gpus_per_node"] == 0
    assert all(launcher[k] is None for k in ("partition", "account", "gres", "setup"))
