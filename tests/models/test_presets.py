"""The conf/ presets compose, and the real ones have RoboFlamingo's sizes on the meta device."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKBONES, CONF, DECODERS
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from metamanip.models.policy import build_policy


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name=None, overrides=list(overrides))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_preset_composes_with_every_decoder(backbone):
    for decoder in DECODERS:
        cfg = _compose(f"+backbone={backbone}", f"+decoder={decoder}", "+policy=default")
        assert cfg.backbone._target_ == "metamanip.models.backbone.FlamingoBackbone"
        assert cfg.decoder._target_.startswith(f"metamanip.models.decoders.{decoder}.")


def test_flamingo_mpt_3b_on_the_meta_device_has_robo_flamingo_sizes():
    cfg = _compose("+backbone=flamingo_mpt_3b", "+decoder=lstm", "+policy=default")
    cfg.backbone.vision_encoder.pretrained = None
    cfg.backbone.lang_encoder.pretrained = None
    cfg.backbone.tokenizer = OmegaConf.create(
        {"_target_": "metamanip.models.language_model.stand_in_tokenizer", "vocab_size": 50277}
    )
    with torch.device("meta"):
        policy = build_policy(cfg)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    bb = policy.backbone
    assert count(bb.vision_encoder) == pytest.approx(304.0e6, rel=0.01)          # ViT-L/14 visual tower
    assert count(bb.perceiver) == pytest.approx(63.0e6, rel=0.01)                # reference: 63.0 M
    assert count(bb.lang_encoder.gated_cross_attn_layers) == pytest.approx(881e6, rel=0.01)  # 24 blocks
    assert bb.lang_encoder.get_input_embeddings().weight.shape == (50280, 2048)  # + <|endofchunk|>, <image>, <PAD>
    assert count(policy.decoder) == pytest.approx(41e6, rel=0.02)               # LSTM 4x1024 + heads
    assert sum(p.numel() for p in policy.trainable_parameters()) == pytest.approx(1.088e9, rel=0.01)
