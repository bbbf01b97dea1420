"""Small stand-ins for the policy and the window dataset, so trainer tests run in seconds.

The real `FlamingoPolicy` and `WindowDataset` are exercised by the CLI tests; these keep the
trainer's own behaviour (resume, accumulation, precision, DDP) testable on their own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset


class WindowSet(Dataset):
    """Deterministic synthetic windows shaped like `WindowDataset` items; actions depend on the state."""

    def __init__(self, n: int = 64, window: int = 3, size: int = 16, gripper_size: int = 8,
                 seed: int = 0, nan_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.rgb = torch.randint(0, 256, (n, window, 3, size, size), generator=g, dtype=torch.uint8)
        self.rgb_g = torch.randint(0, 256, (n, window, 3, gripper_size, gripper_size), generator=g,
                                   dtype=torch.uint8)
        self.robot = torch.randn(n, window, 15, generator=g)
        w = torch.randn(15, 6, generator=g) * 0.3
        arm = torch.tanh(self.robot @ w)
        grip = torch.where(self.robot[..., :1] > 0, 1.0, -1.0)
        self.actions = torch.cat([arm, grip], -1)
        if nan_at is not None:
            self.robot[nan_at] = float("nan")
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"rgb_static": self.rgb[i], "rgb_gripper": self.rgb_g[i], "robot_obs": self.robot[i],
                "scene_obs": torch.zeros(self.robot.shape[1], 24), "actions": self.actions[i],
                "actions_abs": self.actions[i], "text": f"window {i}"}


class TinyPolicy(nn.Module):
    """Conv on the static camera + MLP on robot_obs -> 7-D action; Huber + 0.01 BCE like the real one."""

    def __init__(self, hidden: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)
        self.norm = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(15 + 4, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, 7)
        self.config = {"hidden": hidden, "dropout": dropout}

    def forward(self, batch: dict) -> dict:
        img = batch["rgb_static"].float() / 255.0
        b, t = img.shape[:2]
        feat = self.conv(img.flatten(0, 1)).mean((-1, -2)).view(b, t, -1)
        h = self.norm(self.mlp(torch.cat([batch["robot_obs"], feat], -1)))
        out = self.head(h)
        arm, grip = torch.tanh(out[..., :6]), out[..., 6]
        target = batch["actions"]
        loss = F.huber_loss(arm, target[..., :6]) + 0.01 * F.binary_cross_entropy_with_logits(
            grip, (target[..., 6] + 1) / 2)
        return {"loss": loss}


def write_dataset(root, episodes: int = 4, trials: int = 2, steps: int = 8, size: int = 32,
                  gripper_size: int = 16, gripper: bool = True, seed: int = 0):
    """A small real shard dataset (the data layer's writer) with learnable actions."""
    import numpy as np

    from metamanip.data.shards import EpisodeBuffer, ShardWriter

    rng = np.random.default_rng(seed)
    writer = ShardWriter(root, 0)
    for e in range(episodes):
        buf = EpisodeBuffer()
        for trial in range(trials):
            for t in range(steps):
                robot = rng.normal(size=15).astype(np.float32)
                obs = {"robot_obs": robot, "scene_obs": rng.normal(size=24).astype(np.float32),
                       "rgb_static": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)}
                if gripper:
                    obs["rgb_gripper"] = rng.integers(0, 255, (gripper_size, gripper_size, 3), dtype=np.uint8)
                action = np.concatenate([np.tanh(robot[:6]), [1.0 if robot[6] > 0 else -1.0]]).astype(np.float32)
                buf.add_step(obs=obs, action=action, action_abs=action, trial=trial, reward=0.0,
                             texts={"train_feedback": f"first trial. episode objects: drawer, led {trial}",
                                    "alt_feedback": "alt", "lm_feedback": "lm"})
        writer.write_episode(f"ep{e:03d}", buf, {"meta_task": "open_drawer"})
    writer.finalise()
    return root
