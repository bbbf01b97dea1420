"""Learning-rate schedules: linear warmup, then constant, cosine or linear decay.

The schedule is sized from the real number of optimizer steps the run will take (after gradient
accumulation), not from a nominal sample count, so a cosine run really ends at its floor.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

SCHEDULES = ("constant", "cosine", "linear")


def lr_multiplier(name: str, warmup_steps: int, total_steps: int,
                  min_lr_ratio: float = 0.0) -> Callable[[int], float]:
    """The factor applied to the base learning rate at optimizer step `step` (0-based)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown trainer.scheduler={name!r}; choose one of {', '.join(SCHEDULES)}")
    if total_steps < 1:
        raise ValueError(f"the schedule needs at least one optimizer step, got total_steps={total_steps}; "
                         "raise trainer.max_steps / trainer.max_epochs or use a bigger dataset")
    if warmup_steps < 0:
        raise ValueError(f"trainer.warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"trainer.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    warmup = min(warmup_steps, total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if name == "constant":
            return 1.0
        decay_steps = max(total_steps - warmup, 1)
        progress = min((step - warmup) / decay_steps, 1.0)
        if name == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            shape = 1.0 - progress
        return min_lr_ratio + (1.0 - min_lr_ratio) * shape

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, warmup_steps: int, total_steps: int,
                    min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` stepping once per optimizer step; its state goes into the trainer checkpoint."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_multiplier(name, warmup_steps, total_steps, min_lr_ratio))
