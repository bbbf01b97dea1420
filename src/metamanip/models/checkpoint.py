"""Policy checkpoints: the trainable parameters, the config that built them and a format version.

Frozen weights that come from a pretrained source (`pretrained:` set in the config) are not stored; they are
reloaded from that source when the policy is rebuilt. Frozen weights that were randomly initialised (the
`tiny` preset) are stored, since nothing else could reproduce them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from metamanip.atomic import atomic_path
from metamanip.models.policy import FlamingoPolicy, build_policy

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# policy attribute path of each component that may come from a pretrained source -> its config node
_PRETRAINABLE = {"backbone.vision_encoder.": "vision_encoder", "backbone.lang_encoder.": "lang_encoder"}


def _random_init_prefixes(config: Mapping[str, Any] | None) -> list[str]:
    backbone = (config or {}).get("backbone") or {}
    return [prefix for prefix, node in _PRETRAINABLE.items() if not (backbone.get(node) or {}).get("pretrained")]


def policy_state_dict(policy: FlamingoPolicy) -> dict[str, torch.Tensor]:
    """Trainable parameters + every tensor of randomly initialised components + the state encoder's
    normalisation statistics, on CPU."""
    trainable = {name for name, p in policy.named_parameters() if p.requires_grad}
    prefixes = _random_init_prefixes(policy.config) + ["state_encoder."]
    prefixes += list(getattr(policy, "checkpoint_prefixes", ()))  # a policy's own frozen parts and buffers
    return {
        name: t.detach().cpu()
        for name, t in policy.state_dict().items()
        if name in trainable or any(name.startswith(p) for p in prefixes)
    }


def checkpoint_payload(policy: FlamingoPolicy) -> dict[str, Any]:
    """The dict a policy checkpoint holds; a trainer checkpoint stores it under "policy"."""
    if policy.config is None:
        raise ValueError("this policy was not built by build_policy (no config): cannot checkpoint it")
    return {"format_version": FORMAT_VERSION, "config": policy.config, "state_dict": policy_state_dict(policy)}


def save_policy(policy: FlamingoPolicy, path: str | os.PathLike) -> Path:
    """Write the policy checkpoint atomically (temp file + rename): never half-written."""
    path = Path(path)
    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save(checkpoint_payload(policy), tmp)
    return path


def load_policy_state(policy: FlamingoPolicy, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a checkpoint's state dict, naming the first offending key on any mismatch."""
    own = policy.state_dict()
    unexpected = [k for k in state_dict if k not in own]
    if unexpected:
        raise ValueError(
            f"checkpoint key '{unexpected[0]}' ({len(unexpected)} unexpected in all) does not exist in this policy; "
            "was it saved with a different backbone/decoder config?"
        )
    for key, value in state_dict.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"checkpoint key '{key}' has shape {tuple(value.shape)} but the policy expects "
                f"{tuple(own[key].shape)}; the checkpoint was saved with a different config"
            )
    missing = [k for k in policy_state_dict(policy) if k not in state_dict]
    if missing:
        raise ValueError(
            f"checkpoint is missing key '{missing[0]}' ({len(missing)} missing in all); "
            "it does not hold this policy's trainable parameters"
        )
    policy.load_state_dict(dict(state_dict), strict=False)


def read_payload(source: str | os.PathLike | Mapping[str, Any], map_location: str | torch.device = "cpu") -> dict:
    """A policy payload from a file or dict; accepts trainer checkpoints that nest it under "policy"."""
    if isinstance(source, Mapping):
        payload = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}; pass ckpt=<path to a .pt written by training>")
        try:
            payload = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # torch raises several types for truncated/corrupt files
            raise ValueError(f"checkpoint {path} cannot be read ({exc}); it is corrupt or not a torch file") from exc
    if "policy" in payload and isinstance(payload["policy"], Mapping):
        payload = dict(payload["policy"])
    for key in ("format_version", "config", "state_dict"):
        if key not in payload:
            raise ValueError(f"not a metamanip policy checkpoint: no '{key}' (keys: {sorted(payload)})")
    if payload["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint format_version {payload['format_version']} is not supported (this code reads "
            f"{FORMAT_VERSION}); convert it or use the matching metamanip version"
        )
    return payload


def load_policy(
    source: str | os.PathLike | Mapping[str, Any], map_location: str | torch.device = "cpu"
) -> FlamingoPolicy:
    """Rebuild a policy from a checkpoint's config and load its parameters."""
    payload = read_payload(source, map_location)
    policy = build_policy(payload["config"])
    load_policy_state(policy, payload["state_dict"])
    return policy.to(map_location)
