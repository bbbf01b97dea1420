"""The backbone's inputs and pooled feature match RoboFlamingo's: open_clip's image transform, max-pooling
over the padded batch."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from conftest import tiny_config
from open_clip.constants import OPENAI_DATASET_STD
from PIL import Image
from torch import nn

from metamanip.models.backbone import clip_resize_crop
from metamanip.models.policy import build_policy

ONE_LEVEL = 1.0 / 255 / min(OPENAI_DATASET_STD)  # one uint8 step after CLIP normalisation


@pytest.mark.parametrize("size", [224, 32])
@pytest.mark.parametrize("shape", [(200, 200), (84, 84), (120, 160), (300, 260)])
def test_images_are_preprocessed_as_open_clips_transform(size, shape):
    rng = np.random.default_rng(0)
    image = (rng.random((*shape, 3)) * 255).astype(np.uint8)  # noise: the hardest case for interpolation
    reference = open_clip.image_transform(size, is_train=False)(Image.fromarray(image))
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(3, 1, 1)
    ours = (clip_resize_crop(torch.from_numpy(image).permute(2, 0, 1)[None], (size, size))[0] - mean) / std
    diff = (ours - reference).abs()
    assert diff.max() <= ONE_LEVEL * 1.01 and diff.mean() < 1e-4  # PIL's fixed-point rounding, rarely


def test_the_backbone_uses_that_transform():
    policy = build_policy(tiny_config("tiny"))
    bb = policy.backbone
    images = torch.randint(0, 256, (2, 3, 84, 84), dtype=torch.uint8)
    reference = open_clip.image_transform(bb.image_size[0], is_train=False)
    expected = torch.stack([reference(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in images])
    assert (bb.preprocess_images(images) - expected).abs().max() <= ONE_LEVEL * 1.01


def _features(backbone: str, texts: list[str]):
    torch.manual_seed(0)
    policy = build_policy(tiny_config(backbone)).eval()
    bb = policy.backbone
    ids, mask = bb.tokenize(texts)
    static = bb.preprocess_images(torch.randint(0, 256, (len(texts), 3, 24, 24), dtype=torch.uint8))
    gripper = bb.preprocess_images(torch.randint(0, 256, (len(texts), 3, 12, 12), dtype=torch.uint8))
    with torch.no_grad():
        return bb, bb(static, gripper, ids, mask), mask, (static, gripper)


@pytest.mark.parametrize("pooling, robo_flamingo_pool", [("max", nn.AdaptiveMaxPool1d(1)),
                                                         ("mean", nn.AdaptiveAvgPool1d(1))])
def test_a_padded_batch_pools_as_robo_flamingo(pooling, robo_flamingo_pool):
    bb, features, mask, (static, gripper) = _features("flamingo_mpt_3b", ["w5 w6 w7 w8 w9 w10", "w11"])
    assert bb.pool_padding and (mask == 0).any()
    bb.pooling = pooling
    expected = robo_flamingo_pool(features.permute(0, 2, 1)).squeeze(-1)  # RoboFlamingo's heads: every token
    torch.testing.assert_close(bb.pool(features, mask), expected, atol=0, rtol=0)
    # padding counts, as in RoboFlamingo: the short prompt alone pools differently
    ids, short_mask = bb.tokenize(["w11"])
    with torch.no_grad():
        alone = bb.pool(bb(static[1:], gripper[1:], ids, short_mask), short_mask)
    assert (alone[0] - bb.pool(features, mask)[1]).abs().max() > 1e-4


def test_an_unpadded_batch_pools_over_every_token():
    bb, features, mask, _ = _features("flamingo_mpt_3b", ["w5 w6", "w7 w8"])
    assert bool(mask.all())
    torch.testing.assert_close(bb.pool(features, mask), features.amax(dim=1), atol=0, rtol=0)


def test_the_tiny_preset_pools_real_tokens_only():
    bb, features, mask, _ = _features("tiny", ["open the drawer and then push the button", "go"])
    assert not bb.pool_padding
    real = features[1, mask[1].bool()]
    torch.testing.assert_close(bb.pool(features, mask)[1], real.amax(dim=0), atol=0, rtol=0)
