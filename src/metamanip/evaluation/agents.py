"""The agents an evaluation can run through the protocol.

- `PolicyAgent`: a trained policy in the parent process, batched across env workers (one batch row per
  worker, so the policy's per-env history stays tied to its worker); its language input is the setting's
  feedback of the chosen kind (`train_feedback` or `alt_feedback`), and its history is cleared at every
  episode and trial start.
- `OracleFactory`: builds an oracle (scripted or LLM, from its config node) inside each worker, where it
  runs whole episodes next to its env.
- `PolicyFactory`: a copy of a small policy in each worker (CPU evaluation: inference runs in parallel too).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from metamanip.evaluation.rollout import feedback_key

log = logging.getLogger(__name__)

IMAGE_KEYS = ("rgb_static", "rgb_gripper", "depth_static", "depth_gripper")


def first_trial_text(policy: Any) -> bool:
    """Whether the policy reads the episode's first feedback in every trial (`policy.text_input=first_trial`,
    the feedback ablation): it then never sees what it already tried."""
    return getattr(policy, "text_input", "trial") == "first_trial"


def configure_exits(policy: Any, early_exit: Mapping[str, Any] | None) -> None:
    """Apply an evaluation's exit budget (`eval.early_exit`: thresholds, exit_ratio, max_layer) to a
    multi-exit policy; nothing when no budget is given."""
    budget = {k: v for k, v in dict(early_exit or {}).items() if v is not None}
    if not budget:
        return
    if not hasattr(policy, "configure_exits"):
        from metamanip.errors import UserError

        raise UserError(f"eval.early_exit={budget} needs a multi-exit policy, but the checkpoint holds a "
                        f"{type(policy).__name__}", fix="train with policy.early_exit set "
                        "(+early_exit@policy.early_exit=deer) or drop eval.early_exit")
    unknown = sorted(set(budget) - {"thresholds", "exit_ratio", "max_layer"})
    if unknown:
        from metamanip.errors import UserError

        raise UserError(f"unknown eval.early_exit options {unknown}",
                        fix="use eval.early_exit.thresholds, eval.early_exit.exit_ratio or eval.early_exit.max_layer")
    thresholds = budget.get("thresholds")
    policy.configure_exits(thresholds=list(thresholds) if isinstance(thresholds, (list, tuple)) else thresholds,
                           max_layer=budget.get("max_layer"), exit_ratio=budget.get("exit_ratio"))


class _TrialCompute:
    """The policy's compute counters per env slot, cut at every trial end (multi-exit policies only)."""

    def __init__(self, policy: Any, num_envs: int):
        self.policy = policy if hasattr(policy, "take_compute") else None
        self.trials: list[list[dict[str, float]]] = [[] for _ in range(num_envs)]

    def begin(self, slot: int) -> None:
        if self.policy is not None:
            self.policy.take_compute(slot)
            self.trials[slot] = []

    def end_trial(self, slot: int) -> None:
        if self.policy is not None:
            self.trials[slot].append(self.policy.take_compute(slot))

    def episode(self, slot: int) -> list[dict[str, float]] | None:
        if self.policy is None:
            return None
        self.end_trial(slot)
        out, self.trials[slot] = self.trials[slot], []
        return out


