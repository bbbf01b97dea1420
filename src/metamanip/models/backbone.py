"""Flamingo-style vision-language backbone: open_clip ViT + Perceiver + gated cross-attention in an HF LM.

Each frame is processed independently (one `<image>` and the instruction per sequence, as RoboFlamingo);
temporal fusion is the decoder's job. The feature the decoder reads is the LM's hidden state per token,
max/mean-pooled over the tokens: all of them, padding included, as RoboFlamingo's heads pool
(`pool_padding: true`, the real presets), or the real tokens only (`pool_padding: false`, so a row's feature
does not depend on the other rows' lengths). Images are preprocessed as open_clip's eval transform
(bicubic resize of the shorter side, center crop, CLIP normalisation), which RoboFlamingo applies.

Attribute names follow OpenFlamingo (`vision_encoder`, `perceiver`, `lang_encoder`,
`lang_encoder.gated_cross_attn_layers`) so released checkpoints map onto them (docs/checkpoint_conversion.md).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from metamanip.models.language_model import END_OF_CHUNK_TOKEN, IMAGE_TOKEN, add_flamingo_tokens, input_embeddings
from metamanip.models.lm_injection import condition, inject_cross_attention
from metamanip.models.perceiver import PerceiverResampler
from metamanip.models.vision import patch_tokens, vision_width

log = logging.getLogger(__name__)

FUSION_MODES = ("pre", "post")


class FlamingoBackbone(nn.Module):
    """Images + text -> per-token LM features (N, L, d) and their pooled form (N, d)."""

    def __init__(
        self,
        vision_encoder: nn.Module,
        lang_encoder: nn.Module,
        tokenizer: Any,
        cross_attn_every_n_layers: int = 4,
        perceiver: dict[str, int] | None = None,
        cross_attn: dict[str, int] | None = None,
        use_gripper: bool = True,
        fusion_mode: str = "post",
        sep_resampler: bool = False,
        freeze_vision: bool = True,
        freeze_lm: bool = True,
        train_embeddings: bool = True,
        feature_layer: int | None = None,
        pooling: str = "max",
        pool_padding: bool = False,
        max_text_len: int = 32,
        decoder_layers_attr: str | None = None,
    ) -> None:
        super().__init__()
        if fusion_mode not in FUSION_MODES:
            raise ValueError(f"fusion_mode must be one of {FUSION_MODES}, got '{fusion_mode}'")
        if pooling not in ("max", "mean"):
            raise ValueError(f"pooling must be 'max' or 'mean', got '{pooling}'")
        self.use_gripper = use_gripper
        self.fusion_mode = fusion_mode
        self.feature_layer = feature_layer
        self.pooling = pooling
        self.pool_padding = pool_padding
        self.max_text_len = max_text_len
        self._warned_truncation = False
        self.freeze_vision = freeze_vision

        self.vision_encoder = vision_encoder
        self.vis_dim = vision_width(vision_encoder)
        size = vision_encoder.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        mean = getattr(vision_encoder, "image_mean", None) or OPENAI_DATASET_MEAN
        std = getattr(vision_encoder, "image_std", None) or OPENAI_DATASET_STD
        self.register_buffer("image_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

        self.perceiver = PerceiverResampler(dim=self.vis_dim, **(perceiver or {}))
        self.perceiver_gripper = copy.deepcopy(self.perceiver) if (sep_resampler and use_gripper) else None

        self.tokenizer = add_flamingo_tokens(tokenizer)
        self.media_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.eoc_token_id = self.tokenizer.convert_tokens_to_ids(END_OF_CHUNK_TOKEN)
        lang_encoder.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        self.lang_encoder = inject_cross_attention(
            lang_encoder,
            dim_visual=self.vis_dim,
            cross_attn_every_n_layers=cross_attn_every_n_layers,
            decoder_layers_attr=decoder_layers_attr,
            **(cross_attn or {}),
        )
        self.feature_dim: int = lang_encoder.config.hidden_size

        # trainable set as RoboFlamingo: resampler, cross-attention, token embeddings (the head is the decoder's)
        self.vision_encoder.requires_grad_(not freeze_vision)
        self.lang_encoder.requires_grad_(not freeze_lm)
        self.perceiver.requires_grad_(True)
        if self.perceiver_gripper is not None:
            self.perceiver_gripper.requires_grad_(True)
        self.lang_encoder.gated_cross_attn_layers.requires_grad_(True)
        if train_embeddings:
            input_embeddings(self.lang_encoder).requires_grad_(True)

    # ---------------------------------------------------------------- inputs
    def preprocess_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) or float in [0, 1] -> CLIP-normalised float (N, 3, h, w), as open_clip's eval
        transform on PIL images: shorter side resized to the model size (bicubic), then center-cropped."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
        x = clip_resize_crop(images, self.image_size)
        x = (x - self.image_mean) / self.image_std
        return x.to(self.image_mean.dtype)

    def tokenize(self, texts: list[str], device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """RoboFlamingo's prompt `<image>{text}<|endofchunk|>{eos}`, right-padded to the longest, truncated."""
        eos = self.tokenizer.eos_token or ""
        prompts = [f"{IMAGE_TOKEN}{t.strip()}{END_OF_CHUNK_TOKEN}{eos}" for t in texts]
        enc = self.tokenizer(
            prompts,
            max_length=self.max_text_len,
            padding="longest",
            truncation="only_first",
            return_tensors="pt",
        )
        ids = enc["input_ids"]
        if not self._warned_truncation and not (ids == self.eoc_token_id).any(dim=1).all():
            self._warned_truncation = True
            log.warning(
                "a prompt is longer than max_text_len=%d tokens and was cut (e.g. '%s'); raise "
                "backbone.max_text_len so the policy sees the whole feedback", self.max_text_len, texts[0][:80]
            )
        return ids.to(device), enc["attention_mask"].to(device)

    # ---------------------------------------------------------------- vision
    def _vision_tokens(self, images: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_vision):
            return patch_tokens(self.vision_encoder, images)

    def encode_vision(self, static: torch.Tensor, gripper: torch.Tensor | None = None) -> torch.Tensor:
        """Preprocessed images (N, 3, h, w) -> visual latents (N, 1, n, vis_dim) for cross-attention."""
        static_tokens = self._vision_tokens(static)
        if not self.use_gripper:
            return self.perceiver(static_tokens[:, None, None])
        if gripper is None:
            raise ValueError("this backbone was built with use_gripper=True; pass gripper images (rgb_gripper)")
        gripper_tokens = self._vision_tokens(gripper)
        if self.fusion_mode == "pre":
            return self.perceiver(torch.cat([static_tokens, gripper_tokens], dim=1)[:, None, None])
        gripper_perceiver = self.perceiver_gripper or self.perceiver
        return torch.cat(
            [self.perceiver(static_tokens[:, None, None]), gripper_perceiver(gripper_tokens[:, None, None])], dim=2
        )

    # ---------------------------------------------------------------- fusion
    def forward(
        self,
        static: torch.Tensor,
        gripper: torch.Tensor | None,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Per-frame features (N, L, d): one image pair and one prompt per row."""
        return self.forward_media(self.encode_vision(static, gripper), input_ids, attention_mask)

    def forward_media(self, vis_x: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Per-token features (N, L, d) of prompts cross-attending to given media latents (N, 1, n, vis_dim)
        (images from `encode_vision`, or any other media such as an encoded state)."""
        base = self.lang_encoder.base_model
        want_hidden = self.feature_layer is not None
        with condition(self.lang_encoder, vis_x, input_ids == self.media_token_id):
            out = base(
                input_ids=input_ids,
                attention_mask=attention_mask,
                output_hidden_states=want_hidden,
                use_cache=False,
            )
        if want_hidden:
            return out.hidden_states[self.feature_layer]
        return out.last_hidden_state

    def pool(self, features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(N, L, d) -> (N, d): over every token with `pool_padding` (RoboFlamingo's AdaptiveMax/AvgPool1d on
        the padded batch), else over the real tokens only."""
        if self.pool_padding:
            return features.amax(dim=1) if self.pooling == "max" else features.mean(dim=1)
        mask = attention_mask.bool().unsqueeze(-1)
        if self.pooling == "max":
            return features.masked_fill(~mask, torch.finfo(features.dtype).min).amax(dim=1)
        return (features * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def clip_resize_crop(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """open_clip's eval geometry (torchvision `Resize(shorter side, BICUBIC)` + `CenterCrop`) on a batch.

    uint8 input is resized like PIL (antialiased bicubic, a=-0.5; width then height, each pass rounded to
    uint8 levels) and returned in [0, 1]; float input in [0, 1] is resized without rounding."""
    was_uint8 = images.dtype == torch.uint8
    x = images.float() / 255.0 if was_uint8 else images.float()
    h, w = x.shape[-2:]
    th, tw = size
    if (h, w) != (th, tw):
        if th == tw:  # torchvision Resize(int): the shorter side becomes `th`, the longer keeps the ratio
            short, long = (h, w) if h <= w else (w, h)
            new_long = int(th * long / short)
            new = (th, new_long) if h <= w else (new_long, th)
        else:  # open_clip's ResizeKeepRatio for non-square targets: scale so that both sides cover the target
            scale = max(th / h, tw / w)
            new = (round(h * scale), round(w * scale))
        if was_uint8:  # PIL resizes width, then height, each pass rounded and clipped to uint8
            for size_step in ((h, new[1]), new):
                if tuple(x.shape[-2:]) != size_step:
                    x = F.interpolate(x, size=size_step, mode="bicubic", align_corners=False, antialias=True)
                    x = (x * 255.0).round().clamp(0, 255) / 255.0
        elif new != (h, w):
            x = F.interpolate(x, size=new, mode="bicubic", align_corners=False, antialias=True)
        h, w = new
        top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
        x = x[..., top : top + th, left : left + tw]
    return x
