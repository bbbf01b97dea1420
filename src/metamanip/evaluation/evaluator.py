"""Run an evaluation protocol: parallel env workers, resume from trials.csv, summary and metrics.

Two ways to act, same results format:
- a policy in this process, batched across the workers (lockstep: send actions, receive observations);
- a per-env agent (an oracle) built inside each worker, which runs whole episodes there.
Episodes are appended to trials.csv in the protocol's order whatever order they finish in, so an
interrupted and resumed evaluation writes exactly the file an uninterrupted one writes.
"""
from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from metamanip.atomic import write_json
from metamanip.evaluation.agents import PolicyAgent
from metamanip.evaluation.metrics import metrics_from_summary, summarize, with_compute
from metamanip.evaluation.protocol import EpisodeSpec
from metamanip.evaluation.rollout import (EpisodeResult, VideoRecorder, episode_rows, feedback_key,
                                          max_episode_steps)
from metamanip.evaluation.trial_log import TrialLog
from metamanip.evaluation.workers import EnvWorkerPool

log = logging.getLogger(__name__)


class _InOrder:
    """Appends finished episodes to the trial log in protocol order and keeps the running figures."""

    def __init__(self, trial_log: TrialLog, todo: Sequence[EpisodeSpec], bar: tqdm):
        self.log = trial_log
        self.order = [s.key for s in todo]
        self.pos = 0
        self.pending: dict[tuple[str, int], EpisodeResult] = {}
        self.bar = bar
        eps = {}
        for r in trial_log.rows:
            eps[(r.group, r.episode)] = eps.get((r.group, r.episode), 0.0) + r.reward
        self.rewards = list(eps.values())

    def add(self, result: EpisodeResult) -> None:
        self.pending[result.spec.key] = result
        while self.pos < len(self.order) and self.order[self.pos] in self.pending:
            self.log.append_episode(self.pending.pop(self.order[self.pos]).rows)
            self.pos += 1
        self.rewards.append(sum(r.reward for r in result.rows))
        self.bar.update(1)
        self.bar.set_postfix(success=f"{np.mean([x > 0 for x in self.rewards]):.2f}",
                             avg_reward=f"{np.mean(self.rewards):.2f}")


def evaluate(specs: Sequence[EpisodeSpec], *, env_factory: Callable[[], Any], out_dir: str | Path,
             num_objs: int, num_trials: int, trial_steps: int, num_workers: int = 1,
             policy: Any = None, agent_factory: Callable[[Any], Any] | None = None, feedback: str = "train",
             config: Mapping[str, Any] | None = None, progress: bool = True,
             stop_after: int | None = None) -> dict[str, Any]:
    """Evaluate `specs` into `out_dir` (trials.csv, summary.json, metrics.json, videos/); returns the summary.

    Exactly one of `policy` (batched in this process) and `agent_factory` (per-env agent built in each
    worker from its env) is given. `stop_after` ends the run after that many new episodes (used to test
    resumption; the run is then incomplete and a later call finishes it).
    """
    if (policy is None) == (agent_factory is None):
        raise ValueError("give exactly one agent: a policy (eval.agent=policy) or an oracle (eval.agent=oracle)")
    feedback_key(feedback)
    if not specs:
        raise ValueError("the protocol has no episodes: check eval.split and the setting's combinations")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trial_log = TrialLog(out / "trials.csv", num_trials)
    trial_log.check_plan((s.key for s in specs), specs[0].setting, num_objs)
    todo = [s for s in specs if s.key not in trial_log.done]
    if stop_after is not None:
        todo = todo[:stop_after]
    log.info("evaluation: %d episode(s), %d already done, %d to run on %d worker(s)",
             len(specs), len(trial_log.done), len(todo), min(num_workers, max(1, len(todo))))
    video_dir = out / "videos"
    with tqdm(total=len(specs), initial=len(trial_log.done), desc="eval episodes", unit="ep",
              disable=not progress, dynamic_ncols=True) as bar:
        writer = _InOrder(trial_log, todo, bar)
        if todo:
            n = min(num_workers, len(todo))
            kwargs = dict(num_objs=num_objs, num_trials=num_trials, trial_steps=trial_steps, feedback=feedback)
            with EnvWorkerPool(env_factory, n, agent_factory=agent_factory) as pool:
                if policy is not None:
                    _run_lockstep(pool, PolicyAgent(policy, n, feedback), todo, writer, video_dir, **kwargs)
                else:
                    _run_in_workers(pool, todo, writer, video_dir, **kwargs)
    groups = list(dict.fromkeys(s.group for s in specs))
    summary = summarize(trial_log.rows, num_trials, groups=groups, config=config)
    summary["complete"] = len(trial_log.done) == len(specs)
    write_json(out / "summary.json", summary)
    write_json(out / "metrics.json", metrics_from_summary(summary))
    return summary


