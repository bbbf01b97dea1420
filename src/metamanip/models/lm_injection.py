"""Insert gated cross-attention blocks into any `transformers` causal LM.

Instead of subclassing each LM family, the blocks are stored on the LM as `gated_cross_attn_layers`
(OpenFlamingo's name, one entry per decoder layer, `None` where there is no block) and run by a forward
pre-hook on each decoder layer: the hook rewrites the layer's `hidden_states` input. The LM's own parameter
names stay untouched, so its pretrained weights load before or after the insertion, and the same code serves
GPT-2, LLaMA, MPT, GPT-NeoX/Pythia, OPT and other families whose decoder layers sit in one `nn.ModuleList`.

Visual conditioning is pushed before the LM call with `condition(lm, vis_x, media_locations)`; without it
the LM behaves exactly as before the insertion.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from metamanip.models.cross_attention import GatedCrossAttentionBlock


@dataclass
class _Conditioning:
    vis_x: torch.Tensor | None = None
    media_locations: torch.Tensor | None = None


def find_decoder_layers(lm: nn.Module, attr: str | None = None) -> nn.ModuleList:
    """The LM's decoder layers: `attr` (dotted path) or the one ModuleList of `num_hidden_layers` entries."""
    if attr is not None:
        module = lm
        for part in attr.split("."):
            if not hasattr(module, part):
                raise ValueError(f"LM {type(lm).__name__} has no decoder layers at '{attr}' (missing '{part}')")
            module = getattr(module, part)
        if not isinstance(module, nn.ModuleList):
            raise ValueError(f"'{attr}' in {type(lm).__name__} is a {type(module).__name__}, not an nn.ModuleList")
        return module
    n_layers = getattr(getattr(lm, "config", None), "num_hidden_layers", None)
    candidates = [
        (name, m)
        for name, m in lm.named_modules()
        if isinstance(m, nn.ModuleList) and (n_layers is None or len(m) == n_layers) and len(m) > 0
    ]
    if not candidates:
        raise ValueError(
            f"could not find the decoder layers of {type(lm).__name__} (no nn.ModuleList of {n_layers} layers); "
            "set decoder_layers_attr (e.g. 'model.layers') in the backbone's lang_encoder config"
        )
    # the shallowest match is the decoder stack (nested lists of the same length are inside the layers)
    return min(candidates, key=lambda c: c[0].count("."))[1]


def inject_cross_attention(
    lm: nn.Module,
    dim_visual: int,
    cross_attn_every_n_layers: int = 1,
    dim_head: int = 64,
    heads: int = 8,
    ff_mult: int = 4,
    only_attend_immediate_media: bool = True,
    decoder_layers_attr: str | None = None,
) -> nn.Module:
    """Add a gated cross-attention block before every decoder layer k with (k+1) % every == 0 (Flamingo)."""
    if cross_attn_every_n_layers < 1:
        raise ValueError(f"cross_attn_every_n_layers must be >= 1, got {cross_attn_every_n_layers}")
    if hasattr(lm, "gated_cross_attn_layers"):
        raise ValueError(f"{type(lm).__name__} already has gated_cross_attn_layers; inject only once")
    layers = find_decoder_layers(lm, decoder_layers_attr)
    dim = lm.config.hidden_size
    blocks = [
        GatedCrossAttentionBlock(dim, dim_visual, dim_head, heads, ff_mult, only_attend_immediate_media)
        if (idx + 1) % cross_attn_every_n_layers == 0
        else None
        for idx in range(len(layers))
    ]
    if all(b is None for b in blocks):
        raise ValueError(
            f"cross_attn_every_n_layers={cross_attn_every_n_layers} exceeds the LM's {len(layers)} layers: "
            "no cross-attention block would be inserted"
        )
    lm.gated_cross_attn_layers = nn.ModuleList(blocks)
    # where the blocks' decoder layers sit (e.g. "transformer.blocks"): checkpoint conversion needs it
    lm.flamingo_decoder_layers_path = next(name for name, m in lm.named_modules() if m is layers)
    state = _Conditioning()
    lm._flamingo_conditioning = state  # plain attribute, not a module

    for layer, block in zip(layers, lm.gated_cross_attn_layers):
        if block is not None:
            layer.register_forward_pre_hook(_CrossAttentionHook(block, state), with_kwargs=True)
    return lm


class _CrossAttentionHook:
    """Runs one gated block on a decoder layer's input. A class, not a closure, so that deepcopy and
    pickling of the LM carry the hook over to the copied block and conditioning state."""

    def __init__(self, block: GatedCrossAttentionBlock, state: _Conditioning) -> None:
        self.block = block
        self.state = state

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        state = self.state
        if state.vis_x is None:
            return None
        if args:
            hidden = self.block(args[0], state.vis_x, state.media_locations)
            return (hidden, *args[1:]), kwargs
        hidden = self.block(kwargs["hidden_states"], state.vis_x, state.media_locations)
        return args, {**kwargs, "hidden_states": hidden}


@contextlib.contextmanager
def condition(
    lm: nn.Module, vis_x: torch.Tensor, media_locations: torch.Tensor | None = None
) -> Iterator[None]:
    """Within the block, every LM forward cross-attends to `vis_x` (B, T_img, n, d_visual)."""
    state: _Conditioning | None = getattr(lm, "_flamingo_conditioning", None)
    if state is None:
        raise ValueError("condition() needs an LM prepared with inject_cross_attention()")
    state.vis_x, state.media_locations = vis_x, media_locations
    try:
        yield
    finally:
        state.vis_x, state.media_locations = None, None
