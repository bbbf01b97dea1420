"""Action distributions over a continuous decoder's outputs, for on-policy RL fine-tuning.

A continuous decoder (lstm, fc, gpt) gives, per step, arm deltas in [-1, 1] (6 dims) and a gripper
logit. `GaussianActionHead` turns them into `ArmGripperDistribution`: an independent Normal per arm
dimension around the decoder's arm output, with a learned state-independent standard deviation, and a
Bernoulli gripper with the decoder's logit. Its mode is what the behaviour-cloned policy does
(`select_action`), so RL starts from the BC weights' behaviour plus exploration noise.

An action sample is (…, 7): the 6 arm values as drawn (unclipped, so the density is exact; the env
clips them to [-1, 1]) and the gripper as 1 (open) or 0 (close). `to_env_action` maps it to the env's
±1 gripper convention.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Bernoulli, Distribution, Normal, constraints

ARM = 6


class ArmGripperDistribution(Distribution):
    """Independent Normal(arm mean, std) × Bernoulli(gripper logit); log_prob sums over the 7 dims."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive, "logits": constraints.real}
    has_rsample = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, logits: torch.Tensor) -> None:
        if loc.shape[-1] != ARM:
            raise ValueError(f"arm means must end in {ARM} dims, got shape {tuple(loc.shape)}")
        self.loc, self.scale = loc, scale.expand_as(loc)
        self.logits = logits
        self.arm = Normal(self.loc, self.scale)
        self.gripper = Bernoulli(logits=logits)
        super().__init__(batch_shape=loc.shape[:-1], event_shape=torch.Size([ARM + 1]), validate_args=False)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            arm = self.arm.sample(sample_shape)
            grip = self.gripper.sample(sample_shape)
            return torch.cat([arm, grip[..., None]], dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if value.shape[-1] != ARM + 1:
            raise ValueError(f"actions must end in {ARM + 1} dims (arm 6 + gripper 0/1), got {tuple(value.shape)}")
        return self.arm.log_prob(value[..., :ARM]).sum(-1) + self.gripper.log_prob(value[..., ARM])

    def entropy(self) -> torch.Tensor:
        return self.arm.entropy().sum(-1) + self.gripper.entropy()

    @property
    def mode(self) -> torch.Tensor:
        """The behaviour-cloned action: arm means, gripper open iff the logit is positive."""
        return torch.cat([self.loc, (self.logits > 0).to(self.loc.dtype)[..., None]], dim=-1)

    @property
    def mean(self) -> torch.Tensor:
        return torch.cat([self.loc, torch.sigmoid(self.logits)[..., None]], dim=-1)


def to_env_action(sample: torch.Tensor) -> torch.Tensor:
    """A distribution sample (…, 7) to the env's action: arm clipped to [-1, 1], gripper ±1."""
    return torch.cat([sample[..., :ARM].clamp(-1.0, 1.0), sample[..., ARM:] * 2.0 - 1.0], dim=-1)


class GaussianActionHead(nn.Module):
    """The learned log standard deviation of the arm noise (one per arm dim, starting at `init_std`,
    never below `min_std`); builds the distribution from a decoder's arm means and gripper logits."""

    def __init__(self, init_std: float = 0.1, min_std: float = 1e-3, learn_std: bool = True) -> None:
        super().__init__()
        if not (init_std > 0 and min_std > 0 and min_std <= init_std):
            raise ValueError(f"rl.action_dist needs 0 < min_std <= init_std, got init_std={init_std}, "
                             f"min_std={min_std}")
        self.min_log_std = math.log(min_std)
        self.log_std = nn.Parameter(torch.full((ARM,), math.log(init_std)), requires_grad=learn_std)

    @property
    def std(self) -> torch.Tensor:
        return self.log_std.clamp(min=self.min_log_std).exp()

    def forward(self, arm_mean: torch.Tensor, gripper_logit: torch.Tensor) -> ArmGripperDistribution:
        return ArmGripperDistribution(arm_mean, self.std.to(arm_mean.dtype), gripper_logit)
