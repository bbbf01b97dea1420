"""Multi-exit Flamingo policies with dynamic early exit at inference (DeeR-VLA).

- The LM is optionally cut to its first `early_exit_layer + 1` decoder layers; an *exit* sits after every
  `exit_interval`-th layer (layers `exit_interval - 1, 2 * exit_interval - 1, ...`) and after the last one.
  An exit's feature is the block's output (no final norm), pooled over the tokens as the backbone pools.
- Every exit has its own action head (a decoder of the configured type: lstm, fc, gpt); a shared *extra
  exit* head (the policy's `decoder`) reads any exit's features and is the one used at inference.
- Training (`forward`): the loss of every exit's head on its features, plus the extra head's loss on two
  mixtures of exits: a random exit per (window, step), and a random split point per window with one random
  exit before it and another after. `exit_dropout` drops exit features before the heads. `stage: heads`
  trains the heads only (backbone frozen and in eval mode), DeeR's second stage, from `init_from`.
- Inference (`select_action`): the LM runs layer by layer (forward hooks on the decoder layers); at exit k
  the extra head decodes an action from the env's window (earlier steps as they were stored, this step at
  exit k) and the env leaves when its arm action moved by less than `thresholds[k]` (L2: root-mean-square
  over the 6 arm dims) from the previous exit's (for the first exit: from the layer before it), or when the
  exit reaches `max_layer` or is the last. A batch stops the LM once all its rows have left; rows that left
  earlier keep their exit's action and feature. The history keeps each step's feature at the exit it left
  from (DeeR). Thresholds at 0 never leave early (the criterion is strict); at infinity every step leaves
  at the first exit.
- Budgets: `fit_thresholds` picks thresholds on calibration deltas (per window and exit, from held-out
  demonstrations; `calibrate`) so that a fraction p_k ∝ exit_ratio^k of the windows leaves at exit k.
- Compute per action is counted from the model's shapes (`layer_flops`), not timed: layers run, the exit
  layer, and LM FLOPs (decoder layers + their gated cross-attention blocks, at the batch's padded length).

`state_fusion: lm` (obs with state) feeds the encoded state to the LM as media through the gated
cross-attention (`state_tokens` latents of the vision width), so each step's input passes through the LM
and an early exit saves real compute; `concat` (the plain policy's way) is refused here, since then the LM
only reads the feedback text.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from metamanip.models.decoders.heads import ARM_DIMS, ContinuousDecoder
from metamanip.models.lm_injection import condition
from metamanip.models.policy import FlamingoPolicy

log = logging.getLogger(__name__)

EXIT_STAGES = ("joint", "heads")
STATE_FUSIONS = ("concat", "lm")


class _StopLM(Exception):
    """Raised from a decoder layer's hook once every row of the batch has left."""


def decoder_layers(lm: nn.Module) -> nn.ModuleList:
    """The LM's decoder layers (where `inject_cross_attention` found them)."""
    return lm.get_submodule(lm.flamingo_decoder_layers_path)


def cut_decoder_layers(lm: nn.Module, keep: int) -> None:
    """Keep the first `keep` decoder layers (and their cross-attention blocks): DeeR's `early_exit_layer`."""
    layers = decoder_layers(lm)
    if not 1 <= keep <= len(layers):
        raise ValueError(f"early_exit_layer must be in [0, {len(layers) - 1}] for this {len(layers)}-layer LM, "
                         f"got {keep - 1}")
    if keep == len(layers):
        return
    del layers[keep:]
    lm.gated_cross_attn_layers = nn.ModuleList(list(lm.gated_cross_attn_layers)[:keep])
    lm.config.num_hidden_layers = keep


def exit_layer_indices(n_layers: int, exit_interval: int) -> list[int]:
    """0-based layers with an exit: every `exit_interval`-th one, and the last."""
    if exit_interval < 1:
        raise ValueError(f"early_exit.exit_interval must be >= 1, got {exit_interval}")
    idx = list(range(exit_interval - 1, n_layers, exit_interval))
    if not idx or idx[-1] != n_layers - 1:
        idx.append(n_layers - 1)
    return idx


