"""Low-dimensional state as a policy input: `robot_obs` (15) and `scene_obs` (24) in CALVIN's layout.

The policy owns the normalisation (the LeRobot / diffusion_policy convention): `StateEncoder` keeps the
per-dimension mean and standard deviation of the training set as buffers, so they travel in every
checkpoint and evaluation normalises exactly as training did. The trainer sets them once from the dataset
(`set_stats`) before the first step; a policy whose statistics were never set refuses to run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

STATE_KEYS = ("robot_obs", "scene_obs")
STATE_DIMS = {"robot_obs": 15, "scene_obs": 24}
OBS_MODES = ("rgb", "state", "rgb+state")
MIN_STD = 1e-2  # dimensions that barely move in the training set (a block never touched) stay near 0


class StateEncoder(nn.Module):
    """Concatenated state (…, 39) -> normalised -> MLP features (…, out_features)."""

    def __init__(self, out_features: int = 64, hidden: Sequence[int] = (128,), keys: Sequence[str] = STATE_KEYS):
        super().__init__()
        unknown = [k for k in keys if k not in STATE_DIMS]
        if unknown or not keys:
            raise ValueError(f"state keys {list(keys)} are not all known; choose from {list(STATE_DIMS)}")
        self.keys = tuple(keys)
        self.in_features = sum(STATE_DIMS[k] for k in self.keys)
        self.out_features = int(out_features)
        self.register_buffer("mean", torch.zeros(self.in_features))
        self.register_buffer("std", torch.ones(self.in_features))
        self.register_buffer("stats_set", torch.zeros((), dtype=torch.bool))
        layers: list[nn.Module] = []
        width = self.in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.GELU()]
            width = int(h)
        layers += [nn.Linear(width, self.out_features), nn.LayerNorm(self.out_features)]
        self.net = nn.Sequential(*layers)

    def set_stats(self, mean: Any, std: Any) -> None:
        """Training-set mean and std per dimension (robot_obs then scene_obs)."""
        mean = torch.as_tensor(np.asarray(mean, np.float32))
        std = torch.as_tensor(np.asarray(std, np.float32))
        if mean.shape != (self.in_features,) or std.shape != (self.in_features,):
            raise ValueError(f"state statistics must have shape ({self.in_features},), got {tuple(mean.shape)} "
                             f"and {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("state statistics are not finite; the dataset holds NaN/inf states")
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=MIN_STD))
        self.stats_set.fill_(True)

    def gather(self, source: Mapping[str, Any]) -> torch.Tensor:
        """The state tensor (…, 39) from a batch or an observation dict holding `robot_obs`, `scene_obs`."""
        missing = [k for k in self.keys if k not in source]
        if missing:
            raise ValueError(f"the policy reads state {list(self.keys)} but the input has no {missing} "
                             f"(keys: {sorted(source)})")
        parts = [torch.as_tensor(np.asarray(source[k]) if not torch.is_tensor(source[k]) else source[k],
                                 dtype=torch.float32, device=self.mean.device) for k in self.keys]
        for k, p in zip(self.keys, parts):
            if p.shape[-1] != STATE_DIMS[k]:
                raise ValueError(f"{k} must have {STATE_DIMS[k]} values in its last dimension, got shape "
                                 f"{tuple(p.shape)}")
        return torch.cat(parts, dim=-1)

    def normalize(self, state: torch.Tensor) -> torch.Tensor:
        return (state - self.mean) / self.std

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        if not bool(self.stats_set):
            raise RuntimeError("the policy's state statistics were never set: train it with metamanip-train "
                               "(which sets them from the dataset) or call policy.set_state_stats(mean, std)")
        return self.net(self.normalize(state))

