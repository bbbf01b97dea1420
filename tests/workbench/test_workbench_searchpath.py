"""The `experiment` group served from the top-level experiments/ folder, and the optuna presets."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from workbench_helpers import EXPERIMENTS, check_target_binds, compose_job, experiment_names, resolve_all

EXP = "# @package _global_\nseed: 7\ntrainer:\n  lr: 3.0e-4\n"


@pytest.fixture
def exp_dir(tmp_path, monkeypatch):
    d = tmp_path / "exps"
    d.mkdir()
    (d / "mine.yaml").write_text(EXP)
    (d / "other.yaml").write_text("# @package _global_\nseed: 8\n")
    (d / "notes.txt").write_text("not a config")
    monkeypatch.setenv("METAMANIP_EXPERIMENTS", str(d))
    return d


def test_experiment_group_comes_from_the_folder(standin_conf, exp_dir, tmp_path):
    cfg = compose_job(standin_conf, "train", ["experiment=mine"], tmp_path)
    assert cfg.seed == 7 and cfg.trainer.lr == 3.0e-4 and cfg.trainer.weight_decay == 0.01
    assert cfg.hydra.runtime.choices["experiment"] == "mine"


def test_unknown_experiment_lists_the_valid_ones(standin_conf, exp_dir):
    with initialize_config_dir(config_dir=str(standin_conf), version_base="1.3"):
        with pytest.raises(MissingConfigException) as e:
            compose("train", overrides=["experiment=nope"])
    msg = str(e.value)
    assert "experiment/nope" in msg and "mine" in msg and "other" in msg and "notes" not in msg


def test_glob_sweeps_every_experiment(standin_conf, exp_dir, tmp_path):
    """`-m 'experiment=glob(*)'` expands through the group listing (runs in a subprocess, as a user would)."""
    app = tmp_path / "app.py"
    app.write_text("import hydra\n@hydra.main(version_base='1.3', config_path=None)\n"
                   "def main(cfg):\n    print('SEED', cfg.seed)\nmain()\n")
    r = subprocess.run([sys.executable, str(app), "--config-dir", str(standin_conf), "--config-name", "train",
                        "-m", "experiment=glob(*)", f"paths.log_dir={tmp_path}/logs"], cwd="/",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(line for line in r.stdout.splitlines() if line.startswith("SEED")) == ["SEED 7", "SEED 8"]


def test_repository_experiments_found_from_any_cwd(standin_conf, tmp_path, monkeypatch):
    """Without METAMANIP_EXPERIMENTS the plugin finds the repository's own experiments/ folder."""
    monkeypatch.delenv("METAMANIP_EXPERIMENTS", raising=False)
    monkeypatch.delenv("METAMANIP_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    names = experiment_names()
    assert names, f"no recipes in {EXPERIMENTS}"
    with initialize_config_dir(config_dir=str(standin_conf), version_base="1.3"):
        with pytest.raises(MissingConfigException) as e:
            compose("train", overrides=["experiment=__none__"])
    for n in names:
        assert f"\t{n}\n" in str(e.value) or str(e.value).rstrip().endswith(n)


@pytest.mark.parametrize("preset", ["optuna_lr", "optuna_policy"])
def test_optuna_presets_resolve_with_shared_storage(standin_conf, tmp_path, preset):
    cfg = compose_job(standin_conf, "train", [f"hparams_search={preset}"], tmp_path)
    r = resolve_all(cfg)
    sweeper = r["hydra"]["sweeper"]
    assert sweeper["_target_"].endswith("OptunaSweeper") and cfg.hydra.mode.name == "MULTIRUN"
    assert r["task"]["optimized_metric"] == "val_loss"
    # one storage per study, in the parent of every sweeper process's own sweep dir
    storage = sweeper["storage"]
    check_target_binds("hydra.sweeper.storage", storage)
    check_target_binds("hydra.sweeper.sampler", sweeper["sampler"])
    sweep_dir = r["hydra"]["sweep"]["dir"]
    assert storage["path"].rsplit("/", 1)[0] == sweep_dir.rsplit("/", 1)[0]
    assert sweeper["study_name"] in storage["path"]
    # processes sharing a study must not propose the same trials
    assert sweeper["sampler"]["seed"] is None and sweeper["sampler"]["constant_liar"] is True
    assert cfg.hydra.runtime.choices["hydra/sweeper/sampler"] == "tpe_shared"
    for expr in sweeper["params"].values():
        assert any(expr.startswith(f) for f in ("choice(", "tag(", "interval(", "range(")), expr


def test_study_storage_creates_its_folder_and_refuses_unknown_backends(tmp_path):
    from hydra_plugins.metamanip.optuna_storage import study_storage

    import optuna

    for backend in ("sqlite", "journal"):
        path = tmp_path / backend / "deep" / "study.db"
        s = study_storage(str(path), backend=backend)
        study = optuna.create_study(study_name="s", storage=s, load_if_exists=True)
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
        again = optuna.load_study(study_name="s", storage=study_storage(str(path), backend=backend))
        assert len(again.trials) == 1 and path.exists()
    with pytest.raises(ValueError, match="sqlite"):
        study_storage(str(tmp_path / "x.db"), backend="redis")


def test_no_secret_lands_in_saved_hydra_config(standin_conf, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "sk-very-secret")
    for launcher in ("local", "slurm_gpu", "slurm_cpu"):
        cfg = compose_job(standin_conf, "train", [f"hydra/launcher={launcher}"], tmp_path)
        text = OmegaConf.to_yaml(resolve_all(cfg))
        assert "sk-very-secret" not in text
        env_set = cfg.hydra.job.env_set
        assert not [k for k in env_set if any(s in k.upper() for s in ("KEY", "TOKEN", "SECRET", "PASS"))]
        assert env_set.WANDB_MODE == "offline"


def test_local_example_is_a_working_local_file(standin_conf, tmp_path, monkeypatch):
    """conf/local/example.yaml, copied to default.yaml as documented, composes and feeds the SLURM preset."""
    monkeypatch.setenv("USER", "alice")
    example = standin_conf / "local" / "example.yaml"
    (standin_conf / "local" / "default.yaml").write_text(example.read_text())
    with initialize_config_dir(config_dir=str(standin_conf), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm_cpu"], return_hydra_config=True)
    assert cfg.paths.data_dir == "/scratch/alice/metamanip/data"
    assert cfg.hydra.launcher.partition == "cpu"
    assert any("module load" in line for line in cfg.hydra.launcher.setup)
    assert "env_set" not in OmegaConf.to_yaml(OmegaConf.load(example))  # secrets never via env_set
