"""The policy: a Flamingo backbone per frame + an action decoder over the window (LeRobot-like API).

- `forward(batch)` takes a collated `WindowDataset` batch and returns `{"loss": ..., ...}` for training.
- `select_action(obs, text)` runs one backbone pass on the current frames of N environments, appends the
  pooled features to each environment's history (at most `window_size` steps) and decodes the last step;
  the decoder re-runs from scratch over that history, which equals the training forward on that window.
- `reset(env_ids)` clears histories between trials.

`obs` picks the inputs: `rgb` (cameras through the Flamingo backbone), `state` (robot_obs + scene_obs,
normalised with training-set statistics the policy stores, beside the LM's pooled feature of the feedback
text) or `rgb+state` (both, concatenated per step). The feedback always enters through the language model.
`text_input=first_trial` marks a policy trained and evaluated on the episode's first feedback in every
trial (the feedback ablation); the dataset and the evaluation agents read it from the policy config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from metamanip.models.backbone import FUSION_MODES, FlamingoBackbone
from metamanip.models.chunking import ChunkExecutor
from metamanip.models.state import OBS_MODES, StateEncoder

log = logging.getLogger(__name__)

POLICY_CONFIG_KEYS = ("backbone", "decoder", "policy")
WEIGHT_DECAY_SCOPES = ("matrices", "cross_attention")
TEXT_INPUTS = ("trial", "first_trial")


class FlamingoPolicy(nn.Module):
    """Backbone + decoder with per-environment inference history."""

    def __init__(
        self,
        backbone: FlamingoBackbone,
        decoder: nn.Module,
        window_size: int = 12,
        config: Mapping[str, Any] | None = None,
        weight_decay_on: str = "matrices",
        obs: str = "rgb",
        state_encoder: StateEncoder | None = None,
        text_input: str = "trial",
    ) -> None:
        super().__init__()
        if obs not in OBS_MODES:
            raise ValueError(f"policy.obs must be one of {OBS_MODES}, got '{obs}'")
        if (state_encoder is not None) != ("state" in obs):
            raise ValueError(f"policy.obs={obs} needs a state encoder exactly when it reads state")
        if text_input not in TEXT_INPUTS:
            raise ValueError(f"policy.text_input must be one of {TEXT_INPUTS}, got '{text_input}'")
        self.obs = obs
        self.uses_images = "rgb" in obs
        self.state_encoder = state_encoder
        self.text_input = text_input
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        if weight_decay_on not in WEIGHT_DECAY_SCOPES:
            raise ValueError(f"policy.weight_decay_on must be one of {WEIGHT_DECAY_SCOPES}, got '{weight_decay_on}'")
        self.weight_decay_on = weight_decay_on
        self.backbone = backbone
        self.decoder = decoder
        self.window_size = window_size
        self.config = dict(config) if config is not None else None
        self._history: list[list[torch.Tensor]] = []
        self.generator: torch.Generator | None = None  # set by seed(); used by sampling decoders
        # action chunks (decoder.fwd_pred_next_n > 1): how they are played (models/chunking.py); None = k 1
        self.chunker: ChunkExecutor | None = ChunkExecutor.for_decoder(decoder)

    # ---------------------------------------------------------------- parameters
    @property
    def device(self) -> torch.device:
        return self.backbone.image_mean.device

    @property
    def cameras(self) -> tuple[str, ...]:
        """The cameras the policy reads (none for `obs=state`)."""
        if not self.uses_images:
            return ()
        return ("static", "gripper") if self.backbone.use_gripper else ("static",)

    @property
    def feature_dim(self) -> int:
        """Width of a step feature (what the decoder reads): the LM's pooled feature, plus the encoded
        state when `obs` holds state."""
        extra = self.state_encoder.out_features if self.state_encoder is not None else 0
        return int(self.backbone.feature_dim) + extra

    def set_state_stats(self, mean: Any, std: Any) -> None:
        """Training-set statistics of the state (robot_obs then scene_obs), stored in the checkpoint."""
        if self.state_encoder is None:
            raise ValueError(f"this policy (obs={self.obs}) reads no state")
        self.state_encoder.set_stats(mean, std)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser should update (resampler, cross-attention, embeddings, decoder, ...)."""
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: decay on trainable weight matrices (all of them, or with `weight_decay_on:
        cross_attention` only those of the gated cross-attention blocks, as RoboFlamingo); none on biases,
        norms, gates, embeddings, Perceiver latents."""
        no_decay_ids = {id(p) for m in self.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        only_xattn = self.weight_decay_on == "cross_attention"
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            excluded = only_xattn and ".gated_cross_attn_layers." not in name
            if p.ndim < 2 or id(p) in no_decay_ids or name.endswith("latents") or excluded:
                no_decay.append(p)
            else:
                decay.append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def train(self, mode: bool = True) -> FlamingoPolicy:
        super().train(mode)
        if self.backbone.freeze_vision:
            self.backbone.vision_encoder.eval()
        return self

    def seed(self, seed: int) -> None:
        """Make sampling decoders (diffusion) reproducible at inference."""
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    # ---------------------------------------------------------------- features
    def encode_frames(
        self,
        static: torch.Tensor,
        gripper: torch.Tensor | None,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """uint8 images (N, 3, H, W) + token ids (N, L) -> pooled features (N, d)."""
        bb = self.backbone
        static = bb.preprocess_images(static)
        gripper = bb.preprocess_images(gripper) if (gripper is not None and bb.use_gripper) else None
        features = bb(static, gripper, input_ids, attention_mask)
        return bb.pool(features, attention_mask)

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Pooled LM features (N, d) of the prompts alone (no image): the text input of a state policy."""
        ids, mask = self.backbone.tokenize(list(texts), self.device)
        out = self.backbone.lang_encoder.base_model(input_ids=ids, attention_mask=mask, use_cache=False,
                                                    output_hidden_states=self.backbone.feature_layer is not None)
        hidden = out.hidden_states[self.backbone.feature_layer] if self.backbone.feature_layer is not None \
            else out.last_hidden_state
        return self.backbone.pool(hidden, mask)

    def window_features(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Collated batch -> per-step features (B, T, d'); every frame is encoded with its window's text,
        and with `obs` holding state the step's encoded state is appended."""
        texts = list(batch["text"])
        b = len(texts)
        parts = []
        if self.uses_images:
            static = torch.as_tensor(batch["rgb_static"], device=self.device)
            if static.ndim != 5:
                raise ValueError(f"batch['rgb_static'] must be (B, T, 3, H, W), got shape {tuple(static.shape)}")
            if static.shape[0] != b:
                raise ValueError(f"batch['text'] has {b} strings for a batch of {static.shape[0]} windows")
            t = static.shape[1]
            gripper = None
            if self.backbone.use_gripper:
                if "rgb_gripper" not in batch:
                    raise ValueError("the policy uses the gripper camera but the batch has no 'rgb_gripper'")
                gripper = torch.as_tensor(batch["rgb_gripper"], device=self.device).flatten(0, 1)
            ids, mask = self.backbone.tokenize(texts, self.device)
            ids, mask = ids.repeat_interleave(t, dim=0), mask.repeat_interleave(t, dim=0)
            pooled = self.encode_frames(static.flatten(0, 1), gripper, ids, mask)
            parts.append(pooled.unflatten(0, (b, t)))
        if self.state_encoder is not None:
            state = self.state_encoder.gather(batch)
            if state.ndim != 3 or state.shape[0] != b:
                raise ValueError(f"batch states must be (B, T, dims) for {b} windows, got {tuple(state.shape)}")
            if not self.uses_images:  # the text is the same at every step of a window: encode it once
                parts.append(self.text_features(texts)[:, None].expand(-1, state.shape[1], -1))
            parts.append(self.state_encoder(state))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    # ---------------------------------------------------------------- training
    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Training loss on a collated WindowDataset batch (see docs/DESIGN.md)."""
        features = self.window_features(batch)
        if "action_chunk" in batch:  # chunked decoder: next-k labels and where they lie inside the trial
            chunks = torch.as_tensor(batch["action_chunk"], device=self.device)
            mask = torch.as_tensor(batch["chunk_mask"], device=self.device)
            return self.decoder.loss(features, chunks, chunk_mask=mask)
        actions = torch.as_tensor(batch["actions"], device=self.device)
        return self.decoder.loss(features, actions)

    @torch.no_grad()
    def predict_window(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The action (B, 7) for the last step of each window, as `select_action` would give it."""
        return self.decoder.predict(self.window_features(batch), generator=self.generator)

    # ---------------------------------------------------------------- inference
    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        """Forget the history of the given environments (all when None), e.g. at a trial start."""
        if self.chunker is not None:
            self.chunker.reset(env_ids)
        if env_ids is None:
            self._history = []
            return
        for i in env_ids:
            if 0 <= i < len(self._history):
                self._history[i] = []

    def step_features(self, obs: Mapping[str, np.ndarray], text: Sequence[str],
                      text_cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Per-step features (N, d') of the current observations of N environments: what `select_action`
        appends to each history. `text_cache` (a dict the caller owns and clears whenever the weights
        change) keeps the LM features of texts already seen, for a state policy whose text changes only
        at decision points."""
        n = len(text)
        parts = []
        if self.uses_images:
            if "rgb_static" not in obs:
                raise ValueError(f"select_action needs obs['rgb_static'] (N, H, W, 3), got keys {sorted(obs)}")
            static = torch.as_tensor(np.asarray(obs["rgb_static"]), device=self.device)
            if static.ndim != 4 or static.shape[-1] != 3:
                raise ValueError(f"obs['rgb_static'] must be batched (N, H, W, 3), got shape {tuple(static.shape)}")
            if static.shape[0] != n:
                raise ValueError(f"select_action got {n} texts for {static.shape[0]} environments")
            gripper = None
            if self.backbone.use_gripper:
                if "rgb_gripper" not in obs:
                    raise ValueError("the policy uses the gripper camera but obs has no 'rgb_gripper'")
                gripper = torch.as_tensor(np.asarray(obs["rgb_gripper"]), device=self.device).permute(0, 3, 1, 2)
            ids, mask = self.backbone.tokenize(list(text), self.device)
            parts.append(self.encode_frames(static.permute(0, 3, 1, 2), gripper, ids, mask))
        if self.state_encoder is not None:
            state = self.state_encoder.gather(obs)
            if state.ndim != 2 or state.shape[0] != n:
                raise ValueError(f"select_action got {n} texts but states of shape {tuple(state.shape)} "
                                 "(expected (N, dims))")
            if not self.uses_images:
                parts.append(self._cached_text_features(list(text), text_cache))
            parts.append(self.state_encoder(state))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def _cached_text_features(self, texts: list[str], cache: dict[str, torch.Tensor] | None) -> torch.Tensor:
        if cache is None:
            return self.text_features(texts)
        new = sorted({t for t in texts if t not in cache})
        if new:
            for t, f in zip(new, self.text_features(new)):
                cache[t] = f
        return torch.stack([cache[t] for t in texts])

    def action_params(self, windows: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Arm means (B, 6) in [-1, 1] and gripper logits (B,) for the last real step of right-padded
        feature windows (B, W, d') of `lengths` steps: the decoders are causal, so the padding after a
        window's last step does not change its output, which equals `select_action` on that history.
        The parameters of an action distribution (RL fine-tuning); continuous decoders only."""
        from metamanip.models.decoders.heads import ContinuousDecoder

        if not isinstance(self.decoder, ContinuousDecoder):
            raise ValueError(f"the {type(self.decoder).__name__} has no continuous arm output to put a "
                             "distribution on; use decoder=lstm, fc or gpt")
        arm, grip = self.decoder(windows)
        rows = torch.arange(windows.shape[0], device=windows.device)
        last = lengths.to(windows.device).long() - 1
        return arm[rows, last], grip[rows, last, 0]

    @torch.no_grad()
    def select_action(self, obs: Mapping[str, np.ndarray], text: Sequence[str]) -> np.ndarray:
        """obs: batched numpy arrays ("rgb_static" (N, H, W, 3) uint8, "rgb_gripper", "robot_obs" (N, 15),
        "scene_obs" (N, 24): those the policy's `obs` mode reads); text: N strings.

        Returns (N, 7) relative actions with the gripper as +-1.
        """
        if self.chunker is not None:
            return self.chunker.select_action(self, obs, text)
        n = len(text)
        pooled = self.step_features(obs, text)

        if len(self._history) != n:
            if self._history:
                log.info("number of environments changed from %d to %d: history reset", len(self._history), n)
            self._history = [[] for _ in range(n)]
        for i in range(n):
            self._history[i] = (self._history[i] + [pooled[i]])[-self.window_size :]

        actions = torch.empty(n, 7, device=self.device)
        by_length: dict[int, list[int]] = {}
        for i, h in enumerate(self._history):
            by_length.setdefault(len(h), []).append(i)
        for idx in by_length.values():
            window = torch.stack([torch.stack(self._history[i]) for i in idx])
            actions[idx] = self.decoder.predict(window, generator=self.generator).float()
        return actions.cpu().numpy()


def _as_container(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def build_policy(cfg: Mapping[str, Any] | DictConfig) -> FlamingoPolicy:
    """Instantiate a policy from a config with `backbone`, `decoder` and `policy` nodes."""
    container = _as_container(cfg)
    missing = [k for k in POLICY_CONFIG_KEYS if container.get(k) is None]
    if missing:
        raise ValueError(
            f"policy config lacks {missing}; compose with backbone=<tiny|flamingo_mpt_3b|...>, "
            "decoder=<lstm|fc|gpt|diffusion|discrete> and policy=default"
        )
    config = {k: container[k] for k in POLICY_CONFIG_KEYS}
    pol = dict(config["policy"])
    window_size = int(pol.pop("window_size", 12))
    weight_decay_on = pol.pop("weight_decay_on", "matrices")
    obs = str(pol.pop("obs", "rgb"))
    state_features = int(pol.pop("state_features", 64))
    state_hidden = list(pol.pop("state_hidden", [128]))
    text_input = str(pol.pop("text_input", "trial"))
    early_exit = pol.pop("early_exit", None)  # multi-exit policy (models/early_exit.py)
    state_fusion = str(pol.pop("state_fusion", "concat"))
    if obs not in OBS_MODES:
        raise ValueError(f"policy.obs must be one of {OBS_MODES}, got '{obs}'")
    backbone_kwargs = {k: pol.pop(k) for k in ("use_gripper", "fusion_mode") if k in pol}
    if pol:
        raise ValueError(
            f"unknown policy options {sorted(pol)}; known: window_size, use_gripper, fusion_mode, weight_decay_on, "
            "obs, state_features, state_hidden, text_input, early_exit, state_fusion"
        )
    if backbone_kwargs.get("fusion_mode", "post") not in FUSION_MODES:
        raise ValueError(f"policy.fusion_mode must be one of {FUSION_MODES}, got '{backbone_kwargs['fusion_mode']}'")
    backbone = instantiate(OmegaConf.create(config["backbone"]), **backbone_kwargs, _convert_="all")
    state_encoder = StateEncoder(state_features, state_hidden) if "state" in obs else None
    if early_exit:
        from metamanip.models.early_exit import build_multi_exit

        return build_multi_exit(backbone, config["decoder"], backbone.feature_dim, window_size, early_exit,
                                state_fusion, config=config, weight_decay_on=weight_decay_on, obs=obs,
                                state_encoder=state_encoder, text_input=text_input)
    if state_fusion != "concat":
        raise ValueError(f"policy.state_fusion={state_fusion} needs policy.early_exit (a multi-exit policy); "
                         "the plain policy concatenates the state after the LM (state_fusion=concat)")
    decoder = instantiate(
        OmegaConf.create(config["decoder"]),
        in_features=backbone.feature_dim + (state_features if state_encoder is not None else 0),
        window_size=window_size,
        _convert_="all",
    )
    policy = FlamingoPolicy(backbone, decoder, window_size=window_size, config=config, weight_decay_on=weight_decay_on,
                            obs=obs, state_encoder=state_encoder, text_input=text_input)
    n_train = sum(p.numel() for p in policy.trainable_parameters())
    n_all = sum(p.numel() for p in policy.parameters())
    log.info("built policy: %.1fM parameters, %.1fM trainable", n_all / 1e6, n_train / 1e6)
    return policy
