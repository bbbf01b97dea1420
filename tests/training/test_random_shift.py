import torch
import torch.nn.functional as F

from metamanip.training.augment import RandomShift, random_shift


def pad_then_crop(image: torch.Tensor, dy: int, dx: int, pad: int) -> torch.Tensor:
    padded = F.pad(image[None].float(), (pad, pad, pad, pad), mode="replicate")[0]
    h, w = image.shape[-2:]
    return padded[:, dy:dy + h, dx:dx + w]


def _offsets(out: torch.Tensor, src: torch.Tensor, pad: int) -> tuple[int, int]:
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            if torch.equal(pad_then_crop(src, dy, dx, pad), out.float()):
                return dy, dx
    raise AssertionError("output is not a pad-then-crop shift of the input")


def test_shift_is_replicate_pad_then_crop_and_keeps_dtype():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 4, 3, 10, 12), dtype=torch.uint8, generator=g)
    out = random_shift(images, pad=2, consistent=False, generator=torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    offsets = {_offsets(out[b, t], images[b, t], 2) for b in range(3) for t in range(4)}
    assert len(offsets) > 1  # independent per frame


def test_consistent_shift_is_shared_across_a_window_only():
    images = torch.randint(0, 256, (6, 5, 3, 9, 9), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    out = random_shift(images, pad=3, consistent=True, generator=torch.Generator().manual_seed(3))
    per_window = [{_offsets(out[b, t], images[b, t], 3) for t in range(5)} for b in range(6)]
    assert all(len(s) == 1 for s in per_window)
    assert len({next(iter(s)) for s in per_window}) > 1


def test_same_generator_state_gives_same_shifts_and_pad_zero_is_identity():
    images = torch.rand(2, 3, 3, 8, 8)
    a = random_shift(images, 2, generator=torch.Generator().manual_seed(5))
    b = random_shift(images, 2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert random_shift(images, 0) is images


def test_random_shift_applies_per_camera_pads():
    batch = {"rgb_static": torch.randint(0, 256, (2, 2, 3, 8, 8), dtype=torch.uint8),
             "rgb_gripper": torch.randint(0, 256, (2, 2, 3, 4, 4), dtype=torch.uint8), "text": ["a", "b"]}
    aug = RandomShift({"rgb_static": 2, "rgb_gripper": 0})
    out = aug(batch, torch.Generator().manual_seed(0))
    assert out["rgb_gripper"] is batch["rgb_gripper"] and out["text"] == ["a", "b"]
    assert not torch.equal(out["rgb_static"], batch["rgb_static"])
    assert not RandomShift({"rgb_static": 0})
