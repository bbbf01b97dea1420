"""The frozen vision tower: an open_clip ViT whose patch tokens feed the Perceiver resampler."""

from __future__ import annotations

import logging
import os
import zipfile
from typing import Any

import open_clip
import torch
from torch import nn

log = logging.getLogger(__name__)

# a minimal text tower: open_clip only builds CLIP models as a pair, and the policy keeps the visual half
_STUB_TEXT_CFG = {"context_length": 2, "vocab_size": 2, "width": 8, "heads": 1, "layers": 1}


def build_vision_encoder(
    model_name: str | None = None,
    pretrained: str | None = None,
    vision_cfg: dict[str, Any] | None = None,
    quick_gelu: bool = False,
    cache_dir: str | None = None,
) -> nn.Module:
    """An open_clip VisionTransformer (the `visual` half of a CLIP model).

    - `model_name` + `pretrained` (an open_clip tag such as "openai", or a local checkpoint path): load weights.
    - `model_name` alone: the named architecture with random weights (fine on the meta device).
    - `vision_cfg`: an architecture given inline (image_size, patch_size, width, layers, head_width, ...),
      e.g. the `tiny` preset; overrides fields of `model_name`'s config when both are given.
    """
    if model_name is None and vision_cfg is None:
        raise ValueError("build_vision_encoder needs model_name (e.g. 'ViT-L-14') or an inline vision_cfg")
    if pretrained is not None:
        if model_name is None:
            raise ValueError("pretrained vision weights need model_name (the open_clip architecture)")
        quick_gelu = quick_gelu or needs_quick_gelu(model_name, pretrained)
        log.info("loading open_clip %s weights from %s (quick_gelu=%s)", model_name, pretrained, quick_gelu)
        try:
            if os.path.isfile(pretrained) and is_torchscript_archive(pretrained):
                model = _load_openai_archive(model_name, pretrained)
            else:
                model = open_clip.create_model(
                    model_name, pretrained=pretrained, cache_dir=cache_dir, force_quick_gelu=quick_gelu
                )
        except (OSError, RuntimeError, ValueError) as exc:
            raise RuntimeError(
                f"cannot load open_clip {model_name} weights '{pretrained}' ({exc}); without hub access point "
                "backbone.vision_encoder.pretrained at a local checkpoint file, or set it to null for random init"
            ) from exc
        return model.visual
    cfg: dict[str, Any] = {"embed_dim": 512, "vision_cfg": {}}
    if model_name is not None:
        named = open_clip.get_model_config(model_name)
        if named is None:
            raise ValueError(
                f"unknown open_clip model '{model_name}'; pick one of open_clip.list_models() or give vision_cfg"
            )
        cfg = named
        quick_gelu = quick_gelu or bool(named.get("quick_gelu", False))
    vcfg = {**cfg["vision_cfg"], **dict(vision_cfg or {})}
    if isinstance(vcfg.get("layers"), (list, tuple)) or vcfg.get("timm_model_name"):
        raise ValueError("only ViT vision towers are supported (patch tokens feed the Perceiver)")
    clip = open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=vcfg, text_cfg=_STUB_TEXT_CFG, quick_gelu=quick_gelu)
    return clip.visual


def needs_quick_gelu(model_name: str, pretrained: str) -> bool:
    """Whether weights `pretrained` were trained with QuickGELU: an open_clip tag that says so (`openai`,
    the `*_quickgelu` tags), or a TorchScript archive as OpenAI released its CLIP files (ViT-L-14.pt).

    open_clip 3.x builds e.g. ViT-L-14 with nn.GELU unless asked, so OpenAI weights would run with the
    wrong activation; open_clip 2.20 (OpenFlamingo, RoboFlamingo) got QuickGELU through `load_openai_model`.
    """
    tag = open_clip.get_pretrained_cfg(model_name, pretrained)
    if tag:
        return bool(tag.get("quick_gelu", False))
    return os.path.isfile(pretrained) and is_torchscript_archive(pretrained)


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """A TorchScript zip (what OpenAI's CLIP downloads are) rather than a plain `torch.save` file."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("/constants.pkl") for name in zf.namelist())


def _load_openai_archive(model_name: str, path: str) -> nn.Module:
    """A CLIP model from OpenAI's TorchScript release file, with QuickGELU (open_clip 3.x's `create_model`
    refuses these archives under torch's weights_only loading)."""
    model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=True)
    state = torch.jit.load(path, map_location="cpu").state_dict()
    # OpenAI's archives carry these scalars; traced open_clip models carry non-persistent buffers (attn_mask)
    extra = {"input_resolution", "context_length", "vocab_size"} | {name for name, _ in model.named_buffers()}
    for key in extra - set(model.state_dict()):
        state.pop(key, None)
    model.load_state_dict(state, strict=True)
    return model.float()


def uses_quick_gelu(visual: nn.Module) -> bool:
    """Whether an open_clip tower's MLPs use QuickGELU."""
    return any(isinstance(m, open_clip.transformer.QuickGELU) for m in visual.modules())


def vision_width(visual: nn.Module) -> int:
    """Width of the patch tokens of an open_clip ViT."""
    return visual.conv1.out_channels


def patch_tokens(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) normalised images -> (N, n_patches, width) tokens before `ln_post`, CLS removed.

    Taking them before `ln_post` reproduces what OpenFlamingo's Perceiver was trained on (open_clip 2.20).
    """
    out = visual.forward_intermediates(images, indices=1, intermediates_only=True, output_fmt="NLC")
    return out["image_intermediates"][-1]
