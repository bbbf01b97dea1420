"""On-policy rollouts for RL fine-tuning: whole meta-episodes on the env workers, the policy batched in
this process across every env of every worker.

`RolloutCollector.collect(specs)` runs each episode spec to its last trial on `pool.num_slots` env slots
(workers × envs per worker), in lockstep: every round the parent encodes the current step of all active
slots in one batch, samples their actions from the policy's action distribution, sends each worker its
slots' actions in one message, and the workers step their envs while the parent waits. A slot whose
episode ends takes the next spec at once (episodes of different lengths never wait for each other).

The policy keeps, per slot, the features of the current trial's last `window_size` steps (cleared at
every trial start, as in evaluation), so a step's action distribution is that of `select_action` on the
same history. Each finished episode is a `Trajectory` holding what a PPO update needs to recompute the
step's log-probability with gradients: the observations the policy reads, the text it read, where its
window starts, the sampled action and its log-probability, the critic's value and the reward.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from metamanip.evaluation.metrics import TrialRow
from metamanip.evaluation.protocol import EpisodeSpec
from metamanip.evaluation.rollout import episode_rows, feedback_key, max_episode_steps
from metamanip.evaluation.workers import EnvWorkerPool
from metamanip.models.action_dist import to_env_action

log = logging.getLogger(__name__)

#: What the critic reads beside the policy's step feature: the trial's index and the step's place in it.
CRITIC_EXTRA = 2


@dataclass
class Trajectory:
    """One meta-episode (all its trials) as the policy lived it."""

    spec: EpisodeSpec
    obs: dict[str, np.ndarray]           # (T, ...) per key the policy reads
    texts: list[str]                      # (T) the text the policy read at each step
    window_start: np.ndarray              # (T,) index of the first step of each step's history window
    actions: np.ndarray                   # (T, 7) distribution samples (arm unclipped, gripper 0/1)
    log_probs: np.ndarray                 # (T,)
    values: np.ndarray                    # (T,)
    rewards: np.ndarray                   # (T,)
    critic_extra: np.ndarray              # (T, CRITIC_EXTRA)
    rows: list[TrialRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class _Slot:
    spec: EpisodeSpec
    obs: Mapping[str, Any]
    info: Mapping[str, Any]
    first_text: str
    trial_start: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)


def obs_keys(policy: Any) -> tuple[str, ...]:
    """The observation keys the policy reads (what a trajectory must keep to recompute its features)."""
    keys: list[str] = []
    if policy.uses_images:
        keys += [f"rgb_{cam}" for cam in policy.cameras]
    if policy.state_encoder is not None:
        keys += list(policy.state_encoder.keys)
    return tuple(keys)


def critic_extra(info: Mapping[str, Any], num_trials: int, trial_steps: int) -> np.ndarray:
    return np.array([float(info.get("trial", 0)) / max(num_trials - 1, 1),
                     float(info.get("trial_step", 0)) / max(trial_steps, 1)], dtype=np.float32)


class RolloutCollector:
    """Lockstep episodes on `pool`, the policy + action head + critic evaluated in this process."""

    def __init__(self, pool: EnvWorkerPool, policy: Any, head: Any, critic: Callable[[torch.Tensor], torch.Tensor],
                 *, num_objs: int, num_trials: int, trial_steps: int, feedback: str = "train",
                 generator: torch.Generator | None = None):
        self.pool, self.policy, self.head, self.critic = pool, policy, head, critic
        self.num_objs, self.num_trials, self.trial_steps = num_objs, num_trials, trial_steps
        self.key = feedback_key(feedback)
        self.ablated = getattr(policy, "text_input", "trial") == "first_trial"
        self.generator = generator
        self.keys = obs_keys(policy)
        self.slots = [(w, j) for w in range(len(pool)) for j in range(pool.envs_per_worker)]
        self.seconds = 0.0   # wall time spent in collect()
        self.env_steps = 0
        self.rounds = 0      # lockstep rounds: env_steps / (rounds x slots) is how busy the envs were

    # ------------------------------------------------------------------ helpers
    def _text(self, slot: _Slot) -> str:
        return slot.first_text if self.ablated else str(slot.info["feedback"][self.key])

    def _reset(self, assignments: dict[int, EpisodeSpec]) -> dict[int, tuple[Any, Any]]:
        by_worker: dict[int, list[int]] = {}
        for s in assignments:
            by_worker.setdefault(self.slots[s][0], []).append(s)
        for w, ss in by_worker.items():
            self.pool.send(w, "reset_many", [(self.slots[s][1], assignments[s].seed,
                                              assignments[s].reset_options()) for s in ss])
        out = {}
        for w, ss in by_worker.items():
            for s, answer in zip(ss, self.pool.recv(w)):
                out[s] = answer
        return out

    def _step(self, actions: dict[int, np.ndarray]) -> dict[int, tuple]:
        by_worker: dict[int, list[int]] = {}
        for s in actions:
            by_worker.setdefault(self.slots[s][0], []).append(s)
        for w, ss in by_worker.items():
            self.pool.send(w, "step_many", [(self.slots[s][1], actions[s]) for s in ss])
        out = {}
        for w, ss in by_worker.items():
            for s, answer in zip(ss, self.pool.recv(w)):
                out[s] = answer
        return out

    # ------------------------------------------------------------------ collection
    @torch.no_grad()
    def collect(self, specs: Sequence[EpisodeSpec]) -> list[Trajectory]:
        """Run every spec to its end; trajectories come back in the order of `specs`."""
        t0 = time.perf_counter()
        pending = deque(enumerate(specs))
        done: dict[int, Trajectory] = {}
        active: dict[int, tuple[int, _Slot]] = {}
        limit = max_episode_steps(self.num_trials, self.trial_steps)
        text_cache: dict[str, torch.Tensor] = {}
        window = int(self.policy.window_size)
        device = self.policy.device

        def start(free: list[int]) -> None:
            assignments = {}
            for s in free:
                if pending:
                    idx, spec = pending.popleft()
                    assignments[s] = (idx, spec)
            if not assignments:
                return
            answers = self._reset({s: spec for s, (_, spec) in assignments.items()})
            for s, (idx, spec) in assignments.items():
                obs, info = answers[s]
                active[s] = (idx, _Slot(spec, obs, info, str(info["feedback"][self.key])))

        start(list(range(len(self.slots))))
        # per slot, the features of the current trial's last `window` steps, right-padded with zeros
        hist: torch.Tensor | None = None
        lens = np.zeros(len(self.slots), dtype=np.int64)
        while active:
            order = sorted(active)
            slots = [active[s][1] for s in order]
            batch = {k: np.stack([np.asarray(sl.obs[k]) for sl in slots]) for k in self.keys}
            texts = [self._text(sl) for sl in slots]
            feats = self.policy.step_features(batch, texts, text_cache=text_cache)
            if hist is None:
                hist = torch.zeros(len(self.slots), window, feats.shape[-1], device=device, dtype=feats.dtype)
            idx = torch.as_tensor(order, device=device)
            full = lens[order] == window
            if full.any():  # drop the oldest step of full windows
                f = idx[torch.as_tensor(full, device=device)]
                hist[f, :-1] = hist[f, 1:].clone()
            pos = np.minimum(lens[order], window - 1)
            hist[idx, torch.as_tensor(pos, device=device)] = feats
            lens[order] = np.minimum(lens[order] + 1, window)
            arm, grip = self.policy.action_params(hist[idx], torch.as_tensor(lens[order], device=device))
            dist = self.head(arm, grip)
            sample = self._sample(dist)
            log_prob = dist.log_prob(sample).float().cpu().numpy()
            extra = np.stack([critic_extra(sl.info, self.num_trials, self.trial_steps) for sl in slots])
            values = self.critic(feats, torch.as_tensor(extra, device=device)).reshape(-1).float().cpu().numpy()
            env_actions = to_env_action(sample).float().cpu().numpy()
            samples = sample.float().cpu().numpy()
            for i, sl in enumerate(slots):
                n = len(sl.steps)
                sl.steps.append({"obs": {k: batch[k][i] for k in self.keys}, "text": texts[i],
                                 "window_start": max(sl.trial_start, n - window + 1), "action": samples[i],
                                 "log_prob": float(log_prob[i]), "value": float(values[i]), "extra": extra[i]})
            answers = self._step({s: env_actions[i] for i, s in enumerate(order)})
            self.env_steps += len(order)
            self.rounds += 1
            freed = []
            for s in order:
                ep, sl = active[s]
                obs, reward, terminated, truncated, info = answers[s]
                sl.steps[-1]["reward"] = float(reward)
                sl.obs, sl.info = obs, info
                if info.get("trial_done"):  # evaluation clears the history at every trial start
                    lens[s] = 0
                    hist[s].zero_()
                    sl.trial_start = len(sl.steps)
                if terminated or truncated or len(sl.steps) >= limit:
                    if not (terminated or truncated):
                        raise RuntimeError(f"episode {sl.spec.key} did not end within {limit} steps: the "
                                           "setting ignores trial_steps")
                    done[ep] = self._trajectory(sl, info)
                    del active[s]
                    lens[s] = 0
                    hist[s].zero_()
                    freed.append(s)
            start(freed)
        self.seconds += time.perf_counter() - t0
        return [done[i] for i in range(len(specs))]

    def _sample(self, dist: Any) -> torch.Tensor:
        if self.generator is None:
            return dist.sample()
        # draw the noise from our generator so a resumed run samples the same actions
        noise = torch.randn(dist.loc.shape, generator=self.generator, device=dist.loc.device, dtype=dist.loc.dtype)
        arm = dist.loc + dist.scale * noise
        u = torch.rand(dist.logits.shape, generator=self.generator, device=dist.logits.device)
        grip = (u < torch.sigmoid(dist.logits)).to(arm.dtype)
        return torch.cat([arm, grip[..., None]], dim=-1)

    def _trajectory(self, sl: _Slot, info: Mapping[str, Any]) -> Trajectory:
        steps = sl.steps
        return Trajectory(
            spec=sl.spec,
            obs={k: np.stack([st["obs"][k] for st in steps]) for k in self.keys},
            texts=[st["text"] for st in steps],
            window_start=np.array([st["window_start"] for st in steps], dtype=np.int64),
            actions=np.stack([st["action"] for st in steps]).astype(np.float32),
            log_probs=np.array([st["log_prob"] for st in steps], dtype=np.float32),
            values=np.array([st["value"] for st in steps], dtype=np.float32),
            rewards=np.array([st["reward"] for st in steps], dtype=np.float32),
            critic_extra=np.stack([st["extra"] for st in steps]).astype(np.float32),
            rows=episode_rows(sl.spec, info, self.num_objs, self.num_trials))


def bare_step_seconds(pool: EnvWorkerPool, specs: Sequence[EpisodeSpec], rounds: int, seed: int = 0) -> float:
    """Seconds per env step of plain lockstep stepping on the same workers and slots (random actions, no
    policy): the floor `RolloutCollector` is measured against. Slots whose episode ends are reset."""
    slots = [(w, j) for w in range(len(pool)) for j in range(pool.envs_per_worker)]
    rng = np.random.default_rng(seed)
    specs = list(specs) or []
    if not specs:
        raise ValueError("bare_step_seconds needs at least one episode spec to reset the envs with")

    def reset(ss: list[int]) -> None:
        by_worker: dict[int, list[int]] = {}
        for s in ss:
            by_worker.setdefault(slots[s][0], []).append(s)
        for w, items in by_worker.items():
            pool.send(w, "reset_many", [(slots[s][1], specs[s % len(specs)].seed,
                                         specs[s % len(specs)].reset_options()) for s in items])
        for w in by_worker:
            pool.recv(w)

    reset(list(range(len(slots))))
    steps = 0
    t0 = time.perf_counter()
    for _ in range(rounds):
        by_worker: dict[int, list[int]] = {}
        for s in range(len(slots)):
            by_worker.setdefault(slots[s][0], []).append(s)
        for w, items in by_worker.items():
            acts = rng.uniform(-1, 1, size=(len(items), 7)).astype(np.float32)
            acts[:, 6] = np.sign(acts[:, 6])
            pool.send(w, "step_many", [(slots[s][1], a) for s, a in zip(items, acts)])
        ended = []
        for w, items in by_worker.items():
            for s, (_, _, term, trunc, _) in zip(items, pool.recv(w)):
                if term or trunc:
                    ended.append(s)
        steps += len(slots)
        if ended:
            reset(ended)
    return (time.perf_counter() - t0) / max(steps, 1)


class EpisodePlan:
    """Iteration i's rollout episodes: `episodes` specs of the protocol's `split`, drawn evenly over its
    combinations (or pairs) with seeds fixed by (seed, i) and never equal to an evaluation seed's, so
    a resumed run replays the same episodes and the evaluation's initial states stay unseen."""

    def __init__(self, env_cfg: Any, split: str, episodes: int, seed: int):
        from metamanip.evaluation.plan import plan_episodes

        self.env_cfg, self.split, self.episodes, self.seed = env_cfg, split, int(episodes), int(seed)
        self._plan = plan_episodes
        self.groups = len(plan_episodes(env_cfg, split, 1, seed))
        if self.groups < 1:
            raise ValueError(f"the {split} split of this setting has no combinations to train on")

    def __call__(self, iteration: int) -> list[EpisodeSpec]:
        resets = -(-self.episodes // self.groups)
        specs = self._plan(self.env_cfg, self.split, resets, (self.seed + 1) * 1_000_003 + 7919 * (iteration + 1))
        pick = np.random.default_rng([self.seed, iteration]).permutation(len(specs))[: self.episodes]
        return [specs[i] for i in sorted(pick)]
