"""Perceiver resampler: turns a variable number of visual tokens into a fixed set of latents.

Parameter names follow OpenFlamingo (`latents`, `layers.{i}.0.norm_media`, `layers.{i}.1.{0,1,3}`, `norm`)
so that released OpenFlamingo/RoboFlamingo resampler weights load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """LayerNorm -> Linear(dim, mult*dim) -> GELU -> Linear(mult*dim, dim), bias-free (Flamingo)."""
    inner = int(dim * mult)
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, inner, bias=False),
        nn.GELU(),
        nn.Linear(inner, dim, bias=False),
    )


class PerceiverAttention(nn.Module):
    """Latents attend to the concatenation of media tokens and latents."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner = dim_head * heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """x: (N, n_media, D) media tokens; latents: (N, n_latents, D) -> (N, n_latents, D)."""
        x = self.norm_media(x)
        latents = self.norm_latents(latents)
        n, n_lat, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=1)).chunk(2, dim=-1)
        q, k, v = (t.reshape(n, -1, self.heads, self.dim_head).transpose(1, 2) for t in (q, k, v))
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(n, n_lat, self.heads * self.dim_head)
        return self.to_out(out)


class PerceiverResampler(nn.Module):
    """Flamingo's resampler without time/frame embeddings (as RoboFlamingo uses it).

    Input (B, T, F, v, D): batch, media per sample, frames per media, tokens per frame, width.
    Output (B, T, num_latents, D).
    """

    def __init__(
        self,
        dim: int,
        depth: int = 6,
        dim_head: int = 64,
        heads: int = 8,
        num_latents: int = 64,
        ff_mult: int = 4,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.num_latents = num_latents
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"PerceiverResampler expects (B, T, F, v, D) visual tokens, got shape {tuple(x.shape)}")
        b, t, f, v, d = x.shape
        x = x.reshape(b * t, f * v, d)
        latents = self.latents.unsqueeze(0).expand(b * t, -1, -1)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm(latents).reshape(b, t, self.num_latents, d)
