"""`metamanip-train` in-process: composed config, held-out split, dataset checks, outputs."""
import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from metamanip.cli.train import CONFIG_DIR, DatasetMismatchError, heldout_episodes, run
from metamanip.training.checkpointing import load_checkpoint
from train_standins import write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), episodes=4, trials=2, steps=5, size=32)


def compose_train(tmp_path, *overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[
            f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/run", "logger=none",
            "trainer=smoke", "policy=tiny", "policy.window_size=3", "trainer.batch_size=2",
            "trainer.progress=false", *overrides])


def test_heldout_episodes_are_fixed_by_id_not_seed():
    ids = [f"ep{i:03d}" for i in range(20)]
    val = heldout_episodes(ids, 0.1)
    assert len(val) == 2 and val == heldout_episodes(list(reversed(ids)), 0.1)
    assert len(heldout_episodes(ids, 3)) == 3
    assert heldout_episodes(ids, 0) == [] and heldout_episodes(["one"], 0.5) == []
    with pytest.raises(ValueError, match="data.val_episodes"):
        heldout_episodes(ids, 20)


def test_train_run_writes_checkpoint_log_and_metrics(tmp_path, dataset):
    cfg = compose_train(tmp_path, f"data.dir={dataset}", "trainer.max_steps=3", "data.val_episodes=1")
    metrics = run(cfg)
    out = tmp_path / "run"
    assert metrics["steps"] == 3 and metrics["val_loss"] > 0 and metrics["train_loss"] > 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3
    assert json.loads((out / "status.json").read_text())["status"] == "done"
    ckpt = load_checkpoint(out / "checkpoints/last.pt")
    assert ckpt["config"]["data"]["dir"] == str(dataset)
    assert set(ckpt["policy"]) >= {"format_version", "config", "state_dict"}
    assert ckpt["policy"]["config"]["policy"]["window_size"] == 3
    from metamanip.models.checkpoint import load_policy

    policy = load_policy(out / "checkpoints/last.pt")  # what metamanip-eval ckpt=... does
    assert policy.window_size == 3
    header = (out / "train_log.csv").read_text().splitlines()[0]
    assert header == "step,loss,lr,val_loss,samples_per_s"


def test_window_longer_than_trials_fails_before_training(tmp_path, dataset):
    cfg = compose_train(tmp_path, f"data.dir={dataset}", "policy.window_size=6")
    with pytest.raises(DatasetMismatchError, match="policy.window_size=6 is longer than every trial"):
        run(cfg)
    assert not (tmp_path / "run/checkpoints").exists()
    assert json.loads((tmp_path / "run/status.json").read_text())["status"] == "failed"


def test_missing_camera_fails_before_training(tmp_path):
    data = write_dataset(tmp_path / "nogripper", episodes=2, trials=1, steps=4, gripper=False)
    cfg = compose_train(tmp_path, f"data.dir={data}", "policy.use_gripper=true")
    with pytest.raises(DatasetMismatchError, match="rgb_gripper.*no gripper camera"):
        run(cfg)
    assert not (tmp_path / "run/checkpoints").exists()


def test_missing_dataset_names_the_fix(tmp_path):
    cfg = compose_train(tmp_path, f"data.dir={tmp_path}/nothing")
    with pytest.raises(FileNotFoundError, match="metamanip-collect"):
        run(cfg)


def test_run_config_records_the_dataset_camera_sizes(tmp_path, dataset):
    cfg = compose_train(tmp_path, f"data.dir={dataset}", "trainer.max_steps=1", "data.val_episodes=0",
                        "env.sim.cameras.static.height=200", "env.sim.cameras.static.width=200")
    run(cfg)
    cams = load_checkpoint(tmp_path / "run/checkpoints/last.pt")["config"]["env"]["sim"]["cameras"]
    assert (cams["static"]["height"], cams["static"]["width"]) == (32, 32)
    assert (cams["gripper"]["height"], cams["gripper"]["width"]) == (16, 16)
