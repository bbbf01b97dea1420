"""AdamW with weight-decay groups.

Weight decay applies to the weight matrices of trainable layers only; biases, norms, tanh gates,
learned latents/embeddings and other 0-/1-D parameters are left undecayed (decaying a gate that starts
at zero or a LayerNorm scale only fights the model). Frozen parameters are not handed to the optimizer.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_NO_DECAY = ("bias", "norm", "gate", "latents", "embed", "pos_emb")


def decay_groups(model: nn.Module, weight_decay: float,
                 no_decay: Sequence[str] = DEFAULT_NO_DECAY) -> list[dict]:
    """Split the trainable parameters into a decayed and an undecayed group (parameter names kept)."""
    decay, plain, decay_names, plain_names = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lowered = name.lower()
        if p.ndim < 2 or any(tag in lowered for tag in no_decay):
            plain.append(p)
            plain_names.append(name)
        else:
            decay.append(p)
            decay_names.append(name)
    if not decay and not plain:
        raise ValueError("the model has no trainable parameters; check the policy's freeze settings")
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "names": decay_names})
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0, "names": plain_names})
    log.info("AdamW: %d tensors (%d values) with weight decay %g, %d tensors (%d values) without",
             len(decay), sum(p.numel() for p in decay), weight_decay,
             len(plain), sum(p.numel() for p in plain))
    return groups


def build_adamw(model: nn.Module, lr: float, weight_decay: float = 0.0,
                betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                no_decay: Sequence[str] = DEFAULT_NO_DECAY) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters: the model's own `param_groups(weight_decay)` when it
    has one (the policy does), else the decay groups above."""
    if lr <= 0:
        raise ValueError(f"trainer.lr must be > 0, got {lr}")
    if callable(getattr(model, "param_groups", None)):  # the policy knows its own parameters best
        groups = [g for g in model.param_groups(weight_decay) if g["params"]]
        if not groups:
            raise ValueError("the model has no trainable parameters; check the policy's freeze settings")
    else:
        groups = decay_groups(model, weight_decay, no_decay)
        for g in groups:
            g.pop("names")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
