"""Output heads and loss shared by the continuous decoders (lstm, fc, gpt).

A continuous decoder maps the window of pooled backbone features (B, T, d) to per-step arm deltas in
[-1, 1] (Tanh MLP, 6 dims) and a gripper logit (1 dim). Loss as RoboFlamingo: Huber on the arm +
`gripper_loss_weight` (0.01) x BCE on the gripper, averaged over all B x T steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ARM_DIMS = 6
ACTION_DIMS = 7


def default_hidden(in_features: int, hidden_size: int | None) -> int:
    """Head width: RoboFlamingo's 1024 for its 2048- and 4096-wide LMs, LM width / 2 for smaller LMs."""
    return hidden_size if hidden_size is not None else min(max(in_features // 2, 8), 1024)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, final: nn.Module | None = None) -> nn.Sequential:
    """Linear/ReLU stack; layer indices match RoboFlamingo's MLPTanhHead for [1024, 512, 256]."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    if final is not None:
        layers.append(final)
    return nn.Sequential(*layers)


class MLPTanhHead(nn.Module):
    """Arm deltas in [-1, 1]."""

    def __init__(self, hidden_size: int, output_size: int, mlp_hidden: Sequence[int]) -> None:
        super().__init__()
        self.mlp = mlp(hidden_size, mlp_hidden, output_size, nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class MLPLogitHead(nn.Module):
    """Gripper logit (sigmoid > 0.5 closes); logits keep the BCE numerically stable."""

    def __init__(self, hidden_size: int, output_size: int, mlp_hidden: Sequence[int]) -> None:
        super().__init__()
        self.mlp = mlp(hidden_size, mlp_hidden, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def check_actions(actions: torch.Tensor, features: torch.Tensor) -> None:
    """Clear error for labels that do not line up with the feature window."""
    if actions.ndim != 3 or actions.shape[-1] != ACTION_DIMS or actions.shape[:2] != features.shape[:2]:
        raise ValueError(
            f"actions must be (B, T, 7) matching features (B, T, d) = {tuple(features.shape)}, "
            f"got {tuple(actions.shape)}"
        )


class ContinuousDecoder(nn.Module):
    """Base: subclasses define `encode(features) -> (B, T, hidden)`; heads, loss and prediction live here."""

    def __init__(
        self,
        hidden_size: int,
        mlp_hidden: Sequence[int] | None = None,
        gripper_loss_weight: float = 0.01,
    ) -> None:
        super().__init__()
        if mlp_hidden is None:  # RoboFlamingo's [1024, 512, 256] for hidden 1024; never narrower than 32
            mlp_hidden = [max(hidden_size // k, 32) for k in (1, 2, 4)]
        mlp_hidden = list(mlp_hidden)
        self.actions = MLPTanhHead(hidden_size, ARM_DIMS, mlp_hidden)
        self.gripper = MLPLogitHead(hidden_size, 1, mlp_hidden)
        self.gripper_loss_weight = gripper_loss_weight

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, d) -> arm (B, T, 6) in [-1, 1], gripper logit (B, T, 1); step t sees steps <= t only."""
        h = self.encode(features)
        return self.actions(h), self.gripper(h)

    def loss(self, features: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        check_actions(actions, features)
        arm, grip_logit = self(features)
        arm_loss = F.huber_loss(arm, actions[..., :ARM_DIMS].to(arm.dtype))
        grip_target = (actions[..., ARM_DIMS:] > 0).to(grip_logit.dtype)
        grip_loss = F.binary_cross_entropy_with_logits(grip_logit, grip_target)
        loss = arm_loss + self.gripper_loss_weight * grip_loss
        with torch.no_grad():
            grip_acc = ((grip_logit > 0) == (grip_target > 0.5)).float().mean()
        return {"loss": loss, "arm_loss": arm_loss.detach(), "gripper_loss": grip_loss.detach(), "gripper_acc": grip_acc}

    def predict_all(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> actions (B, T, 7) for every step, gripper as +-1."""
        arm, grip_logit = self(features)
        return torch.cat([arm, torch.where(grip_logit > 0, 1.0, -1.0).to(arm.dtype)], dim=-1)

    def predict(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T, d) history window -> the action (B, 7) for its last step."""
        return self.predict_all(features)[:, -1]