# ------------------------------------------------------------------ compute from shapes
def _weight_flops_per_token(module: nn.Module) -> int:
    """2 x in x out for a Linear or transformers' Conv1D."""
    w = getattr(module, "weight", None)
    if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
        return 2 * int(w.shape[0]) * int(w.shape[1])
    return 0


def layer_flops(lm: nn.Module, layer: int, seq_len: int, media_tokens: int) -> float:
    """Forward FLOPs of decoder layer `layer` (and the gated cross-attention block before it) for one
    sequence of `seq_len` tokens reading `media_tokens` media latents: matrix products only (2 per
    multiply-add), attention counted over the full L x L square, as torch's FlopCounterMode counts."""
    block = decoder_layers(lm)[layer]
    d = int(lm.config.hidden_size)
    flops = seq_len * sum(_weight_flops_per_token(m) for m in block.modules())
    flops += 2 * 2 * seq_len * seq_len * d  # scores and weighted values
    xattn = lm.gated_cross_attn_layers[layer]
    if xattn is not None:
        for name, m in xattn.named_modules():
            per_token = _weight_flops_per_token(m)
            flops += per_token * (media_tokens if name.endswith("to_kv") else seq_len)
        inner = int(xattn.attn.to_q.out_features)
        flops += 2 * 2 * seq_len * media_tokens * inner
    return float(flops)


def lm_flops(lm: nn.Module, layers_run: int, seq_len: int, media_tokens: int) -> float:
    """FLOPs of the first `layers_run` decoder layers for one sequence."""
    return sum(layer_flops(lm, i, seq_len, media_tokens) for i in range(layers_run))


# ------------------------------------------------------------------ thresholds
def exit_distribution(n_exits: int, exit_ratio: float) -> np.ndarray:
    """DeeR's exponential target: p_k ∝ exit_ratio^k, normalised."""
    if exit_ratio <= 0:
        raise ValueError(f"exit_ratio must be > 0, got {exit_ratio}")
    p = np.power(float(exit_ratio), np.arange(n_exits, dtype=np.float64))
    return p / p.sum()


def fit_thresholds(deltas: np.ndarray, exit_ratio: float) -> list[float]:
    """Thresholds (one per exit, the last infinite) for which a fraction p_k ∝ exit_ratio^k of the
    calibration windows leaves at exit k, set greedily exit by exit (DeeR's `set_threshold`).

    `deltas` (S, E): per window, how much the extra exit's action moved at each exit; a window leaves at
    exit k when `delta < T_k` (strict)."""
    deltas = np.asarray(deltas, dtype=np.float64)
    if deltas.ndim != 2 or deltas.shape[0] == 0:
        raise ValueError(f"calibration deltas must be (windows, exits) with windows > 0, got {deltas.shape}")
    s, e = deltas.shape
    p = exit_distribution(e, exit_ratio)
    targets = np.round(np.cumsum(p) * s).astype(int)
    remaining = np.ones(s, dtype=bool)
    thresholds: list[float] = []
    left = 0
    for k in range(e - 1):
        n_k = int(np.clip(targets[k] - left, 0, remaining.sum()))
        vals = np.sort(deltas[remaining, k])
        if n_k == 0:
            t = float(vals[0]) if len(vals) else 0.0
        elif n_k >= len(vals):
            t = float(np.nextafter(vals[-1], np.inf))
        else:
            t = float((vals[n_k - 1] + vals[n_k]) / 2) if vals[n_k] > vals[n_k - 1] else float(vals[n_k])
        thresholds.append(t)
        out = remaining & (deltas[:, k] < t)
        left += int(out.sum())
        remaining &= ~out
    thresholds.append(math.inf)
    return thresholds


