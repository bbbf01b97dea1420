"""Diffusion decoder: a DDPM-trained action denoiser, sampled with DDIM, conditioned on an LSTM over the window.

For each step t of the window, the 7-D action (6 arm deltas in [-1, 1], gripper +-1) is denoised given
the LSTM state at t. Training: epsilon-prediction MSE on a random diffusion timestep per step (DDPM).
Inference: deterministic DDIM (eta = 0) over `num_inference_steps` from Gaussian noise, x0 clipped to
[-1, 1], gripper thresholded to +-1.

Action chunks (`fwd_pred_next_n` = k > 1): the denoised sample of a step is its whole chunk, k x 7 values
denoised jointly (Diffusion Policy's action horizon); labels (B, T, k, 7) with the trial-end mask
(B, T, k), the epsilon MSE averaged over the valid chunk steps only; the steps past the trial end enter
the noised input as the chunk's last valid action repeated. k = 1 is exactly the one-step decoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from metamanip.models.decoders.heads import (ACTION_DIMS, ARM_DIMS, check_actions, check_chunk_labels, check_chunking,
                                             default_hidden, masked_mean)


def cosine_alphas_cumprod(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cumulative alpha products of the cosine schedule (Nichol & Dhariwal), betas capped at `max_beta`."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, dim=0).float()


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[..., None] * freqs
    emb = torch.cat([args.sin(), args.cos()], dim=-1)
    return F.pad(emb, (0, dim % 2))


class DenoiserBlock(nn.Module):
    """Residual MLP block modulated (scale, shift) by the condition embedding."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.film = nn.Linear(width, 2 * width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb).chunk(2, dim=-1)
        return h + self.mlp(self.norm(h) * (1 + scale) + shift)


class Denoiser(nn.Module):
    """epsilon(x_t, t, cond): noisy action (..., a), timestep (...,), condition (..., c) -> noise (..., a);
    a = 7 per action, 7 k for a chunk of k."""

    def __init__(self, cond_dim: int, width: int, depth: int, action_dims: int = ACTION_DIMS) -> None:
        super().__init__()
        self.width = width
        self.inp = nn.Linear(action_dims, width)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.cond = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(DenoiserBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, action_dims))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.width).to(cond.dtype)) + self.cond(cond)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)


class DiffusionDecoder(nn.Module):
    """LSTM over the window -> conditional DDPM/DDIM over the 7-D action of every step."""

    def __init__(
        self,
        in_features: int,
        window_size: int,
        hidden_size: int | None = None,
        num_layers: int = 2,
        dropout: float = 0.1,
        denoiser_width: int | None = None,
        denoiser_depth: int = 3,
        num_train_timesteps: int = 100,
        num_inference_steps: int = 10,
        fwd_pred_next_n: int = 1,
        execution: str = "open_loop",
        ensemble_weight: float = 0.01,
    ) -> None:
        super().__init__()
        check_chunking(fwd_pred_next_n, execution, ensemble_weight)
        self.fwd_pred_next_n = fwd_pred_next_n
        self.execution = execution
        self.ensemble_weight = float(ensemble_weight)
        if not 1 <= num_inference_steps <= num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in [1, num_train_timesteps={num_train_timesteps}], "
                f"got {num_inference_steps}"
            )
        hidden_size = default_hidden(in_features, hidden_size)
        self.window_size = window_size
        self.num_train_timesteps = num_train_timesteps
        self.num_inference_steps = num_inference_steps
        self.rnn = nn.LSTM(in_features, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.denoiser = Denoiser(hidden_size, denoiser_width or 2 * hidden_size, denoiser_depth,
                                 ACTION_DIMS * fwd_pred_next_n)
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(num_train_timesteps), persistent=False)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(features)
        return out

    temporal = True  # the LSTM condition reads the window

    def loss(self, features: torch.Tensor, actions: torch.Tensor,
             chunk_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Labels (B, T, 7), or chunks (B, T, k, 7) with `chunk_mask` (B, T, k) for k > 1."""
        if actions.ndim == 4 or self.fwd_pred_next_n > 1:
            return self._chunk_loss(features, actions, chunk_mask)
        check_actions(actions, features)
        cond = self.encode(features)
        x0 = actions.to(cond.dtype)
        t = torch.randint(0, self.num_train_timesteps, x0.shape[:-1], device=x0.device)
        noise = torch.randn_like(x0)
        ab = self.alphas_cumprod[t].unsqueeze(-1).to(x0.dtype)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        loss = F.mse_loss(self.denoiser(x_t, t, cond), noise)
        return {"loss": loss, "noise_mse": loss.detach()}

    def _chunk_loss(self, features: torch.Tensor, actions: torch.Tensor,
                    chunk_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        k = self.fwd_pred_next_n
        mask = check_chunk_labels(actions, features, k, chunk_mask)
        cond = self.encode(features)
        # the chunk is denoised jointly, so the steps past the trial end must not reach the input either:
        # they repeat the chunk's last valid action (the chunk then reads "hold the last action")
        last = (mask.long().sum(-1) - 1).clamp(min=0)[..., None, None].expand(-1, -1, 1, ACTION_DIMS)
        held = torch.where(mask[..., None], actions, actions.gather(2, last))
        x0 = held.to(cond.dtype).flatten(-2)  # (B, T, 7 k)
        t = torch.randint(0, self.num_train_timesteps, x0.shape[:-1], device=x0.device)
        noise = torch.randn_like(x0)
        ab = self.alphas_cumprod[t].unsqueeze(-1).to(x0.dtype)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        err = (self.denoiser(x_t, t, cond) - noise).square().unflatten(-1, (k, ACTION_DIMS)).mean(-1)
        loss = masked_mean(err, mask)
        return {"loss": loss, "noise_mse": loss.detach()}

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM (eta = 0) from noise: cond (..., c) -> clipped x0 (..., 7 k)."""
        dims = ACTION_DIMS * self.fwd_pred_next_n
        x = torch.randn((*cond.shape[:-1], dims), generator=generator, device=cond.device, dtype=cond.dtype)
        step = self.num_train_timesteps / self.num_inference_steps
        timesteps = [int(round(self.num_train_timesteps - 1 - i * step)) for i in range(self.num_inference_steps)]
        x0 = x
        for i, t in enumerate(timesteps):
            ab = self.alphas_cumprod[t]
            t_batch = torch.full(cond.shape[:-1], t, device=cond.device, dtype=torch.long)
            eps = self.denoiser(x, t_batch, cond)
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1.0, 1.0)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            ab_prev = self.alphas_cumprod[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.ones_like(ab)
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return x0

    def predict(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T, d) history window -> sampled action (B, 7) for its last step, gripper +-1."""
        cond = self.encode(features)[:, -1]
        a = self.sample(cond, generator)[..., :ACTION_DIMS]  # a chunk's first action
        return torch.cat([a[..., :ARM_DIMS], torch.where(a[..., ARM_DIMS:] > 0, 1.0, -1.0).to(a.dtype)], dim=-1)

    def predict_chunk(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T, d) history window -> the sampled chunk (B, k, 7) of its last step, the gripper as the
        clipped sample in [-1, 1] (a score whose sign is the action; models/chunking.py)."""
        cond = self.encode(features)[:, -1]
        return self.sample(cond, generator).unflatten(-1, (self.fwd_pred_next_n, ACTION_DIMS))
