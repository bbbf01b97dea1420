"""Feed-forward decoder: each step's action from that step's pooled feature alone (no temporal model)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metamanip.models.decoders.heads import ContinuousDecoder, default_hidden


class FCDecoder(ContinuousDecoder):
    """Linear(d, d/2) -> ReLU -> Linear(d/2, hidden) -> heads, applied per step (RoboFlamingo's FC layout)."""

    temporal = False  # each step's action from its own feature: inference needs no history

    def __init__(
        self,
        in_features: int,
        window_size: int,
        hidden_size: int | None = None,
        mlp_hidden: Sequence[int] | None = None,
        gripper_loss_weight: float = 0.01,
        fwd_pred_next_n: int = 1,
        execution: str = "open_loop",
        ensemble_weight: float = 0.01,
    ) -> None:
        hidden_size = default_hidden(in_features, hidden_size)
        super().__init__(hidden_size, mlp_hidden, gripper_loss_weight, fwd_pred_next_n, execution,
                         ensemble_weight)
        self.window_size = window_size
        self.mlp = nn.Sequential(
            nn.Linear(in_features, in_features // 2), nn.ReLU(), nn.Linear(in_features // 2, hidden_size)
        )

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)
