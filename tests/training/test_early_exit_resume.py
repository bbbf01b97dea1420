"""A multi-exit policy through the real trainer: the joint loss goes down, and a preempted run resumes to the
same weights (the random exits of the extra-exit loss included)."""
import os
import signal

import pytest
import torch

from metamanip.cli.pipeline import compose
from metamanip.training.preemption import Preempted
from metamanip.training.trainer import Trainer
from train_standins import WindowSet

BASE = dict(batch_size=4, lr=3e-3, log_every_steps=3, progress=False, seed=3, rgb_pad=0, gripper_pad=0,
            warmup_steps=1, save_every_steps=3, max_steps=6)


def policy(tmp_path):
    from metamanip.models.policy import build_policy

    cfg = compose("train", ["backbone=tiny", "decoder=lstm", "policy=tiny", "policy.window_size=3",
                            "backbone.lang_encoder.config.n_layer=2", "+early_exit@policy.early_exit=deer",
                            "policy.early_exit.exit_interval=1", "policy.early_exit.exit_dropout=0.2"],
                  tmp_path / "cfg")
    torch.manual_seed(0)
    return build_policy(cfg)


class SignalAt(WindowSet):
    def __init__(self, at, **kw):
        super().__init__(32, **kw)
        self.at, self.reads = at, 0

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().__getitem__(i)


@pytest.mark.slow
def test_a_preempted_multi_exit_run_resumes_to_the_same_weights(tmp_path):
    ref_policy = policy(tmp_path)
    ref = Trainer(**BASE).fit(ref_policy, WindowSet(32), None, tmp_path / "ref")
    out = tmp_path / "run"
    with pytest.raises(Preempted):
        Trainer(**BASE).fit(policy(tmp_path), SignalAt(at=4 * 4 + 2), None, out)
    resumed = policy(tmp_path)
    got = Trainer(**BASE).fit(resumed, WindowSet(32), None, out)
    assert 0 < got["resumed_from_step"] < 6 and got["steps"] == 6
    assert got["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-5)
    for (name, a), b in zip(resumed.named_parameters(), ref_policy.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
