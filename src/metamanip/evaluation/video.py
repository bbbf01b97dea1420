"""Episode videos: both cameras side by side with the feedback in force written underneath.

Small camera images are scaled up (nearest neighbour) so the caption stays readable; the file is written
to a temporary name and renamed, so a crash never leaves a truncated video behind.
"""
from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from metamanip.atomic import atomic_path

log = logging.getLogger(__name__)

MIN_HEIGHT = 192
CAPTION_LINES = 4


def compose_frame(static: np.ndarray | None, gripper: np.ndarray | None, text: str,
                  trial: int | None = None) -> np.ndarray:
    """One video frame (H, W, 3) uint8: static | gripper camera, caption band with `text` below."""
    panels = [p for p in (static, gripper) if p is not None]
    if not panels:
        raise ValueError("a video frame needs at least one camera image; build the env with cameras "
                         "(env.sim.cameras) to record videos")
    height = max(MIN_HEIGHT, max(p.shape[0] for p in panels))
    scaled = []
    for p in panels:
        p = np.asarray(p, dtype=np.uint8)
        if p.ndim == 2:
            p = np.repeat(p[..., None], 3, axis=-1)
        factor = height / p.shape[0]
        img = Image.fromarray(p[..., :3]).resize((max(1, round(p.shape[1] * factor)), height), Image.NEAREST)
        scaled.append(np.asarray(img))
    top = np.concatenate(scaled, axis=1)
    width = top.shape[1]
    font = _font()
    char_w = max(1, round(_text_width(font, "abcdefghijklmnopqrstuvwxyz ,.") / 29 + 0.5))
    line_h = _line_height(font)
    caption = f"[trial {trial}] {text}" if trial is not None else text
    lines = textwrap.wrap(caption, width=max(10, width // char_w))[:CAPTION_LINES]
    band = Image.new("RGB", (width, line_h * CAPTION_LINES + 6), (0, 0, 0))
    draw = ImageDraw.Draw(band)
    for i, line in enumerate(lines):
        draw.text((3, 3 + i * line_h), line, fill=(255, 255, 255), font=font)
    frame = np.concatenate([top, np.asarray(band)], axis=0)
    # even sizes keep H.264 encoders happy
    return frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int = 30) -> Path:
    """Encode `frames` to `path` (mp4 through imageio-ffmpeg), atomically."""
    import imageio.v2 as imageio

    path = Path(path)
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    with atomic_path(path) as tmp:
        with imageio.get_writer(tmp, fps=fps, macro_block_size=1) as w:
            for f in frames:
                w.append_data(f)
    log.info("wrote video %s (%d frames)", path, len(frames))
    return path


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _text_width(font: ImageFont.ImageFont, s: str) -> int:
    box = font.getbbox(s)
    return box[2] - box[0]


def _line_height(font: ImageFont.ImageFont) -> int:
    box = font.getbbox("Ag")
    return box[3] - box[1] + 4
