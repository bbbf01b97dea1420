"""One evaluation episode: reset a setting to an episode spec, act until the last trial ends, and turn
the setting's per-trial results into trials.csv rows (plus, on request, a video)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np

from metamanip.evaluation.metrics import TrialRow, with_compute
from metamanip.evaluation.protocol import EpisodeSpec
from metamanip.evaluation.video import compose_frame, write_video

log = logging.getLogger(__name__)

FEEDBACK_KEYS = {"train": "train_feedback", "alt": "alt_feedback"}


class EpisodeAgent(Protocol):
    """An agent that acts in one env (an oracle): the DESIGN.md agent contract."""

    def reset_episode(self, info: Mapping[str, Any]) -> None: ...

    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray: ...


@dataclass
class EpisodeResult:
    """What an episode leaves behind: its trials.csv rows and, if asked, the video's path."""

    spec: EpisodeSpec
    rows: list[TrialRow]
    video: str | None = None


def feedback_key(feedback: str) -> str:
    """`eval.feedback` (train | alt) to the key of the setting's feedback dict."""
    try:
        return FEEDBACK_KEYS[feedback]
    except KeyError:
        raise ValueError(f"eval.feedback must be one of {sorted(FEEDBACK_KEYS)}, got {feedback!r}") from None


def episode_rows(spec: EpisodeSpec, info: Mapping[str, Any], num_objs: int, num_trials: int) -> list[TrialRow]:
    """trials.csv rows from the final `info` of an episode (its `trial_results`)."""
    results = list(info.get("trial_results") or [])
    if len(results) > num_trials:
        raise RuntimeError(f"the setting reported {len(results)} trials for a {num_trials}-trial episode")
    meta = info.get("meta_task")
    meta_task = "+".join(meta) if isinstance(meta, (list, tuple)) else str(meta)
    pos = info.get("meta_position", spec.meta_position)
    position = "" if pos is None else ";".join(map(str, pos)) if isinstance(pos, (list, tuple)) else str(pos)
    rows = []
    for k in range(num_trials):
        res = results[k] if k < len(results) else {"reward": 0.0, "steps": 0, "completed_tasks": ()}
        tasks = res.get("completed_tasks") or ()
        rows.append(TrialRow(
            setting=spec.setting, num_objs=int(num_objs), group=spec.group, episode=spec.episode, trial=k + 1,
            meta_position=position,
            meta_task=meta_task, reward=float(res.get("reward", 0.0)), steps=int(res.get("steps", 0)),
            completed_tasks=";".join(sorted(str(t) for t in tasks))))
    return rows


class VideoRecorder:
    """Collects captioned frames of one episode and writes them as `<group>_ep<episode>.mp4`."""

    def __init__(self, spec: EpisodeSpec, video_dir: str | Path, key: str, fps: int = 30):
        name = spec.group.replace("/", "-").replace("+", "-")
        self.path = Path(video_dir) / f"{name}_ep{spec.episode:03d}.mp4"
        self.key = key
        self.fps = fps
        self.frames: list[np.ndarray] = []

    def add(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        text = str((info.get("feedback") or {}).get(self.key, ""))
        trial = info.get("trial")
        self.frames.append(compose_frame(obs.get("rgb_static"), obs.get("rgb_gripper"), text,
                                         None if trial is None else int(trial) + 1))

    def finish(self) -> str:
        write_video(self.path, self.frames, fps=self.fps)
        self.frames = []
        return str(self.path)


def max_episode_steps(num_trials: int, trial_steps: int) -> int:
    """A guard against a setting that never ends its episode."""
    return num_trials * (trial_steps + 1) + 16


def run_episode(env: Any, agent: EpisodeAgent, spec: EpisodeSpec, *, num_objs: int, num_trials: int,
                trial_steps: int, feedback: str = "train", video_dir: str | Path | None = None) -> EpisodeResult:
    """Roll out one whole episode with a per-env agent (oracles; runs inside a worker process)."""
    obs, info = env.reset(seed=spec.seed, options=spec.reset_options())
    agent.reset_episode(info)
    recorder = VideoRecorder(spec, video_dir, feedback_key(feedback)) if spec.video and video_dir else None
    if recorder:
        recorder.add(obs, info)
    limit = max_episode_steps(num_trials, trial_steps)
    for _ in range(limit):
        action = agent.act(obs, info)
        obs, _, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32))
        if recorder:
            recorder.add(obs, info)
        if terminated or truncated:
            break
    else:
        raise RuntimeError(f"episode {spec.key} did not end within {limit} steps: the setting ignores trial_steps")
    rows = with_compute(episode_rows(spec, info, num_objs, num_trials),
                        agent.episode_compute() if hasattr(agent, "episode_compute") else None)
    return EpisodeResult(spec, rows, recorder.finish() if recorder else None)
