import math

import pytest
import torch

from metamanip.training.optimizer import build_adamw, decay_groups
from metamanip.training.schedule import build_scheduler, lr_multiplier


def test_warmup_then_constant():
    f = lr_multiplier("constant", warmup_steps=4, total_steps=20)
    assert [round(f(i), 3) for i in range(5)] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert f(19) == 1.0


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_decay_reaches_floor_at_the_last_real_step(name):
    total = 37
    f = lr_multiplier(name, warmup_steps=5, total_steps=total, min_lr_ratio=0.1)
    assert f(5) == pytest.approx(1.0)
    assert f(total) == pytest.approx(0.1)
    values = [f(i) for i in range(5, total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    mid = f(5 + (total - 5) // 2)
    assert mid == pytest.approx(0.55, abs=0.05)  # both shapes cross the middle halfway


def test_scheduler_steps_the_optimizer_lr():
    p = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = build_scheduler(opt, "cosine", warmup_steps=0, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 1.0 and lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "step"}, "trainer.scheduler"),
    ({"total_steps": 0}, "at least one optimizer step"),
    ({"min_lr_ratio": 2.0}, "min_lr_ratio"),
])
def test_bad_schedule_settings_are_named(kwargs, match):
    args = {"name": "cosine", "warmup_steps": 1, "total_steps": 10} | kwargs
    with pytest.raises(ValueError, match=match):
        lr_multiplier(**args)


def test_weight_decay_only_on_weight_matrices():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    model.gate = torch.nn.Parameter(torch.zeros(1, 1))
    model.frozen = torch.nn.Parameter(torch.zeros(3, 3), requires_grad=False)
    groups = decay_groups(model, 0.1)
    decayed = next(g for g in groups if g["weight_decay"] == 0.1)["names"]
    plain = next(g for g in groups if g["weight_decay"] == 0.0)["names"]
    assert sorted(decayed) == ["0.weight", "2.weight"]
    assert "gate" in plain and "1.weight" in plain and "0.bias" in plain
    assert "frozen" not in decayed + plain
    opt = build_adamw(model, lr=1e-3, weight_decay=0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
