"""GPT decoder: a small causal GPT-2 over the window of pooled features (RoboFlamingo's `gpt` head)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import transformers
from torch import nn

from metamanip.models.decoders.heads import ContinuousDecoder, default_hidden


class GPTDecoder(ContinuousDecoder):
    """Linear(d -> hidden) then GPT-2 (learned positions over `window_size`, no token embedding used)."""

    def __init__(
        self,
        in_features: int,
        window_size: int,
        hidden_size: int | None = None,
        n_layer: int = 8,
        n_head: int = 8,
        dropout: float = 0.1,
        mlp_hidden: Sequence[int] | None = None,
        gripper_loss_weight: float = 0.01,
        fwd_pred_next_n: int = 1,
        execution: str = "open_loop",
        ensemble_weight: float = 0.01,
    ) -> None:
        hidden_size = default_hidden(in_features, hidden_size)
        if hidden_size % n_head:
            raise ValueError(f"gpt decoder: hidden_size {hidden_size} must be divisible by n_head {n_head}")
        super().__init__(hidden_size, mlp_hidden, gripper_loss_weight, fwd_pred_next_n, execution,
                         ensemble_weight)
        self.window_size = window_size
        self.fc = nn.Linear(in_features, hidden_size) if in_features != hidden_size else nn.Identity()
        config = transformers.GPT2Config(
            vocab_size=1,
            n_positions=window_size,
            n_embd=hidden_size,
            n_layer=n_layer,
            n_head=n_head,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            bos_token_id=0,
            eos_token_id=0,
        )
        self.gpt = transformers.GPT2Model(config)
        self.gpt.wte.requires_grad_(False)  # features enter as inputs_embeds; the token table is unused

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[1] > self.window_size:
            raise ValueError(
                f"gpt decoder was built for windows of {self.window_size} steps, got {features.shape[1]}; "
                "raise policy.window_size"
            )
        return self.gpt(inputs_embeds=self.fc(features), use_cache=False).last_hidden_state
