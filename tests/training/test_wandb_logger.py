"""wandb: offline files inside the run dir, a stable id, the same run continued on resume."""
import re
import shutil

import torch

from metamanip.training.checkpointing import load_checkpoint
from metamanip.training.loggers import WandbLogger, stable_run_id
from metamanip.training.trainer import Trainer
from train_standins import TinyPolicy, WindowSet


def test_stable_run_id(tmp_path):
    a, b = tmp_path / "multiruns/2026-01-01/0", tmp_path / "multiruns/2026-01-01/1"
    assert stable_run_id(a) == stable_run_id(a) != stable_run_id(b)
    assert stable_run_id(a).startswith("2026-01-01-0-") and len(stable_run_id(a)) <= 64


def test_offline_run_files_and_resumed_run_keeps_its_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    kw = dict(batch_size=4, progress=False, log_every_steps=1, save_every_steps=1)
    first = tmp_path / "first"
    torch.manual_seed(0)
    Trainer(max_steps=2, **kw).fit(TinyPolicy(), WindowSet(16), None, first, logger=WandbLogger(project="t"))
    run_id = load_checkpoint(first / "checkpoints/last.pt")["logger_id"]
    assert run_id == stable_run_id(first)
    (run1,) = (first / "wandb").glob("offline-run-*")
    assert run1.name.endswith(run_id) and list(run1.glob("*.wandb"))
    # the run dir moved (copied to another file system): the id comes from the checkpoint, not the path
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    Trainer(max_steps=4, **kw).fit(TinyPolicy(), WindowSet(16), None, moved, logger=WandbLogger(project="t"))
    runs = sorted((moved / "wandb").glob("offline-run-*"))
    # wandb names a run's dir offline-run-<second>-<id>, adding "-1" when two runs start in the same second
    assert len(runs) == 2 and all(re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{re.escape(run_id)}(-\d+)?", r.name)
                                  for r in runs), [r.name for r in runs]
    assert load_checkpoint(moved / "checkpoints/last.pt")["logger_id"] == run_id
