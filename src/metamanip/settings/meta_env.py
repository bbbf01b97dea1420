"""The meta-episode machinery shared by Explore, Combi-Explore and the single-object setting.

A meta-episode fixes an initial state, an ordered list of episode objects and a hidden rewarding task,
then runs `num_trials` trials. Every trial restores exactly the same initial state (same scene_obs,
same robot base), tracks which tasks the robot completes (`TaskLatch` over the simulator's detectors)
and ends on the setting's rule or after `trial_steps` steps. The subclasses say how an episode is
sampled, when a trial ends, and what the feedback says; this class owns the gymnasium interface, the
noise of `reset_robot_pos`, the per-trial records and the `info` dict documented in docs/DESIGN.md.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import gymnasium as gym
import numpy as np

from metamanip.envs.scene import make_scene_obs
from metamanip.envs.tasks import detect_tasks
from metamanip.settings import chat
from metamanip.settings.latch import TaskLatch
from metamanip.settings.objects import TASK_OBJECT, LogicalState, feasible_task, task_instruction
from metamanip.settings.paraphrases import Paraphraser
from metamanip.settings.splits import check_split
from metamanip.settings.trial_limits import TrialLimits

log = logging.getLogger(__name__)

# reset_robot_pos: the original moved the Panda base to this nominal point plus integer-centimetre
# offsets dx ∈ [-15, 15), dy ∈ [-2, 2), dz ∈ [-5, 5) (upper bounds exclusive, as numpy's randint).
BASE_NOMINAL = (-0.34, -0.46, 0.29)
BASE_OFFSET_CM = ((-15, 15), (-2, 2), (-5, 5))


def trial_budget(num_trials: int | None, trial_steps: int | None, rollout_steps: int | None,
                 default_trials: int, setting: str = "") -> tuple[int, int]:
    """(num_trials, trial_steps): num_trials defaults to the thesis value, trial_steps to
    rollout_steps // num_trials, as the thesis' data creation derived it."""
    n = default_trials if num_trials is None else num_trials
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"env.num_trials must be a positive integer, got {num_trials!r}")
    if trial_steps is None:
        if rollout_steps is None:
            raise ValueError("give env.trial_steps or env.rollout_steps (trial_steps = rollout_steps // num_trials)")
        if not isinstance(rollout_steps, int) or rollout_steps < n:
            raise ValueError(f"env.rollout_steps={rollout_steps!r} must be an integer of at least "
                             f"num_trials={n} (one step per trial)")
        trial_steps = rollout_steps // n
    elif rollout_steps is not None and n * trial_steps != rollout_steps:
        log.info("%s: num_trials × trial_steps = %s overrides rollout_steps=%s", setting, n * trial_steps, rollout_steps)
    if not isinstance(trial_steps, int) or isinstance(trial_steps, bool) or trial_steps < 1:
        raise ValueError(f"env.trial_steps must be a positive integer, got {trial_steps!r}")
    return n, trial_steps


def _build_sim(sim: Any) -> Any:
    if isinstance(sim, Mapping) or type(sim).__name__ == "DictConfig":
        from hydra.utils import instantiate

        return instantiate(sim)
    if sim is None:
        raise ValueError("a setting needs a simulator: pass env.sim (conf/env/sim/playtable.yaml) or a PlayTableEnv")
    return sim


def empty_feedback() -> dict[str, Any]:
    return {"train_feedback": "", "alt_feedback": "", "lm_feedback": chat.user("")}


@dataclass
class Episode:
    """What a reset fixes for all trials of a meta-episode."""

    objects: list[str]
    state: LogicalState
    meta_task: Any  # a task name (Explore) or a pair of task names (Combi)
    meta_position: Any  # index (Explore) or pair of indices (Combi) of the rewarding object(s)
    tracked: tuple[str, ...]
    completed: list[str] = field(default_factory=list)  # every task completed so far, first-time order


@dataclass(frozen=True)
class Judgement:
    """A setting's verdict on a step: did the trial end, was it rewarded, is mid-trial feedback due."""

    trial_over: bool = False
    rewarded: bool = False
    mid_feedback: bool = False


