"""The vision tower: QuickGELU wherever OpenAI CLIP weights are loaded, patch tokens before ln_post."""

from __future__ import annotations

import json
import warnings

import open_clip
import pytest
import torch
from conftest import CONF
from omegaconf import OmegaConf

from metamanip.models.vision import build_vision_encoder, is_torchscript_archive, needs_quick_gelu, uses_quick_gelu

NAME = "metamanip-test-vit64"
# widths of 64 so that the OpenAI layout (heads = width // 64) describes it too
CFG = {"embed_dim": 32, "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "head_width": 64, "patch_size": 8},
       "text_cfg": {"context_length": 4, "vocab_size": 16, "width": 64, "heads": 1, "layers": 1}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A CLIP model config without quick_gelu (as open_clip's ViT-L-14), its weights as a plain state dict and
    as a TorchScript archive (the format of OpenAI's own release files)."""
    tmp = tmp_path_factory.mktemp("vit")
    (tmp / f"{NAME}.json").write_text(json.dumps(CFG))
    open_clip.add_model_config(tmp / f"{NAME}.json")
    torch.manual_seed(0)
    clip = open_clip.create_model(NAME, force_quick_gelu=True).eval()
    torch.save(clip.state_dict(), tmp / "plain.pt")
    example = (torch.randn(1, 3, 16, 16), torch.zeros(1, 4, dtype=torch.long))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.jit.trace(clip, example, strict=False).save(str(tmp / "openai.pt"))
    return clip, tmp


def test_openai_tags_need_quick_gelu():
    assert "quick_gelu" not in open_clip.get_model_config("ViT-L-14")  # open_clip 3.x would build nn.GELU
    assert needs_quick_gelu("ViT-L-14", "openai")
    assert not needs_quick_gelu("ViT-L-14", "laion2b_s32b_b82k")


def test_an_openai_release_file_loads_with_quick_gelu(files):
    clip, tmp = files
    assert is_torchscript_archive(tmp / "openai.pt") and not is_torchscript_archive(tmp / "plain.pt")
    visual = build_vision_encoder(NAME, str(tmp / "openai.pt")).eval()
    assert uses_quick_gelu(visual)
    images = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(visual(images), clip.visual(images))


def test_quick_gelu_is_honoured_with_a_local_weight_file(files):
    clip, tmp = files
    assert not uses_quick_gelu(build_vision_encoder(NAME, str(tmp / "plain.pt")))
    visual = build_vision_encoder(NAME, str(tmp / "plain.pt"), quick_gelu=True).eval()
    assert uses_quick_gelu(visual)
    images = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(visual(images), clip.visual(images))


@pytest.mark.parametrize("preset", ["flamingo_mpt_3b", "flamingo_rpj_4b", "flamingo_mpt_9b", "flamingo_llama_9b"])
@pytest.mark.parametrize("drop_flag", [False, True])
def test_every_real_preset_asks_open_clip_for_quick_gelu(preset, drop_flag, monkeypatch):
    calls = []

    def fake_create_model(name, **kwargs):  # records what open_clip would be asked for, downloads nothing
        calls.append((name, kwargs))
        return torch.nn.Module()

    monkeypatch.setattr(open_clip, "create_model", fake_create_model)
    node = OmegaConf.to_container(OmegaConf.load(CONF / "backbone" / f"{preset}.yaml").vision_encoder)
    assert node["pretrained"] == "openai"
    if drop_flag:  # the tag alone is enough
        node.pop("quick_gelu")
    node.pop("_target_")
    with pytest.raises(AttributeError):  # the fake has no `.visual`
        build_vision_encoder(**node)
    assert calls == [("ViT-L-14", {"pretrained": "openai", "cache_dir": None, "force_quick_gelu": True})]