def _run_in_workers(pool: EnvWorkerPool, todo: Sequence[EpisodeSpec], writer: _InOrder, video_dir: Path,
                    **kwargs: Any) -> None:
    queue = deque(todo)
    busy: dict[int, EpisodeSpec] = {}

    def submit(i: int) -> None:
        spec = queue.popleft()
        busy[i] = spec
        pool.send(i, "episode", (spec, {**kwargs, "video_dir": str(video_dir)}))

    for i in range(len(pool)):
        if queue:
            submit(i)
    while busy:
        for i in pool.ready(list(busy)):
            result: EpisodeResult = pool.recv(i)
            del busy[i]
            writer.add(result)
            if queue:
                submit(i)


def _run_lockstep(pool: EnvWorkerPool, agent: PolicyAgent, todo: Sequence[EpisodeSpec], writer: _InOrder,
                  video_dir: Path, *, num_objs: int, num_trials: int, trial_steps: int, feedback: str) -> None:
    n = len(pool)
    queue = deque(todo)
    active: list[EpisodeSpec | None] = [None] * n
    obs: list[Any] = [None] * n
    infos: list[Any] = [None] * n
    steps = [0] * n
    recorders: list[VideoRecorder | None] = [None] * n
    limit = max_episode_steps(num_trials, trial_steps)

    def start(i: int) -> bool:
        if not queue:
            active[i] = None
            return False
        active[i] = queue.popleft()
        steps[i] = 0
        pool.send(i, "reset", active[i])
        return True

    def started(i: int) -> None:
        obs[i], infos[i] = pool.recv(i)
        agent.begin_episode(i, infos[i])
        spec = active[i]
        recorders[i] = VideoRecorder(spec, video_dir, agent.key) if spec.video else None
        if recorders[i]:
            recorders[i].add(obs[i], infos[i])

    for i in [i for i in range(n) if start(i)]:
        started(i)
    while any(a is not None for a in active):
        live = [i for i in range(n) if active[i] is not None]
        filler = live[0]
        batch_obs = [obs[i] if active[i] is not None else obs[filler] for i in range(n)]
        batch_info = [infos[i] if active[i] is not None else infos[filler] for i in range(n)]
        actions = agent.act_batch(batch_obs, batch_info)
        for i in live:
            pool.send(i, "step", actions[i])
        restarted = []
        for i in live:
            obs[i], _, terminated, truncated, infos[i] = pool.recv(i)
            steps[i] += 1
            if recorders[i]:
                recorders[i].add(obs[i], infos[i])
            if terminated or truncated:
                spec = active[i]
                video = recorders[i].finish() if recorders[i] else None
                rows = with_compute(episode_rows(spec, infos[i], num_objs, num_trials), agent.episode_compute(i))
                writer.add(EpisodeResult(spec, rows, video))
                if start(i):
                    restarted.append(i)
            elif steps[i] >= limit:
                raise RuntimeError(f"episode {active[i].key} did not end within {limit} steps: "
                                   "the setting ignores trial_steps")
            elif infos[i].get("trial_done"):
                agent.end_trial(i)
        for i in restarted:
            started(i)

