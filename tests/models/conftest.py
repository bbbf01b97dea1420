"""Tiny policy configs built from the real conf/ presets, and fake WindowDataset batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"
DECODERS = ("lstm", "fc", "gpt", "diffusion", "discrete")
BACKBONES = ("tiny", "flamingo_mpt_3b", "flamingo_rpj_4b", "flamingo_mpt_9b", "flamingo_llama_9b")

# LM fields that shrink each real preset's language model to test size (same model_type, same code paths)
_SHRINK_LM = {
    "mpt": {"d_model": 32, "n_heads": 2, "n_layers": 4, "max_seq_len": 64, "vocab_size": 128},
    "gpt_neox": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
                 "max_position_embeddings": 64, "vocab_size": 128},
    "llama": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
              "num_key_value_heads": 2, "max_position_embeddings": 64, "vocab_size": 128},
}
_TINY_VISION = {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16}


def tiny_config(backbone: str = "tiny", decoder: str = "lstm", **policy) -> dict:
    """A policy config from conf/ with real presets shrunk to test size (random init, no files)."""
    bb = OmegaConf.to_container(OmegaConf.load(CONF / "backbone" / f"{backbone}.yaml"))
    if backbone != "tiny":
        bb["vision_encoder"] = {"_target_": "metamanip.models.vision.build_vision_encoder", "vision_cfg": _TINY_VISION}
        lm = bb["lang_encoder"]
        lm["pretrained"] = None
        lm["config"].update(_SHRINK_LM[lm["config"]["model_type"]])
        lm["config"].pop("attn_config", None)
        bb["tokenizer"] = {"_target_": "metamanip.models.language_model.stand_in_tokenizer", "vocab_size": 120}
        bb["perceiver"] = {"depth": 1, "dim_head": 8, "heads": 2, "num_latents": 4, "ff_mult": 2}
        bb["cross_attn"] = {"dim_head": 8, "heads": 2, "ff_mult": 2}
    dec = OmegaConf.to_container(OmegaConf.load(CONF / "decoder" / f"{decoder}.yaml"))
    if decoder == "gpt":
        dec.update(n_layer=2, n_head=2)
    if decoder == "lstm":
        dec.update(num_layers=2)
    pol = {**OmegaConf.to_container(OmegaConf.load(CONF / "policy" / "tiny.yaml")), "window_size": 3, **policy}
    return {"backbone": bb, "decoder": dec, "policy": pol}


def fake_batch(b: int = 2, t: int = 3, size: int = 24, seed: int = 0) -> dict:
    """A collated WindowDataset batch: uint8 images, robot_obs, relative actions with gripper +-1, texts."""
    g = torch.Generator().manual_seed(seed)
    arm = torch.rand(b, t, 6, generator=g) * 2 - 1
    grip = torch.randint(0, 2, (b, t, 1), generator=g).float() * 2 - 1
    texts = ["first trial. episode objects: drawer, slider, led", "open the drawer", "push the button", "x"]
    return {
        "rgb_static": torch.randint(0, 256, (b, t, 3, size, size), generator=g, dtype=torch.uint8),
        "rgb_gripper": torch.randint(0, 256, (b, t, 3, size // 2, size // 2), generator=g, dtype=torch.uint8),
        "robot_obs": torch.randn(b, t, 15, generator=g),
        "actions": torch.cat([arm, grip], dim=-1),
        "text": [texts[i % len(texts)] for i in range(b)],
    }


def step_obs(batch: dict, step: int) -> dict:
    """The observations of step `step` of every window, as select_action receives them (N, H, W, 3) numpy."""
    return {
        "rgb_static": batch["rgb_static"][:, step].permute(0, 2, 3, 1).numpy(),
        "rgb_gripper": batch["rgb_gripper"][:, step].permute(0, 2, 3, 1).numpy(),
        "robot_obs": batch["robot_obs"][:, step].numpy(),
    }


@pytest.fixture(autouse=True)
def _few_threads():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