class PolicyAgent:
    """Batched policy inference over `num_envs` env slots (the DESIGN.md `select_action`/`reset` API)."""

    def __init__(self, policy: Any, num_envs: int, feedback: str = "train"):
        self.policy = policy
        self.num_envs = int(num_envs)
        self.key = feedback_key(feedback)
        self.ablated = first_trial_text(policy)
        self.first_text: list[str | None] = [None] * self.num_envs
        self.compute = _TrialCompute(policy, self.num_envs)
        if hasattr(policy, "eval"):
            policy.eval()

    def begin_episode(self, slot: int, info: Mapping[str, Any]) -> None:
        self.policy.reset(env_ids=[slot])
        self.compute.begin(slot)
        self.first_text[slot] = str(info["feedback"][self.key])

    def end_trial(self, slot: int) -> None:
        self.policy.reset(env_ids=[slot])
        self.compute.end_trial(slot)

    def episode_compute(self, slot: int) -> list[dict[str, float]] | None:
        """Per trial of the episode that just ended in `slot`: its LM compute (None: not counted)."""
        return self.compute.episode(slot)

    def act_batch(self, obs: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Actions (N, 7) for all slots; rows of idle slots are computed and ignored."""
        keys = [k for k in obs[0] if isinstance(obs[0][k], np.ndarray)]
        batch = {k: np.stack([o[k] for o in obs]) for k in keys}
        texts = [str(i["feedback"][self.key]) for i in infos]
        if self.ablated:
            texts = [t if self.first_text[j] is None else self.first_text[j] for j, t in enumerate(texts)]
        import torch

        with torch.inference_mode():
            actions = self.policy.select_action(batch, texts)
        if isinstance(actions, torch.Tensor):
            actions = actions.detach().cpu().numpy()
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (len(obs), 7):
            raise RuntimeError(f"policy.select_action returned shape {actions.shape}, expected ({len(obs)}, 7)")
        return actions


class OracleFactory:
    """Picklable recipe for an oracle agent, instantiated from its config node next to its env.

    The oracle config's `_target_` is called with the env as `env=` when its signature takes one.
    """

    def __init__(self, oracle_cfg: Mapping[str, Any]):
        self.oracle_cfg = dict(oracle_cfg)

    def __call__(self, env: Any) -> Any:
        import inspect

        from hydra.utils import get_object, instantiate

        target = get_object(self.oracle_cfg["_target_"])
        try:
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):
            params = {}
        kwargs = {"env": env} if "env" in params and "env" not in self.oracle_cfg else {}
        return instantiate(self.oracle_cfg, **kwargs, _convert_="all")


class PolicyEpisodeAgent:
    """A policy acting in one env (inside a worker): the DESIGN.md agent API over `select_action` with a
    batch of one; its history is cleared at the episode start and whenever a trial has ended."""

    def __init__(self, policy: Any, feedback: str = "train"):
        self.policy = policy
        self.key = feedback_key(feedback)
        self.ablated = first_trial_text(policy)
        self.first_text: str | None = None
        self.compute = _TrialCompute(policy, 1)
        if hasattr(policy, "eval"):
            policy.eval()

    def reset_episode(self, info: Mapping[str, Any]) -> None:
        self.policy.reset()
        self.compute.begin(0)
        self.first_text = str(info["feedback"][self.key])

    def episode_compute(self) -> list[dict[str, float]] | None:
        """Per trial of the episode just run: its LM compute (None: the policy does not count it)."""
        return self.compute.episode(0)

    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray:
        if info.get("trial_done"):
            self.policy.reset()
            self.compute.end_trial(0)
        batch = {k: v[None] for k, v in obs.items() if isinstance(v, np.ndarray)}
        text = self.first_text if (self.ablated and self.first_text is not None) else str(info["feedback"][self.key])
        import torch

        with torch.inference_mode():
            action = self.policy.select_action(batch, [text])
        return np.asarray(action, dtype=np.float32).reshape(-1, 7)[0]


class PolicyFactory:
    """Picklable recipe for a `PolicyEpisodeAgent`: each worker loads its own copy of the checkpoint.

    For CPU evaluation of small policies, where inference in every worker beats batching in one process.
    """

    def __init__(self, ckpt: str, feedback: str = "train", threads: int = 1,
                 decoder_overrides: Mapping[str, Any] | None = None, early_exit: Mapping[str, Any] | None = None):
        self.ckpt = str(ckpt)
        self.feedback = feedback
        self.threads = int(threads)
        self.decoder_overrides = dict(decoder_overrides or {})  # chunk execution (eval.chunk_execution)
        self.early_exit = dict(early_exit or {})  # exit budget (eval.early_exit)

    def __call__(self, env: Any) -> PolicyEpisodeAgent:
        import torch

        from metamanip.models.checkpoint import load_policy, read_payload
        from metamanip.models.chunking import with_chunk_execution

        torch.set_num_threads(self.threads)
        source: Any = self.ckpt
        if self.decoder_overrides:
            source = with_chunk_execution(read_payload(self.ckpt), self.decoder_overrides)
        policy = load_policy(source)
        configure_exits(policy, self.early_exit)
        return PolicyEpisodeAgent(policy, self.feedback)
