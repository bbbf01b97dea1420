"""Gated cross-attention from text tokens to visual latents (Flamingo).

Names follow OpenFlamingo (`attn.norm`, `attn.to_q`, `attn.to_kv`, `attn.to_out`, `attn_gate`, `ff.{0,1,3}`,
`ff_gate`). The tanh gates start at zero, so a freshly inserted block leaves the language model unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from metamanip.models.perceiver import feed_forward


class MaskedCrossAttention(nn.Module):
    """Each text token attends to the visual latents of the media that precedes it.

    With `only_attend_immediate_media` a token attends only to the latest `<image>` before it; tokens that
    come before any `<image>` receive zero attention output.
    """

    def __init__(
        self,
        dim: int,
        dim_visual: int,
        dim_head: int = 64,
        heads: int = 8,
        only_attend_immediate_media: bool = True,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner = dim_head * heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim_visual, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)
        self.only_attend_immediate_media = only_attend_immediate_media

    def forward(
        self, x: torch.Tensor, media: torch.Tensor, media_locations: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (B, L, dim) text; media: (B, T_img, n, dim_visual); media_locations: (B, L) bool."""
        b, l, _ = x.shape
        t_img, n = media.shape[1], media.shape[2]
        x = self.norm(x)
        q = self.to_q(x).reshape(b, l, self.heads, self.dim_head).transpose(1, 2)
        k, v = self.to_kv(media.reshape(b, t_img * n, -1)).chunk(2, dim=-1)
        k = k.reshape(b, t_img * n, self.heads, self.dim_head).transpose(1, 2)
        v = v.reshape(b, t_img * n, self.heads, self.dim_head).transpose(1, 2)

        scores = (q * self.dim_head**-0.5) @ k.transpose(-1, -2)  # (B, H, L, T_img*n)
        text_time = None
        if media_locations is not None:
            text_time = media_locations.long().cumsum(dim=-1)  # (B, L): index (1-based) of preceding media
            media_time = torch.arange(t_img, device=x.device).add(1).repeat_interleave(n)  # (T_img*n,)
            if self.only_attend_immediate_media:
                allowed = text_time[:, None, :, None] == media_time[None, None, None, :]
            else:
                allowed = text_time[:, None, :, None] >= media_time[None, None, None, :]
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        attn = (scores - scores.amax(dim=-1, keepdim=True).detach()).softmax(dim=-1)
        if text_time is not None:
            # tokens before the first <image> see no media: zero their attention entirely
            attn = attn.masked_fill((text_time == 0)[:, None, :, None], 0.0)
        out = (attn @ v).transpose(1, 2).reshape(b, l, self.heads * self.dim_head)
        return self.to_out(out)


class GatedCrossAttentionBlock(nn.Module):
    """x + tanh(attn_gate)·xattn(x, media), then x + tanh(ff_gate)·FF(x)."""

    def __init__(
        self,
        dim: int,
        dim_visual: int,
        dim_head: int = 64,
        heads: int = 8,
        ff_mult: int = 4,
        only_attend_immediate_media: bool = True,
    ) -> None:
        super().__init__()
        self.attn = MaskedCrossAttention(dim, dim_visual, dim_head, heads, only_attend_immediate_media)
        self.attn_gate = nn.Parameter(torch.tensor([0.0]))
        self.ff = feed_forward(dim, ff_mult)
        self.ff_gate = nn.Parameter(torch.tensor([0.0]))

    def forward(
        self, x: torch.Tensor, media: torch.Tensor, media_locations: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.attn(x, media, media_locations) * self.attn_gate.tanh() + x
        x = self.ff(x) * self.ff_gate.tanh() + x
        return x
