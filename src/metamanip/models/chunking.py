"""Playing predicted action chunks at inference (`decoder.fwd_pred_next_n` = k > 1).

A chunked decoder predicts, at every step, the next k actions (models/decoders/heads.py). How a policy
turns those chunks into one action per control step is `decoder.execution`:

- `open_loop`: the model runs once every k steps and its chunk is played in order, one action per step
  (k - 1 of every k steps need no decoder pass). A decoder with no temporal context (`fc`) needs no
  history, so those steps need no backbone pass either; a temporal one (lstm, gpt, diffusion) still
  encodes every step, so that the window it decodes at the next decision point is the window of
  consecutive steps it was trained on.
- `ensemble`: the model runs every step; the action of step t is the weighted mean of every prediction
  made for t by the chunks of steps t - k + 1 .. t (ACT's temporal ensembling): with the n available
  predictions ordered oldest first, prediction i gets weight exp(-ensemble_weight * i) (ACT's
  w_i = exp(-m i), m = 0.01 there; 0 is a plain mean, larger m trusts older predictions more).
- `first`: the model runs every step and the first action of the newest chunk is played (RoboVLMs'
  CALVIN evaluation: the chunk is a training target only).

Arm deltas are averaged as they are; the gripper is averaged as a score in [-1, 1] (tanh(logit / 2) for
the continuous heads) and played as +1 when the mean is > 0, else -1. Chunks never outlive a `reset` of
their environment (the policy resets at every trial start), as training never predicts past a trial end.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from metamanip.models.decoders.heads import ARM_DIMS, CHUNK_EXECUTIONS


def ensemble_weights(n: int, m: float) -> torch.Tensor:
    """ACT's weights of n overlapping predictions, oldest first: exp(-m i), i = 0..n-1, normalised."""
    w = torch.tensor([math.exp(-m * i) for i in range(n)], dtype=torch.float64)
    return (w / w.sum()).float()


def combine(predictions: torch.Tensor, m: float) -> torch.Tensor:
    """Overlapping predictions (n, 7) for one step, oldest first -> the action (7,) played (gripper +-1)."""
    w = ensemble_weights(predictions.shape[0], m).to(predictions.device, predictions.dtype)
    mean = (w[:, None] * predictions).sum(0)
    grip = torch.where(mean[ARM_DIMS:] > 0, 1.0, -1.0).to(mean.dtype)
    return torch.cat([mean[:ARM_DIMS], grip])


def with_chunk_execution(payload: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint payload with chunk-execution options (`execution`, `ensemble_weight`) set on its
    decoder config when that decoder predicts chunks; weights and every other option are unchanged (how
    `metamanip-eval eval.chunk_execution=...` plays a checkpoint's chunks another way)."""
    payload = dict(payload)
    unknown = sorted(set(overrides) - {"execution", "ensemble_weight"})
    if unknown:
        raise ValueError(f"only execution and ensemble_weight can be changed after training, got {unknown}")
    decoder = dict(payload["config"].get("decoder") or {})
    if not overrides or int(decoder.get("fwd_pred_next_n", 1) or 1) == 1:
        return payload
    payload["config"] = {**payload["config"], "decoder": {**decoder, **overrides}}
    return payload


class ChunkExecutor:
    """Per-environment state of chunk execution: which steps need a model pass, and what each step plays.

    For each environment it keeps the chunks still covering the coming steps, each with its age (steps
    since it was predicted). `needs_model(i)` says whether environment i's model must run this step;
    `push(i, chunk)` records a new chunk (k, 7) and `act(i)` gives the step's action and advances a step.
    """

    def __init__(self, k: int, execution: str = "open_loop", ensemble_weight: float = 0.01) -> None:
        if execution not in CHUNK_EXECUTIONS:
            raise ValueError(f"decoder.execution must be one of {CHUNK_EXECUTIONS}, got {execution!r}")
        if k < 1:
            raise ValueError(f"chunks need k >= 1 actions, got {k}")
        self.k = int(k)
        self.execution = execution
        self.ensemble_weight = float(ensemble_weight)
        self._chunks: list[list[list[Any]]] = []  # per env: [[chunk (k, 7), age], ...] oldest first
        self.model_calls = 0  # decoder passes so far (one per environment and decision)

    @classmethod
    def for_decoder(cls, decoder: Any) -> ChunkExecutor | None:
        """The executor a decoder asks for, or None for one action per step (k = 1: today's path)."""
        k = int(getattr(decoder, "fwd_pred_next_n", 1))
        if k == 1:
            return None
        return cls(k, getattr(decoder, "execution", "open_loop"), getattr(decoder, "ensemble_weight", 0.01))

    def __len__(self) -> int:
        return len(self._chunks)

    def resize(self, n: int) -> None:
        if len(self._chunks) != n:
            self._chunks = [[] for _ in range(n)]

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        if env_ids is None:
            self._chunks = []
            return
        for i in env_ids:
            if 0 <= i < len(self._chunks):
                self._chunks[i] = []

    def needs_model(self, i: int) -> bool:
        if self.execution != "open_loop":
            return True
        return not self._chunks[i]

    def push(self, i: int, chunk: torch.Tensor) -> None:
        if tuple(chunk.shape) != (self.k, 7):
            raise ValueError(f"a chunk must be ({self.k}, 7), got {tuple(chunk.shape)}")
        self.model_calls += 1
        if self.execution == "ensemble":
            self._chunks[i].append([chunk, 0])
        else:
            self._chunks[i] = [[chunk, 0]]

    def act(self, i: int) -> torch.Tensor:
        """The action (7,) environment i plays this step; ages its chunks by one step."""
        live = self._chunks[i]
        if not live:
            raise RuntimeError(f"environment {i} has no chunk to play; push one first")
        if self.execution == "first":
            action = combine(live[-1][0][:1], 0.0)
        else:
            action = combine(torch.stack([c[a] for c, a in live]), self.ensemble_weight)
        for entry in live:
            entry[1] += 1
        self._chunks[i] = [e for e in live if e[1] < self.k] if self.execution != "first" else []
        return action

    # ------------------------------------------------------------------ the policy's select_action
    def select_action(self, policy: Any, obs: Mapping[str, np.ndarray], text: Sequence[str]) -> np.ndarray:
        """`FlamingoPolicy.select_action` for a chunked decoder: encode the steps the history needs,
        run the decoder for the environments that need a new chunk, play every environment's action."""
        n = len(text)
        if len(policy._history) != n:
            policy._history = [[] for _ in range(n)]
            self._chunks = []
        self.resize(n)
        need = [i for i in range(n) if self.needs_model(i)]
        temporal = bool(getattr(policy.decoder, "temporal", True)) and policy.window_size > 1
        encode = list(range(n)) if temporal else need
        if encode:
            sub = obs if len(encode) == n else {key: np.asarray(v)[encode] for key, v in obs.items()}
            pooled = policy.step_features(sub, [text[i] for i in encode])
            for row, i in enumerate(encode):
                policy._history[i] = (policy._history[i] + [pooled[row]])[-policy.window_size:]
        by_length: dict[int, list[int]] = {}
        for i in need:
            by_length.setdefault(len(policy._history[i]), []).append(i)
        for idx in by_length.values():
            window = torch.stack([torch.stack(policy._history[i]) for i in idx])
            chunks = policy.decoder.predict_chunk(window, generator=policy.generator).float()
            for row, i in enumerate(idx):
                self.push(i, chunks[row])
        actions = torch.stack([self.act(i) for i in range(n)])
        return actions.cpu().numpy()