class MetaEnv(gym.Env):
    """Base class: a gymnasium env whose episode is a meta-episode of `num_trials` trials."""

    metadata = {"render_modes": ["rgb_array"]}
    setting: ClassVar[str] = ""
    reset_option_keys: ClassVar[frozenset[str]] = frozenset({"initial_state", "meta_position"})

    def __init__(self, sim: Any, *, name: str | None = None, num_trials: int | None = None,
                 trial_steps: int | None = None, rollout_steps: int | None = None, provide_feedback: bool = True,
                 reset_robot_pos: bool = False, resample_noise_each_trial: bool = False, split: str = "train",
                 trial_limits: TrialLimits | Mapping[str, int] | None = None) -> None:
        if name is not None and name != self.setting:
            raise ValueError(f"{type(self).__name__} is the {self.setting!r} setting, but env.name={name!r}; "
                             f"use env={name} to select that setting")
        self.split = check_split(split)
        self.num_trials, self.trial_steps = self._trial_budget(num_trials, trial_steps, rollout_steps)
        self.rollout_steps = self.num_trials * self.trial_steps
        self.provide_feedback = bool(provide_feedback)
        self.reset_robot_pos = bool(reset_robot_pos)
        self.resample_noise_each_trial = bool(resample_noise_each_trial)
        self.trial_limits = self._check_limits(trial_limits)
        self.sim = _build_sim(sim)
        self.observation_space = getattr(self.sim, "observation_space", None)
        self.action_space = getattr(self.sim, "action_space", None)
        self._episode: Episode | None = None
        self._latch = TaskLatch(())
        self._over = True

    # ---- subclass hooks -------------------------------------------------------------------------
    @property
    def objects_per_episode(self) -> int:
        raise NotImplementedError

    def default_num_trials(self) -> int:
        return self.thesis_num_trials({})

    @classmethod
    def thesis_num_trials(cls, cfg: Mapping[str, Any]) -> int:
        """Trials per episode when env.num_trials is null (the thesis' value for this config)."""
        return 4

    def _sample_episode(self, rng: np.random.Generator, options: Mapping[str, Any]) -> Episode:
        raise NotImplementedError

    def _judge(self, new_tasks: list[str]) -> Judgement:
        raise NotImplementedError

    def _first_feedback(self) -> dict[str, Any]:
        raise NotImplementedError

    def _trial_end_feedback(self, result: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _mid_feedback(self, new_tasks: list[str], obs: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    # ---- configuration --------------------------------------------------------------------------
    def _trial_budget(self, num_trials: int | None, trial_steps: int | None,
                      rollout_steps: int | None) -> tuple[int, int]:
        return trial_budget(num_trials, trial_steps, rollout_steps, self.default_num_trials(), self.setting)

    def _check_limits(self, limits: TrialLimits | Mapping[str, int] | None) -> TrialLimits | None:
        if limits is None:
            return None
        if not isinstance(limits, TrialLimits):
            limits = TrialLimits(**{k: v for k, v in dict(limits).items() if k != "_target_"})
        limits.check_feasible(self.setting, self.num_trials, self.objects_per_episode)
        return limits

    # ---- public read-only views -----------------------------------------------------------------
    @property
    def episode(self) -> Episode:
        if self._episode is None:
            raise RuntimeError(f"{type(self).__name__}: call reset() first")
        return self._episode

    @property
    def tracked_tasks(self) -> tuple[str, ...]:
        return self.episode.tracked

    @property
    def episode_objects(self) -> list[str]:
        return list(self.episode.objects)

    @property
    def initial_state(self) -> LogicalState:
        return self.episode.state

    @property
    def meta_task(self) -> Any:
        return self.episode.meta_task

    @property
    def feasible_tasks(self) -> dict[str, str | None]:
        return {o: feasible_task(o, self.episode.state) for o in self.episode.objects}

    @property
    def trial(self) -> int:
        return min(self._trial, self.num_trials - 1)

    def task_instruction(self, task: str) -> str:
        return task_instruction(task)

    def environment_description(self) -> list[dict[str, str]]:
        """The LLM oracle's chat preamble: [user: objects, rules and guidelines, assistant: acknowledgement]."""
        return chat.environment_description(self.setting, self.episode.objects, self.episode.state)

    def env_status(self) -> str:
        return chat.env_status(self.episode.objects, self.episode.state)

    # ---- gymnasium ------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - self.reset_option_keys
        if unknown:
            raise ValueError(f"{type(self).__name__}.reset: unknown options {sorted(unknown)}; "
                             f"allowed: {sorted(self.reset_option_keys)}")
        rng = self.np_random
        self._episode = self._sample_episode(rng, options)
        self._latch.reset(self._episode.tracked)
        self._draw_noise(rng)
        self._para = Paraphraser.sample(self.split, rng)
        self._trial = 0
        self._results: list[dict[str, Any]] = []
        self._over = False
        obs = self._start_trial(seed)
        self._feedback = self._first_feedback() if self.provide_feedback else empty_feedback()
        return obs, self._info({}, trial_done=False, decision_point=True, completed=[])

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        if self._over:
            raise RuntimeError(f"{type(self).__name__}: the episode is over (or never started); call reset()")
        obs, _, _, _, sim_info = self.sim.step(action)
        self._trial_step += 1
        detected = detect_tasks(self._start_info, self.sim.get_info(), self._latch.tracked)
        new = self._latch.update(detected)
        for t in new:
            if t not in self._episode.completed:
                self._episode.completed.append(t)
        verdict = self._judge(new)
        timeout = self._trial_step >= self.trial_steps
        completed = list(self._latch.completed)
        reward, terminated, trial_done, decision = 0.0, False, False, False
        if verdict.trial_over or timeout:
            trial_done = True
            reward = 1.0 if verdict.rewarded else 0.0
            result = {"trial": self._trial, "reward": reward, "steps": self._trial_step,
                      "completed_tasks": completed, "explored_objects": self.explored_objects(),
                      "ended_by": "reward" if verdict.rewarded else ("task" if verdict.trial_over else "step_limit")}
            self._results.append(result)
            self._trial += 1
            if self.provide_feedback:
                self._feedback = self._trial_end_feedback(result)
            if self._trial >= self.num_trials:
                terminated = True
                self._over = True
            else:
                decision = True
                obs = self._start_trial(None)
        elif verdict.mid_feedback and self.provide_feedback:
            self._feedback = self._mid_feedback(new, obs)
            decision = True
        info = self._info(sim_info, trial_done=trial_done, decision_point=decision, completed=completed)
        info["episode_done"] = terminated
        return obs, reward, terminated, False, info

    def render(self) -> Any:
        return self.sim.render() if hasattr(self.sim, "render") else None

    def close(self) -> None:
        if hasattr(self.sim, "close"):
            self.sim.close()

    # ---- internals ------------------------------------------------------------------------------
    def explored_objects(self) -> list[str]:
        """Episode objects that some completed task (this episode) acted on, in the listed order."""
        touched = {TASK_OBJECT[t] for t in self.episode.completed}
        return [o for o in self.episode.objects if o in touched]

    def _draw_noise(self, rng: np.random.Generator) -> None:
        """Base pose and block noise of `reset_robot_pos`, and the scene_obs the trials restore."""
        if self.reset_robot_pos:
            self._base_pos = np.array([nom + rng.integers(lo, hi) * 0.01
                                       for nom, (lo, hi) in zip(BASE_NOMINAL, BASE_OFFSET_CM)], dtype=float)
        else:
            self._base_pos = None
        self._scene_obs = np.asarray(make_scene_obs(**self.episode.state.scene_kwargs(), rng=rng,
                                                    block_noise=self.reset_robot_pos), dtype=np.float64)

    def _start_trial(self, seed: int | None) -> Any:
        if self._trial > 0 and self.resample_noise_each_trial:
            self._draw_noise(self.np_random)
        opts: dict[str, Any] = {"scene_obs": self._scene_obs.copy()}
        if self._base_pos is not None:
            opts["base_pos"] = self._base_pos.copy()
        obs, _ = self.sim.reset(seed=seed, options=opts)
        self._start_info = self.sim.get_info()
        self._latch.reset()
        self._trial_step = 0
        return obs

    def _info(self, sim_info: Mapping[str, Any], *, trial_done: bool, decision_point: bool,
              completed: list[str]) -> dict[str, Any]:
        ep = self.episode
        info = dict(sim_info)
        fb = self._feedback
        info.update(
            feedback={"train_feedback": fb["train_feedback"], "alt_feedback": fb["alt_feedback"],
                      "lm_feedback": dict(fb["lm_feedback"])},
            trial=self.trial,
            trial_step=self._trial_step,
            trial_done=trial_done,
            decision_point=decision_point,
            completed_tasks=list(completed),
            explored_objects=self.explored_objects(),
            episode_objects=list(ep.objects),
            meta_task=ep.meta_task,
            meta_position=ep.meta_position,
            trial_results=[dict(r, completed_tasks=list(r["completed_tasks"]),
                                explored_objects=list(r["explored_objects"])) for r in self._results],
            episode_done=self._over,
        )
        return info
