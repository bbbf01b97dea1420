"""The trainer on a stand-in policy and synthetic windows: resume, accumulation, precision, bad input."""
import csv
import os
import signal

import pytest
import torch

from metamanip.training.checkpointing import load_checkpoint
from metamanip.training.preemption import Preempted
from metamanip.training.trainer import NonFiniteLossError, Trainer
from train_standins import TinyPolicy, WindowSet

BASE = dict(batch_size=4, lr=3e-3, log_every_steps=3, progress=False, seed=3, rgb_pad=2, gripper_pad=1,
            scheduler="cosine", warmup_steps=2)


def fit(out, trainer_kwargs=None, data=None, val=None, policy_seed=0, dropout=0.2):
    torch.manual_seed(policy_seed)
    policy = TinyPolicy(dropout=dropout)
    trainer = Trainer(**(BASE | (trainer_kwargs or {})))
    return trainer.fit(policy, data if data is not None else WindowSet(32), val, out), policy


class SignalAt(WindowSet):
    """Sends SIGTERM to this process when window number `at` is read (num_workers=0: main thread)."""

    def __init__(self, at, **kw):
        super().__init__(32, **kw)
        self.at, self.reads = at, 0

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().__getitem__(i)


def test_preempted_run_resumes_to_the_same_loss(tmp_path):
    ref, ref_policy = fit(tmp_path / "ref", {"max_steps": 14, "save_every_steps": 5})
    out = tmp_path / "run"
    with pytest.raises(Preempted, match="stopped by SIGTERM at step 7"):
        fit(out, {"max_steps": 14, "save_every_steps": 5}, data=SignalAt(at=4 * 6 + 2))
    assert load_checkpoint(out / "checkpoints/last.pt")["step"] == 7
    got, policy = fit(out, {"max_steps": 14, "save_every_steps": 5}, policy_seed=99)
    assert got["steps"] == ref["steps"] == 14
    assert got["resumed_from_step"] == 7
    assert got["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-5)
    for a, b in zip(policy.parameters(), ref_policy.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == [3, 6, 9, 12, 14]


def test_finished_run_is_not_trained_again(tmp_path):
    first, _ = fit(tmp_path, {"max_steps": 4})
    again, _ = fit(tmp_path, {"max_steps": 4})
    assert again["steps"] == 4 and again["resumed_from_step"] == 4
    assert again["train_loss"] == pytest.approx(first["train_loss"])


def test_gradient_accumulation_matches_a_bigger_batch(tmp_path):
    kw = {"max_steps": 5, "rgb_pad": 0, "gripper_pad": 0}
    big, p_big = fit(tmp_path / "a", kw | {"batch_size": 8}, dropout=0.0)
    acc, p_acc = fit(tmp_path / "b", kw | {"batch_size": 4, "grad_accum_steps": 2}, dropout=0.0)
    assert acc["train_loss"] == pytest.approx(big["train_loss"], rel=1e-4)
    for a, b in zip(p_big.parameters(), p_acc.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_epochs_size_the_schedule_and_validation_runs(tmp_path):
    m, _ = fit(tmp_path, {"max_steps": 0, "max_epochs": 1.5, "grad_accum_steps": 2, "val_every_steps": 2},
               val=WindowSet(8, seed=1))
    assert m["steps"] == 2 * 3  # 32 windows / batch 4 = 8 micro-batches = 4 steps per epoch
    assert m["val_loss"] is not None and m["val_loss"] > 0
    sched = load_checkpoint(tmp_path / "checkpoints/last.pt")["scheduler"]
    assert sched["last_epoch"] == 6
    rows = list(csv.DictReader(open(tmp_path / "train_log.csv")))
    assert [(int(r["step"]), r["val_loss"] != "") for r in rows] == [(2, True), (3, False), (4, True), (6, True)]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, precision):
    m, _ = fit(tmp_path, {"max_steps": 6, "precision": precision})
    assert torch.isfinite(torch.tensor(m["train_loss"]))
    ckpt = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert ("scale" in ckpt["scaler"]) == (precision == "fp16")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    data = WindowSet(32, nan_at=None)
    fit(tmp_path, {"max_steps": 4}, data=data)
    before = load_checkpoint(tmp_path / "checkpoints/last.pt")
    bad = WindowSet(32)
    bad.robot[:] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"NaN/inf at step 5.*last good checkpoint.*step 4"):
        fit(tmp_path, {"max_steps": 8, "save_every_steps": 1}, data=bad)
    after = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert after["step"] == 4
    for k, v in before["policy"]["state_dict"].items():
        assert torch.equal(v, after["policy"]["state_dict"][k])


def test_step_checkpoints_are_kept_when_asked(tmp_path):
    fit(tmp_path, {"max_steps": 5, "save_every_steps": 2, "keep_step_checkpoints": True})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step_00000002.pt", "step_00000004.pt", "step_00000005.pt"]
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["step"] == 5


def test_truncated_checkpoint_is_refused_with_the_fix(tmp_path):
    fit(tmp_path, {"max_steps": 2})
    path = tmp_path / "checkpoints/last.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable checkpoint.*delete it"):
        fit(tmp_path, {"max_steps": 4})


def test_bad_trainer_settings_fail_early(tmp_path):
    with pytest.raises(ValueError, match="trainer.precision"):
        Trainer(precision="fp8")
    with pytest.raises(ValueError, match="no full batch"):
        fit(tmp_path, {"max_steps": 2, "batch_size": 64})


def test_signal_after_the_last_step_saves_and_hands_on(tmp_path):
    class LateSignal(WindowSet):
        def __init__(self):
            super().__init__(32)
            self.reads = 0

        def __getitem__(self, i):
            self.reads += 1
            if self.reads == 4 * 3:  # the last window of the last step
                os.kill(os.getpid(), signal.SIGTERM)
            return super().__getitem__(i)

    with pytest.raises(Preempted, match="at step 3"):
        fit(tmp_path, {"max_steps": 3}, data=LateSignal(), val=WindowSet(8))
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["step"] == 3
    again, _ = fit(tmp_path, {"max_steps": 3}, val=WindowSet(8))
    assert again["steps"] == 3 and again["val_loss"] is not None
