"""Trainer checkpoints: written atomically, found again for automatic resume.

A checkpoint is one ``torch.save`` dict holding everything a run needs to continue bit-for-bit:
``policy`` (the policy checkpoint dict `metamanip.models.checkpoint` reads: format_version, config,
state_dict), ``optimizer``, ``scheduler``, ``scaler``, ``rng`` (per rank), ``step``, ``micro_step``
(the data position), ``config`` (the resolved run config) and ``logger_id``. It is written to a
temporary file in the same directory, fsynced and renamed, so a crash or SIGKILL mid-write leaves the
previous checkpoint intact.
"""
from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metamanip.atomic import atomic_path

log = logging.getLogger(__name__)

FORMAT = "metamanip-trainer"
FORMAT_VERSION = 1
LAST = "last.pt"
_STEP_RE = re.compile(r"step_(\d+)\.pt$")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` to `path` atomically (temp file in the same dir, fsync, rename)."""
    path = Path(path)
    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a trainer checkpoint, refusing files that are not one (with the reason and the fix)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trainer checkpoint at {path}; point to <run dir>/checkpoints/last.pt")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated or foreign file
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); delete it to "
                         "start over or resume from another checkpoint in the same folder") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a metamanip trainer checkpoint (no format={FORMAT!r}); a bare "
                         "policy checkpoint cannot be resumed, only evaluated")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer metamanip (format_version "
                         f"{state['format_version']} > {FORMAT_VERSION}); upgrade metamanip to resume it")
    return state


def find_resume_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """`last.pt` of a run, or else its highest `step_N.pt`; None when the run has none."""
    ckpt_dir = Path(ckpt_dir)
    if (ckpt_dir / LAST).is_file():
        return ckpt_dir / LAST
    steps = sorted(((int(m.group(1)), p) for p in ckpt_dir.glob("step_*.pt")
                    if (m := _STEP_RE.search(p.name))), key=lambda x: x[0])
    return steps[-1][1] if steps else None


def step_checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """This process's random states (python, numpy, torch CPU/CUDA and the augmentation generator)."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["augment"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Undo `capture_rng`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):
            log.warning("CUDA RNG states do not match this machine's GPUs; not restored")
    if generator is not None and "augment" in state:
        generator.set_state(state["augment"])
