"""RoboFlamingo's LSTM decoder: a recurrent network over the window of pooled features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metamanip.models.decoders.heads import ContinuousDecoder, default_hidden


class LSTMDecoder(ContinuousDecoder):
    """LSTM(d -> hidden, num_layers, dropout) from a zero state per window, then Tanh arm + gripper heads.

    Inference re-runs the LSTM from zero over the last `window_size` features (RoboFlamingo's sliding
    window), which is exactly the training computation on that window.
    """

    def __init__(
        self,
        in_features: int,
        window_size: int,
        hidden_size: int | None = None,
        num_layers: int = 4,
        dropout: float = 0.1,
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
        self.rnn = nn.LSTM(
            input_size=in_features,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(features)
        return out
