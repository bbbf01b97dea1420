"""The bookkeeping every job does: status.json (with attempts and submitit logs), metrics.json, the objective."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace
from unittest import mock

import pytest
from omegaconf import OmegaConf

from metamanip.cli import jobstate


def _cfg(tmp_path, **extra):
    return OmegaConf.create({"paths": {"output_dir": str(tmp_path / "job")}, "seed": 0, **extra})


def test_status_running_then_done_with_resolved_config(tmp_path):
    cfg = _cfg(tmp_path, name="${seed}")
    with jobstate.job(cfg) as out:
        running = json.loads((out / "status.json").read_text())
        assert running["status"] == "running" and running["attempt"] == 1
    done = json.loads((out / "status.json").read_text())
    assert done["status"] == "done" and done["ended"] >= done["started"]
    assert OmegaConf.load(out / "resolved_config.yaml").name == 0  # interpolations resolved


def test_failure_recorded_with_error_and_reraised(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with jobstate.job(_cfg(tmp_path)):
            raise RuntimeError("boom")
    st = jobstate.read_status(tmp_path / "job")
    assert st["status"] == "failed" and st["error"] == "RuntimeError: boom"
    assert "raise RuntimeError" in st["traceback"]


def test_restart_in_same_dir_counts_attempts(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with jobstate.job(cfg):
            raise KeyboardInterrupt  # e.g. killed by a requeue
    with jobstate.job(cfg):
        pass
    st = jobstate.read_status(tmp_path / "job")
    assert st["attempt"] == 2 and st["status"] == "done"


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with jobstate.job(_cfg(tmp_path)):
        pass
    assert not (tmp_path / "job" / "status.json").exists()


def test_submitit_logs_linked_next_to_job_output(tmp_path):
    sweep = tmp_path / "sweep"
    folder = sweep / ".submitit" / "77_1"
    folder.mkdir(parents=True)
    (folder / "77_1_0_log.out").write_text("hello")
    fake_env = SimpleNamespace(job_id="77_1", paths=SimpleNamespace(folder=folder))
    cfg = OmegaConf.create({"paths": {"output_dir": str(sweep / "1")}})
    with mock.patch("submitit.JobEnvironment", return_value=fake_env):
        with jobstate.job(cfg) as out:
            pass
        with jobstate.job(cfg) as out:  # a requeued attempt finds its link in place
            pass
    assert (out / "submitit" / "77_1_0_log.out").read_text() == "hello"
    assert not os.path.isabs(os.readlink(out / "submitit"))  # relative: the sweep dir can be moved
    st = jobstate.read_status(out)
    assert st["submitit_job_id"] == "77_1" and st["attempt"] == 2


def test_objective_reads_the_optimized_metric(tmp_path):
    cfg = _cfg(tmp_path, optimized_metric="val_loss")
    jobstate.write_metrics(tmp_path / "job", {"val_loss": 0.25, "train_loss": 0.5})
    assert jobstate.objective(cfg) == 0.25
    assert jobstate.objective(cfg, metrics={"val_loss": 1}) == 1.0
    assert jobstate.objective(_cfg(tmp_path)) is None  # plain runs return nothing


def test_objective_errors_name_the_fix(tmp_path):
    cfg = _cfg(tmp_path, optimized_metric="val_acc")
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        jobstate.objective(cfg)
    jobstate.write_metrics(tmp_path / "job", {"val_loss": 0.25})
    with pytest.raises(KeyError, match=r"val_acc.*\['val_loss'\]"):
        jobstate.objective(cfg)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    jobstate.write_json(tmp_path / "a.json", {"x": 1})
    with pytest.raises(TypeError):
        jobstate.write_json(tmp_path / "a.json", {"x": object()})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}  # old content kept
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
