"""Output heads and loss shared by the continuous decoders (lstm, fc, gpt).

A continuous decoder maps the window of pooled backbone features (B, T, d) to per-step arm deltas in
[-1, 1] (Tanh MLP, 6 dims) and a gripper logit (1 dim). Loss as RoboFlamingo: Huber on the arm +
`gripper_loss_weight` (0.01) x BCE on the gripper, averaged over all B x T steps.

Action chunks (RoboVLMs' `fwd_pred_next_n` = k): every step predicts its next k actions, the heads are
`6 k` and `k` wide (RoboVLMs' layout: chunk step j's arm at outputs 6j..6j+5). The labels are then
(B, T, k, 7) with a validity mask (B, T, k) that is False where step t + j lies past the trial's end (the
dataset pads there); the loss is the mean over the valid (t, j) only. k = 1 is exactly the one-step
decoder (same parameters, same loss, same actions). `execution` and `ensemble_weight` say how a chunk is
played at inference (models/chunking.py); the decoder only carries them so that checkpoints record them.
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


#: How a policy plays predicted chunks (models/chunking.py): open_loop runs the model once per k steps and
#: plays the chunk in order; ensemble runs it every step and averages the overlapping predictions of each
#: step (ACT's temporal ensembling); first runs it every step and plays the newest chunk's first action.
CHUNK_EXECUTIONS = ("open_loop", "ensemble", "first")


def check_chunking(fwd_pred_next_n: int, execution: str, ensemble_weight: float) -> None:
    """Clear errors for bad chunk options (shared by every decoder that predicts chunks)."""
    if isinstance(fwd_pred_next_n, bool) or not isinstance(fwd_pred_next_n, int) or fwd_pred_next_n < 1:
        raise ValueError(f"decoder.fwd_pred_next_n must be an integer >= 1 (1 = one action per step), "
                         f"got {fwd_pred_next_n!r}")
    if execution not in CHUNK_EXECUTIONS:
        raise ValueError(f"decoder.execution must be one of {CHUNK_EXECUTIONS}, got {execution!r}")
    if not float(ensemble_weight) >= 0:
        raise ValueError(f"decoder.ensemble_weight must be >= 0 (0 = plain mean), got {ensemble_weight!r}")


def check_chunk_labels(actions: torch.Tensor, features: torch.Tensor, k: int,
                       chunk_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, k, 7) chunk labels lined up with the features; returns the (B, T, k) bool mask (all True
    when none is given)."""
    b, t = features.shape[:2]
    if actions.ndim == 3 and k > 1:
        raise ValueError(f"this decoder predicts chunks of fwd_pred_next_n={k} actions and needs labels "
                         f"(B, T, {k}, 7) with a chunk_mask (B, T, {k}) (WindowDataset(fwd_pred_next_n={k}) "
                         f"gives them as action_chunk / chunk_mask), got {tuple(actions.shape)}")
    if actions.ndim != 4 or tuple(actions.shape) != (b, t, k, ACTION_DIMS):
        raise ValueError(f"action chunks must be (B, T, k, 7) = ({b}, {t}, {k}, 7) for features "
                         f"{tuple(features.shape)}, got {tuple(actions.shape)}")
    if chunk_mask is None:
        return torch.ones(b, t, k, dtype=torch.bool, device=actions.device)
    if tuple(chunk_mask.shape) != (b, t, k):
        raise ValueError(f"chunk_mask must be (B, T, k) = ({b}, {t}, {k}), got {tuple(chunk_mask.shape)}")
    return chunk_mask.to(device=actions.device, dtype=torch.bool)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` (B, T, k) over the True entries of `mask` (0 when none is)."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def check_actions(actions: torch.Tensor, features: torch.Tensor) -> None:
    """Clear error for labels that do not line up with the feature window."""
    if actions.ndim != 3 or actions.shape[-1] != ACTION_DIMS or actions.shape[:2] != features.shape[:2]:
        raise ValueError(
            f"actions must be (B, T, 7) matching features (B, T, d) = {tuple(features.shape)}, "
            f"got {tuple(actions.shape)}"
        )


class ContinuousDecoder(nn.Module):
    """Base: subclasses define `encode(features) -> (B, T, hidden)`; heads, loss and prediction live here."""

    #: whether a step's output reads earlier steps of the window (chunk execution keeps the history of a
    #: temporal decoder complete; models/chunking.py)
    temporal = True

    def __init__(
        self,
        hidden_size: int,
        mlp_hidden: Sequence[int] | None = None,
        gripper_loss_weight: float = 0.01,
        fwd_pred_next_n: int = 1,
        execution: str = "open_loop",
        ensemble_weight: float = 0.01,
    ) -> None:
        super().__init__()
        check_chunking(fwd_pred_next_n, execution, ensemble_weight)
        if mlp_hidden is None:  # RoboFlamingo's [1024, 512, 256] for hidden 1024; never narrower than 32
            mlp_hidden = [max(hidden_size // k, 32) for k in (1, 2, 4)]
        mlp_hidden = list(mlp_hidden)
        self.fwd_pred_next_n = fwd_pred_next_n
        self.execution = execution
        self.ensemble_weight = float(ensemble_weight)
        self.actions = MLPTanhHead(hidden_size, ARM_DIMS * fwd_pred_next_n, mlp_hidden)
        self.gripper = MLPLogitHead(hidden_size, fwd_pred_next_n, mlp_hidden)
        self.gripper_loss_weight = gripper_loss_weight

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, d) -> arm (B, T, 6) in [-1, 1], gripper logit (B, T, 1); step t sees steps <= t only.
        With chunks, the first action of each step's chunk (the action for that step itself)."""
        if self.fwd_pred_next_n == 1:
            h = self.encode(features)
            return self.actions(h), self.gripper(h)
        arm, grip = self.forward_chunk(features)
        return arm[..., 0, :], grip[..., 0, :]

    def forward_chunk(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, d) -> arm (B, T, k, 6) in [-1, 1], gripper logits (B, T, k, 1): step t's next k actions."""
        h = self.encode(features)
        k = self.fwd_pred_next_n
        return self.actions(h).unflatten(-1, (k, ARM_DIMS)), self.gripper(h).unflatten(-1, (k, 1))

    def loss(self, features: torch.Tensor, actions: torch.Tensor,
             chunk_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Labels (B, T, 7) for one action per step, or chunks (B, T, k, 7) with `chunk_mask` (B, T, k)."""
        if actions.ndim == 4 or self.fwd_pred_next_n > 1:
            return self._chunk_loss(features, actions, chunk_mask)
        check_actions(actions, features)
        arm, grip_logit = self(features)
        arm_loss = F.huber_loss(arm, actions[..., :ARM_DIMS].to(arm.dtype))
        grip_target = (actions[..., ARM_DIMS:] > 0).to(grip_logit.dtype)
        grip_loss = F.binary_cross_entropy_with_logits(grip_logit, grip_target)
        loss = arm_loss + self.gripper_loss_weight * grip_loss
        with torch.no_grad():
            grip_acc = ((grip_logit > 0) == (grip_target > 0.5)).float().mean()
        return {"loss": loss, "arm_loss": arm_loss.detach(), "gripper_loss": grip_loss.detach(), "gripper_acc": grip_acc}

    def _chunk_loss(self, features: torch.Tensor, actions: torch.Tensor,
                    chunk_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        mask = check_chunk_labels(actions, features, self.fwd_pred_next_n, chunk_mask)
        arm, grip_logit = self.forward_chunk(features)
        arm_el = F.huber_loss(arm, actions[..., :ARM_DIMS].to(arm.dtype), reduction="none").mean(-1)
        arm_loss = masked_mean(arm_el, mask)
        grip_target = (actions[..., ARM_DIMS:] > 0).to(grip_logit.dtype)
        grip_el = F.binary_cross_entropy_with_logits(grip_logit, grip_target, reduction="none")[..., 0]
        grip_loss = masked_mean(grip_el, mask)
        loss = arm_loss + self.gripper_loss_weight * grip_loss
        with torch.no_grad():
            grip_acc = masked_mean(((grip_logit > 0) == (grip_target > 0.5)).float()[..., 0], mask)
        return {"loss": loss, "arm_loss": arm_loss.detach(), "gripper_loss": grip_loss.detach(), "gripper_acc": grip_acc}

    def predict_chunk(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T, d) history window -> the chunk (B, k, 7) of its last step, the gripper as a score in
        [-1, 1] (tanh(logit / 2) = 2 sigmoid - 1, whose sign is the logit's): chunk execution averages
        scores and thresholds them at 0."""
        arm, grip_logit = self.forward_chunk(features)
        return torch.cat([arm[:, -1], torch.tanh(grip_logit[:, -1] / 2)], dim=-1)

    def predict_all(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> actions (B, T, 7) for every step, gripper as +-1."""
        arm, grip_logit = self(features)
        return torch.cat([arm, torch.where(grip_logit > 0, 1.0, -1.0).to(arm.dtype)], dim=-1)

    def predict(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T, d) history window -> the action (B, 7) for its last step."""
        return self.predict_all(features)[:, -1]
