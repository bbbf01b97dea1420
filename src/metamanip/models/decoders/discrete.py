"""Discrete decoder: every action dimension binned into `n_bins` tokens, predicted by classification.

Bins are uniform on [min_action, max_action] (OpenVLA/RoboVLMs style, 256 bins); a token decodes to its
bin centre, the gripper token to +-1 by sign. The decoder reads the same pooled window features as the
other heads (an LSTM over the window, then 7 x n_bins logits), so it composes with every backbone and
leaves the LM vocabulary untouched. Loss: mean cross-entropy over the 7 action tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metamanip.models.decoders.heads import ACTION_DIMS, ARM_DIMS, check_actions, default_hidden


class DiscreteDecoder(nn.Module):
    """LSTM over the window -> per-dimension categorical distribution over action bins."""

    def __init__(
        self,
        in_features: int,
        window_size: int,
        hidden_size: int | None = None,
        num_layers: int = 2,
        dropout: float = 0.1,
        n_bins: int = 256,
        min_action: float = -1.0,
        max_action: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if n_bins < 2 or not max_action > min_action:
            raise ValueError(f"need n_bins >= 2 and max_action > min_action, got {n_bins}, [{min_action}, {max_action}]")
        hidden_size = default_hidden(in_features, hidden_size)
        self.window_size = window_size
        self.n_bins = n_bins
        self.min_action = min_action
        self.max_action = max_action
        self.label_smoothing = label_smoothing
        self.rnn = nn.LSTM(in_features, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, ACTION_DIMS * n_bins)

    def tokenize(self, actions: torch.Tensor) -> torch.Tensor:
        """Continuous actions (..., 7) -> bin indices (..., 7) in [0, n_bins)."""
        scaled = (actions.float() - self.min_action) / (self.max_action - self.min_action)
        return (scaled * self.n_bins).floor().clamp(0, self.n_bins - 1).long()

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """Bin indices (..., 7) -> bin centres (..., 7), gripper mapped to +-1."""
        width = (self.max_action - self.min_action) / self.n_bins
        a = self.min_action + (tokens.float() + 0.5) * width
        return torch.cat([a[..., :ARM_DIMS], torch.where(a[..., ARM_DIMS:] > 0, 1.0, -1.0)], dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> logits (B, T, 7, n_bins)."""
        out, _ = self.rnn(features)
        return self.head(out).unflatten(-1, (ACTION_DIMS, self.n_bins))

    def loss(self, features: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        check_actions(actions, features)
        logits = self(features)
        target = self.tokenize(actions)
        loss = F.cross_entropy(logits.flatten(0, -2), target.flatten(), label_smoothing=self.label_smoothing)
        with torch.no_grad():
            pred = logits.argmax(-1)
            arm_acc = (pred[..., :ARM_DIMS] == target[..., :ARM_DIMS]).float().mean()
            grip_acc = (pred[..., ARM_DIMS:] == target[..., ARM_DIMS:]).float().mean()
            l1 = (self.detokenize(pred)[..., :ARM_DIMS] - actions[..., :ARM_DIMS].float()).abs().mean()
        return {"loss": loss, "arm_token_acc": arm_acc, "gripper_acc": grip_acc, "arm_l1": l1}

    def predict(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T, d) history window -> greedy action (B, 7) for its last step."""
        return self.detokenize(self(features)[:, -1].argmax(-1))