def exits_taken(deltas: np.ndarray, thresholds: Sequence[float], max_exit: int | None = None) -> np.ndarray:
    """The exit (0-based) each calibration window leaves at under `thresholds` (and an exit cap)."""
    deltas = np.asarray(deltas, dtype=np.float64)
    e = deltas.shape[1]
    last = e - 1 if max_exit is None else min(max_exit, e - 1)
    leave = deltas < np.asarray(thresholds, dtype=np.float64)[None, :e]
    leave[:, last:] = True
    return leave.argmax(axis=1)


def action_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """DeeR's L2 criterion: root-mean-square difference of the arm dims, per row."""
    return (a[..., :ARM_DIMS] - b[..., :ARM_DIMS]).float().pow(2).mean(dim=-1).sqrt()


# ------------------------------------------------------------------ the policy
class MultiExitPolicy(FlamingoPolicy):
    """A FlamingoPolicy with an action head per LM exit and the extra-exit head (`decoder`) at inference."""

    def __init__(self, backbone: Any, decoder: nn.Module, exit_heads: Sequence[nn.Module], *,
                 exit_interval: int = 2, exit_dropout: float = 0.0, thresholds: Sequence[float] | None = None,
                 max_layer: int | None = None, stage: str = "joint", state_fusion: str = "lm",
                 state_tokens: int = 4, calibration_windows: int = 1024, **kwargs: Any) -> None:
        super().__init__(backbone, decoder, **kwargs)
        if stage not in EXIT_STAGES:
            raise ValueError(f"policy.early_exit.stage must be one of {EXIT_STAGES}, got '{stage}'")
        if state_fusion not in STATE_FUSIONS:
            raise ValueError(f"policy.state_fusion must be one of {STATE_FUSIONS}, got '{state_fusion}'")
        if self.state_encoder is not None and state_fusion != "lm":
            raise ValueError("an early-exit policy reading state needs policy.state_fusion=lm: with concat the "
                             "state bypasses the LM and an early exit saves nothing per action")
        if not isinstance(decoder, ContinuousDecoder):
            raise ValueError(f"early exit needs a continuous decoder (lstm, fc, gpt), not {type(decoder).__name__}")
        if getattr(self, "chunker", None) is not None:
            raise ValueError("early exit does not combine with action chunks yet: set decoder.fwd_pred_next_n=1 "
                             "or drop policy.early_exit")
        lm = backbone.lang_encoder
        self.n_layers = len(decoder_layers(lm))
        self.exit_layers = exit_layer_indices(self.n_layers, exit_interval)
        if len(exit_heads) != len(self.exit_layers):
            raise ValueError(f"{len(exit_heads)} exit heads for {len(self.exit_layers)} exits")
        self.exit_heads = nn.ModuleList(exit_heads)
        self.exit_dropout = nn.Dropout(exit_dropout)
        self.stage = stage
        self.state_fusion = state_fusion
        self.state_media: nn.Module | None = None
        if self.state_encoder is not None:
            self.state_tokens = int(state_tokens)
            self.state_media = nn.Linear(self.state_encoder.out_features, self.state_tokens * backbone.vis_dim)
        e = len(self.exit_layers)
        self.register_buffer("thresholds", torch.zeros(e, dtype=torch.float64))
        self.register_buffer("calibration", torch.full((int(calibration_windows), e), float("nan")))
        self.max_layer: int | None = None
        self.configure_exits(thresholds=thresholds, max_layer=max_layer)
        self._compute: list[dict[str, float]] = []
        if stage == "heads":
            for m in (self.backbone, self.state_encoder, self.state_media):
                if m is not None:
                    m.requires_grad_(False)

    # ---------------------------------------------------------------- configuration
    @property
    def feature_dim(self) -> int:
        return int(self.backbone.feature_dim)

    @property
    def checkpoint_prefixes(self) -> tuple[str, ...]:
        """What a checkpoint keeps beyond the trainable parameters: the fitted thresholds and calibration
        deltas, the state media projection, and with `stage: heads` the frozen backbone."""
        own = ("thresholds", "calibration", "state_media.")
        if self.stage != "heads":
            return own
        from metamanip.models.language_model import input_embeddings

        emb = input_embeddings(self.backbone.lang_encoder).weight
        joint = tuple(n for n, p in self.named_parameters()
                      if n.startswith("backbone.perceiver") or ".gated_cross_attn_layers." in n or p is emb)
        return own + joint

    @property
    def n_exits(self) -> int:
        return len(self.exit_layers)

    def train(self, mode: bool = True) -> MultiExitPolicy:
        super().train(mode)
        if self.stage == "heads":
            for m in (self.backbone, self.state_encoder, self.state_media):
                if m is not None:
                    m.eval()
        return self

    def configure_exits(self, thresholds: Sequence[float] | float | None = None, max_layer: int | None = None,
                        exit_ratio: float | None = None) -> None:
        """Set the exit budget: `thresholds` (one per exit, or one for all), or `exit_ratio` (fit on the
        stored calibration deltas); `max_layer` caps the LM layers an action may run (peak budget)."""
        if thresholds is not None and exit_ratio is not None:
            raise ValueError("give early_exit.thresholds or early_exit.exit_ratio, not both")
        if exit_ratio is not None:
            thresholds = fit_thresholds(self.calibration_deltas(), float(exit_ratio))
        if thresholds is not None:
            if isinstance(thresholds, (int, float)):
                thresholds = [float(thresholds)] * self.n_exits
            thresholds = [float(t) for t in thresholds]
            if len(thresholds) != self.n_exits:
                raise ValueError(f"early_exit.thresholds needs {self.n_exits} values (exits after layers "
                                 f"{[i + 1 for i in self.exit_layers]}), got {len(thresholds)}")
            if any(t < 0 or math.isnan(t) for t in thresholds):
                raise ValueError(f"early_exit.thresholds must be >= 0, got {thresholds}")
            self.thresholds.copy_(torch.tensor(thresholds))
        if max_layer is not None:
            if not 1 <= int(max_layer) <= self.n_layers:
                raise ValueError(f"early_exit.max_layer must be in [1, {self.n_layers}], got {max_layer}")
            self.max_layer = int(max_layer)

    def calibration_deltas(self) -> np.ndarray:
        d = self.calibration.detach().cpu().numpy()
        d = d[~np.isnan(d).any(axis=1)]
        if len(d) == 0:
            raise ValueError("this policy has no calibration deltas to fit exit_ratio thresholds on: run "
                             "metamanip.models.early_exit.calibrate(policy, batches) on held-out demonstrations "
                             "(benchmarks/early_exit.py does) or give early_exit.thresholds")
        return d

    # ---------------------------------------------------------------- the LM, exit by exit
    def _media(self, static: torch.Tensor | None, gripper: torch.Tensor | None,
               state: torch.Tensor | None) -> torch.Tensor:
        """Media latents (N, 1, n, vis_dim): image latents and/or state tokens."""
        parts = []
        if self.uses_images:
            bb = self.backbone
            st = bb.preprocess_images(static)
            gr = bb.preprocess_images(gripper) if (gripper is not None and bb.use_gripper) else None
            parts.append(bb.encode_vision(st, gr))
        if self.state_media is not None:
            tokens = self.state_media(self.state_encoder(state))
            parts.append(tokens.view(tokens.shape[0], 1, self.state_tokens, self.backbone.vis_dim))
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]

    def run_lm(self, vis_x: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
               on_layer: Any = None) -> tuple[dict[int, torch.Tensor], int]:
        """Run the LM with hooks on its decoder layers: returns the pooled features of every layer that ran
        ({layer: (N, d)}, with -1 the input of layer 0) and the number of layers that ran. `on_layer(layer,
        pooled)` (the dict so far), called after each layer, returns True to stop the LM there."""
        bb = self.backbone
        lm = bb.lang_encoder
        layers = decoder_layers(lm)
        pooled: dict[int, torch.Tensor] = {}
        ran = [0]

        def pre0(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            pooled[-1] = bb.pool(h, mask)

        def post(module, args, output, idx):
            h = output[0] if isinstance(output, tuple) else output
            pooled[idx] = bb.pool(h, mask)
            ran[0] = idx + 1
            if on_layer is not None and on_layer(idx, pooled):
                raise _StopLM

        handles = [layers[0].register_forward_pre_hook(pre0, with_kwargs=True)]
        handles += [layer.register_forward_hook(lambda m, a, o, i=i: post(m, a, o, i))
                    for i, layer in enumerate(layers)]
        try:
            with condition(lm, vis_x, ids == bb.media_token_id):
                lm.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
        except _StopLM:
            pass
        finally:
            for h in handles:
                h.remove()
        return pooled, ran[0]

    # ---------------------------------------------------------------- training
    def exit_window_features(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Collated batch -> features at every exit (B, T, E, d)."""
        texts = list(batch["text"])
        b = len(texts)
        static = gripper = state = None
        if self.uses_images:
            static = torch.as_tensor(batch["rgb_static"], device=self.device)
            if static.ndim != 5 or static.shape[0] != b:
                raise ValueError(f"batch['rgb_static'] must be (B, T, 3, H, W) for {b} windows, "
                                 f"got shape {tuple(static.shape)}")
            t = static.shape[1]
            static = static.flatten(0, 1)
            if self.backbone.use_gripper:
                if "rgb_gripper" not in batch:
                    raise ValueError("the policy uses the gripper camera but the batch has no 'rgb_gripper'")
                gripper = torch.as_tensor(batch["rgb_gripper"], device=self.device).flatten(0, 1)
        if self.state_encoder is not None:
            state = self.state_encoder.gather(batch)
            if state.ndim != 3 or state.shape[0] != b:
                raise ValueError(f"batch states must be (B, T, dims) for {b} windows, got {tuple(state.shape)}")
            t = state.shape[1]
            state = state.flatten(0, 1)
        ids, mask = self.backbone.tokenize(texts, self.device)
        ids, mask = ids.repeat_interleave(t, dim=0), mask.repeat_interleave(t, dim=0)
        pooled, _ = self.run_lm(self._media(static, gripper, state), ids, mask)
        feats = torch.stack([pooled[i] for i in self.exit_layers], dim=1)  # (B*T, E, d)
        return feats.unflatten(0, (b, t))

    def window_features(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Per-step features at the last exit (B, T, d): what the full model reads."""
        return self.exit_window_features(batch)[:, :, -1]

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Joint loss: every exit's head on its exit, plus the extra head on (1) a random exit per step and
        (2) a random split point per window, one random exit before it and one after."""
        feats = self.exit_window_features(batch)
        actions = torch.as_tensor(batch["actions"], device=self.device)
        b, t, e, _ = feats.shape
        feats = self.exit_dropout(feats)
        out: dict[str, torch.Tensor] = {}
        total = feats.new_zeros(())
        for k, head in enumerate(self.exit_heads):
            loss_k = head.loss(feats[:, :, k], actions)["loss"]
            out[f"exit{k}_loss"] = loss_k.detach()
            total = total + loss_k
        rows = torch.arange(b, device=feats.device)[:, None]
        steps = torch.arange(t, device=feats.device)[None, :]
        per_step = torch.randint(e, (b, t), device=feats.device)
        mix1 = feats[rows, steps, per_step]
        split = torch.randint(t + 1, (b, 1), device=feats.device)
        before, after = torch.randint(e, (b, 1), device=feats.device), torch.randint(e, (b, 1), device=feats.device)
        mix2 = feats[rows, steps, torch.where(steps < split, before, after)]
        for name, mix in (("extra_random", mix1), ("extra_split", mix2)):
            res = self.decoder.loss(mix, actions)
            out[f"{name}_loss"] = res["loss"].detach()
            total = total + res["loss"]
        out["loss"] = total
        return out

    # ---------------------------------------------------------------- inference
    def _decode_last(self, windows: list[torch.Tensor]) -> torch.Tensor:
        """Extra-head actions (n, 7) for windows of possibly different lengths."""
        out = torch.empty(len(windows), 7, device=self.device)
        by_len: dict[int, list[int]] = {}
        for j, w in enumerate(windows):
            by_len.setdefault(w.shape[0], []).append(j)
        for idx in by_len.values():
            out[idx] = self.decoder.predict(torch.stack([windows[j] for j in idx]), generator=self.generator).float()
        return out

    def _ensure_envs(self, n: int) -> None:
        if len(self._history) != n:
            if self._history:
                log.info("number of environments changed from %d to %d: history reset", len(self._history), n)
            self._history = [[] for _ in range(n)]
        if len(self._compute) != n:
            self._compute = [self._zero_compute() for _ in range(n)]

    @staticmethod
    def _zero_compute() -> dict[str, float]:
        return {"lm_actions": 0.0, "lm_exit_layers": 0.0, "lm_layers": 0.0, "lm_flops": 0.0}

    def take_compute(self, env: int) -> dict[str, float]:
        """The compute counted for env `env` since the last call (sums over its actions), then cleared."""
        if env >= len(self._compute):
            return self._zero_compute()
        c, self._compute[env] = self._compute[env], self._zero_compute()
        return c

    @torch.no_grad()
    def select_action(self, obs: Mapping[str, np.ndarray], text: Sequence[str]) -> np.ndarray:
        """As FlamingoPolicy.select_action, leaving the LM at the first exit whose action is consistent."""
        n = len(text)
        self._ensure_envs(n)
        static = gripper = state = None
        if self.uses_images:
            if "rgb_static" not in obs:
                raise ValueError(f"select_action needs obs['rgb_static'] (N, H, W, 3), got keys {sorted(obs)}")
            static = torch.as_tensor(np.asarray(obs["rgb_static"]), device=self.device).permute(0, 3, 1, 2)
            if self.backbone.use_gripper:
                if "rgb_gripper" not in obs:
                    raise ValueError("the policy uses the gripper camera but obs has no 'rgb_gripper'")
                gripper = torch.as_tensor(np.asarray(obs["rgb_gripper"]), device=self.device).permute(0, 3, 1, 2)
        if self.state_encoder is not None:
            state = self.state_encoder.gather(obs)
            if state.ndim != 2 or state.shape[0] != n:
                raise ValueError(f"select_action got {n} texts but states of shape {tuple(state.shape)}")
        ids, mask = self.backbone.tokenize(list(text), self.device)
        vis_x = self._media(static, gripper, state)

        exit_of = {layer: k for k, layer in enumerate(self.exit_layers)}
        first = self.exit_layers[0]
        cap = self.max_layer if self.max_layer is not None else self.n_layers
        thresholds = self.thresholds.tolist()
        active = list(range(n))
        prev: torch.Tensor | None = None
        chosen_feat: list[torch.Tensor | None] = [None] * n
        chosen_act = torch.empty(n, 7, device=self.device)
        chosen_layer = [0] * n

        def on_layer(layer: int, pooled: dict[int, torch.Tensor]) -> bool:
            nonlocal prev, active
            if layer not in exit_of:
                return False
            k = exit_of[layer]
            if prev is None:  # the first exit's reference: the layer before it (-1: the input of layer 0)
                ref = pooled[first - 1]
                prev = self._decode_last([self._window_with(i, ref[i]) for i in range(n)])
            acts = self._decode_last([self._window_with(i, pooled[layer][i]) for i in active])
            delta = action_distance(acts, prev[active])
            forced = layer + 1 >= cap or k == self.n_exits - 1
            still = []
            for j, i in enumerate(active):
                if forced or float(delta[j]) < thresholds[k]:
                    chosen_feat[i], chosen_act[i], chosen_layer[i] = pooled[layer][i], acts[j], layer + 1
                else:
                    still.append(i)
            prev = prev.clone()
            prev[active] = acts
            active = still
            return not active

        _, ran = self.run_lm(vis_x, ids, mask, on_layer)
        if active:
            raise RuntimeError(f"rows {active} ran every layer without leaving; the last exit must take them")

        seq_len = int(ids.shape[1])
        media = int(vis_x.shape[1] * vis_x.shape[2])
        flops = lm_flops(self.backbone.lang_encoder, ran, seq_len, media)
        for i in range(n):
            self._history[i] = (self._history[i] + [chosen_feat[i]])[-self.window_size:]
            c = self._compute[i]
            c["lm_actions"] += 1
            c["lm_exit_layers"] += chosen_layer[i]
            c["lm_layers"] += ran
            c["lm_flops"] += flops
        return chosen_act.cpu().numpy()

    def _window_with(self, env: int, feature: torch.Tensor) -> torch.Tensor:
        """The env's stored history (at the exits its steps left from) followed by this step's feature."""
        past = self._history[env][-(self.window_size - 1):] if self.window_size > 1 else []
        return torch.stack([*past, feature])

    def step_features(self, obs: Mapping[str, np.ndarray], text: Sequence[str],
                      text_cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Per-step features at the last exit (N, d): the full model's (RL and analysis)."""
        static = gripper = state = None
        if self.uses_images:
            static = torch.as_tensor(np.asarray(obs["rgb_static"]), device=self.device).permute(0, 3, 1, 2)
            if self.backbone.use_gripper:
                gripper = torch.as_tensor(np.asarray(obs["rgb_gripper"]), device=self.device).permute(0, 3, 1, 2)
        if self.state_encoder is not None:
            state = self.state_encoder.gather(obs)
        ids, mask = self.backbone.tokenize(list(text), self.device)
        pooled, _ = self.run_lm(self._media(static, gripper, state), ids, mask)
        return pooled[self.exit_layers[-1]]


# ------------------------------------------------------------------ calibration
@torch.no_grad()
def exit_deltas(policy: MultiExitPolicy, batch: Mapping[str, Any]) -> torch.Tensor:
    """Per window of a collated batch: how much the extra head's last-step action moves at each exit
    (B, E), every step of the window read at that exit; the first exit against the layer before it."""
    was_training = policy.training
    policy.eval()
    try:
        feats = policy.exit_window_features(batch)  # (B, T, E, d)
        acts = torch.stack([policy.decoder.predict(feats[:, :, k]) for k in range(policy.n_exits)], dim=1)
        first = policy.exit_layers[0]
        ref = _reference_features(policy, batch, first - 1)
        ref_act = policy.decoder.predict(torch.cat([feats[:, :-1, 0], ref[:, -1:]], dim=1))
        prev = torch.cat([ref_act[:, None], acts[:, :-1]], dim=1)
        return action_distance(acts, prev)
    finally:
        policy.train(was_training)


def _reference_features(policy: MultiExitPolicy, batch: Mapping[str, Any], layer: int) -> torch.Tensor:
    """Pooled features (B, T, d) of one layer (-1: the input of layer 0) for a collated batch."""
    texts = list(batch["text"])
    b = len(texts)
    static = gripper = state = None
    if policy.uses_images:
        s = torch.as_tensor(batch["rgb_static"], device=policy.device)
        t = s.shape[1]
        static = s.flatten(0, 1)
        if policy.backbone.use_gripper:
            gripper = torch.as_tensor(batch["rgb_gripper"], device=policy.device).flatten(0, 1)
    if policy.state_encoder is not None:
        st = policy.state_encoder.gather(batch)
        t = st.shape[1]
        state = st.flatten(0, 1)
    ids, mask = policy.backbone.tokenize(texts, policy.device)
    ids, mask = ids.repeat_interleave(t, dim=0), mask.repeat_interleave(t, dim=0)
    pooled, _ = policy.run_lm(policy._media(static, gripper, state), ids, mask)
    return pooled[layer].unflatten(0, (b, t))


def calibrate(policy: MultiExitPolicy, batches: Any) -> np.ndarray:
    """Fill the policy's calibration buffer with exit deltas of held-out demonstration windows (collated
    batches); returns them. Stored in the checkpoint, so `early_exit.exit_ratio` can be set at evaluation."""
    rows = []
    cap = policy.calibration.shape[0]
    for batch in batches:
        rows.append(exit_deltas(policy, batch).cpu())
        if sum(r.shape[0] for r in rows) >= cap:
            break
    if not rows:
        raise ValueError("calibration got no batches: give held-out demonstration windows")
    deltas = torch.cat(rows)[:cap]
    policy.calibration.fill_(float("nan"))
    policy.calibration[: deltas.shape[0]] = deltas.to(policy.calibration)
    return deltas.numpy()


def tune_thresholds_online(evaluate: Any, n_exits: int, n_trials: int, flops_budget: float,
                           seed: int = 0, low: float = 1e-4, high: float = 1.0) -> dict[str, Any]:
    """Online thresholds (DeeR's Bayesian optimisation, here an optuna TPE study): `evaluate(thresholds,
    trial_number) -> (average_reward, lm_flops_ratio)` runs the simulator; the study maximises the reward,
    less 10 x the FLOPs ratio above `flops_budget`. Thresholds are sampled log-uniformly in [low, high]
    for every exit but the last (infinite). Returns the best trial's thresholds and figures."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        th = [trial.suggest_float(f"t{k}", low, high, log=True) for k in range(n_exits - 1)] + [math.inf]
        reward, ratio = evaluate(th, trial.number)
        trial.set_user_attr("average_reward", float(reward))
        trial.set_user_attr("lm_flops_ratio", float(ratio))
        return float(reward) - 10.0 * max(0.0, float(ratio) - flops_budget)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    best = study.best_trial
    return {"thresholds": [best.params[f"t{k}"] for k in range(n_exits - 1)] + [math.inf],
            "average_reward": best.user_attrs["average_reward"], "lm_flops_ratio": best.user_attrs["lm_flops_ratio"],
            "trials": n_trials, "flops_budget": flops_budget}


# ------------------------------------------------------------------ building
EARLY_EXIT_KEYS = ("exit_interval", "early_exit_layer", "exit_dropout", "thresholds", "max_layer", "stage",
                   "init_from", "state_tokens", "calibration_windows", "exit_ratio")


def build_multi_exit(backbone: Any, decoder_cfg: Any, in_features: int, window_size: int,
                     early_exit: Mapping[str, Any], state_fusion: str, **policy_kwargs: Any) -> MultiExitPolicy:
    """The multi-exit policy of `build_policy` when `policy.early_exit` is set."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    ee = dict(early_exit)
    unknown = sorted(set(ee) - set(EARLY_EXIT_KEYS))
    if unknown:
        raise ValueError(f"unknown policy.early_exit options {unknown}; known: {list(EARLY_EXIT_KEYS)}")
    if ee.get("exit_ratio") is not None:
        raise ValueError("policy.early_exit.exit_ratio needs calibration deltas, which exist only after training; "
                         "set it at evaluation (eval.early_exit.exit_ratio=...) or give policy.early_exit.thresholds")
    lm = backbone.lang_encoder
    cut = ee.get("early_exit_layer")
    if cut is not None:
        cut_decoder_layers(lm, int(cut) + 1)
    n_exits = len(exit_layer_indices(len(decoder_layers(lm)), int(ee.get("exit_interval", 2))))

    def head() -> nn.Module:
        return instantiate(OmegaConf.create(decoder_cfg), in_features=in_features, window_size=window_size,
                           _convert_="all")

    policy = MultiExitPolicy(
        backbone, head(), [head() for _ in range(n_exits)], window_size=window_size,
        exit_interval=int(ee.get("exit_interval", 2)), exit_dropout=float(ee.get("exit_dropout", 0.0)),
        thresholds=ee.get("thresholds"), max_layer=ee.get("max_layer"), stage=str(ee.get("stage", "joint")),
        state_fusion=state_fusion, state_tokens=int(ee.get("state_tokens", 4)),
        calibration_windows=int(ee.get("calibration_windows", 1024)), **policy_kwargs)
    if ee.get("init_from"):
        from metamanip.models.checkpoint import load_policy_state, read_payload

        load_policy_state(policy, read_payload(str(ee["init_from"]))["state_dict"])
    return policy
