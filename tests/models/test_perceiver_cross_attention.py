"""Perceiver resampler and masked cross-attention: shapes, masking and OpenFlamingo parameter names."""

from __future__ import annotations

import pytest
import torch

from metamanip.models.cross_attention import GatedCrossAttentionBlock, MaskedCrossAttention
from metamanip.models.perceiver import PerceiverResampler


def test_perceiver_maps_any_token_count_to_fixed_latents_with_openflamingo_names():
    p = PerceiverResampler(dim=16, depth=2, dim_head=8, heads=2, num_latents=5, ff_mult=2)
    assert p(torch.randn(3, 1, 1, 7, 16)).shape == (3, 1, 5, 16)
    assert p(torch.randn(2, 1, 2, 11, 16)).shape == (2, 1, 5, 16)
    names = set(dict(p.named_parameters()))
    assert {"latents", "layers.0.0.norm_media.weight", "layers.0.0.to_kv.weight", "layers.1.1.1.weight",
            "layers.1.1.3.weight", "norm.weight"} <= names
    with pytest.raises(ValueError, match=r"\(B, T, F, v, D\)"):
        p(torch.randn(3, 7, 16))


def test_tokens_attend_only_to_their_latest_media():
    torch.manual_seed(0)
    attn = MaskedCrossAttention(dim=8, dim_visual=6, dim_head=4, heads=2)
    x = torch.randn(1, 6, 8)
    media_locations = torch.tensor([[False, True, False, False, True, False]])  # media 1 at 1, media 2 at 4
    media = torch.randn(1, 2, 3, 6)
    out = attn(x, media, media_locations)
    changed = media.clone()
    changed[:, 1] = torch.randn(3, 6)  # only the second media changes
    out2 = attn(x, changed, media_locations)
    assert torch.equal(out[:, 0], torch.zeros(8)) or out[:, 0].abs().max() < 1e-6  # before any media
    torch.testing.assert_close(out[:, 1:4], out2[:, 1:4])                       # tokens of media 1
    assert (out[:, 4:] - out2[:, 4:]).abs().max() > 1e-4                         # tokens of media 2


def test_gated_block_is_identity_at_init():
    block = GatedCrossAttentionBlock(dim=8, dim_visual=6, dim_head=4, heads=2, ff_mult=2)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(block(x, torch.randn(2, 1, 3, 6), torch.ones(2, 5, dtype=torch.bool)), x)
    assert {"attn.norm.weight", "attn.norm.bias", "ff.0.bias", "attn.to_q.weight", "attn.to_kv.weight", "attn.to_out.weight", "attn_gate",
            "ff.0.weight", "ff.1.weight", "ff.3.weight", "ff_gate"} == set(dict(block.named_parameters()))
