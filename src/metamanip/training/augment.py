"""Random-shift augmentation (`rgb_pad`, `gripper_pad`) for windows of camera frames.

Each image is replicate-padded by `pad` pixels and cropped back to its size at a random integer offset
in [0, 2·pad] (the DrQ shift). With `consistent=True` one offset is drawn per window and shared by all
its frames, so the camera does not jitter inside a trajectory; otherwise each frame gets its own.
Works on uint8 or float tensors shaped (B, T, C, H, W), on any device, with an explicit generator so a
resumed run draws the same shifts.
"""
from __future__ import annotations

import torch


def random_shift(images: torch.Tensor, pad: int, consistent: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift every image of a (B, T, C, H, W) batch by a random integer offset of at most `pad`."""
    if pad <= 0:
        return images
    if images.ndim != 5:
        raise ValueError(f"random_shift expects (B, T, C, H, W) images, got shape {tuple(images.shape)}")
    b, t, c, h, w = images.shape
    n = b * t
    flat = images.reshape(n, c, h, w)
    # replicate padding is not implemented for integer tensors; pad the index grid instead of the pixels
    rows = torch.arange(h, device=images.device)
    cols = torch.arange(w, device=images.device)
    draws = b if consistent else n
    offsets = torch.randint(0, 2 * pad + 1, (draws, 2), generator=generator,
                            device=generator.device if generator is not None else "cpu")
    offsets = offsets.to(images.device)
    if consistent:
        offsets = offsets.repeat_interleave(t, dim=0)
    # source row of output row i is clamp(i + dy - pad, 0, h - 1): identical to replicate-pad then crop
    src_rows = (rows[None, :] + offsets[:, :1] - pad).clamp_(0, h - 1)  # (n, h)
    src_cols = (cols[None, :] + offsets[:, 1:] - pad).clamp_(0, w - 1)  # (n, w)
    idx_n = torch.arange(n, device=images.device)[:, None, None]
    out = flat.permute(0, 2, 3, 1)[idx_n, src_rows[:, :, None], src_cols[:, None, :]]  # (n, h, w, c)
    out = out.permute(0, 3, 1, 2).contiguous()
    return out.reshape(b, t, c, h, w)


class RandomShift:
    """Applies `random_shift` to the camera keys of a batch (`rgb_static` by `rgb_pad`, …)."""

    def __init__(self, pads: dict[str, int], consistent: bool = True) -> None:
        self.pads = {k: int(v) for k, v in pads.items() if v and int(v) > 0}
        self.consistent = consistent

    def __call__(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        if not self.pads:
            return batch
        out = dict(batch)
        for key, pad in self.pads.items():
            if key in out:
                out[key] = random_shift(out[key], pad, self.consistent, generator)
        return out

    def __bool__(self) -> bool:
        return bool(self.pads)
