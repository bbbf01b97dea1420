"""Collecting an expert dataset: the plan of episodes, the thesis filter, and the resumable shard loop.

The plan is a list of *slots*, one per episode to save: (meta task, bucket), where the bucket is the
number of unrewarded trials before the reward (the trial limits' 0/1/2). Slots are balanced per meta task
and, within a task, over buckets in proportion to the trial limits, and interleaved so that any prefix of
the plan is balanced too. Slot `i` belongs to shard `i % num_shards` and its episode id is its index, so
parallel shards never collide, a merge has no duplicates, and a resumed shard skips the slots it saved.

For each slot the collector runs attempts (deterministic seeds from the slot and attempt number) until
an episode passes the thesis filter with the slot's bucket, or `max_attempts` is reached (the slot is
then left empty and reported). With `strict_buckets=False` an episode that passes the filter is kept
even when the oracle found the reward earlier or later than planned (an LLM does not always explore in
listed order); the card then counts it in the bucket it actually has. Each saved episode is written atomically, so a crash (kill -9 included)
loses at most the episode in flight.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from metamanip.atomic import write_json
from metamanip.data.shards import EpisodeBuffer, ShardWriter, WriteOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    """One episode to save: its global index (= episode id), meta task and bucket."""

    index: int
    meta_task: Any  # task name (Explore) or pair of task names (Combi)
    bucket: int

    @property
    def episode_id(self) -> str:
        return f"{self.index:07d}"


def _apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` in proportion to `weights` (largest remainder), never above a weight."""
    wsum = sum(weights)
    if total >= wsum:
        return list(weights)
    exact = [total * w / wsum for w in weights]
    out = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (exact[i] - out[i], weights[i]), reverse=True)
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def plan_slots(meta_tasks: Sequence[Any], limits: Mapping[int, int], episodes: int,
               max_bucket: int | None = None) -> list[Slot]:
    """The balanced, interleaved plan of `min(episodes, capacity)` slots.

    `limits` maps bucket -> episodes per meta task (the trial limits); buckets above `max_bucket`
    (more unrewarded trials than the episode allows before its last trial) are dropped.
    """
    if episodes < 1:
        raise ValueError(f"collect.episodes must be at least 1, got {episodes}")
    if not meta_tasks:
        raise ValueError("no meta tasks to collect")
    buckets = sorted(b for b, n in limits.items() if n > 0 and (max_bucket is None or b <= max_bucket))
    if not buckets:
        raise ValueError(f"no trial-limit bucket fits: limits {dict(limits)} with at most {max_bucket} unrewarded "
                         f"trials before the reward; raise env.num_trials or change trial_limits")
    per_task_cap = sum(limits[b] for b in buckets)
    capacity = per_task_cap * len(meta_tasks)
    total = min(episodes, capacity)
    if total < episodes:
        log.warning("collect.episodes=%d exceeds what the trial limits allow (%d meta tasks × %d); collecting %d",
                    episodes, len(meta_tasks), per_task_cap, total)
    per_task = [total // len(meta_tasks) + (i < total % len(meta_tasks)) for i in range(len(meta_tasks))]
    keyed: list[tuple[float, int, int, int]] = []
    for ti, count in enumerate(per_task):
        counts = _apportion(count, [limits[b] for b in buckets])
        seq: list[tuple[float, int]] = []
        for b, n in zip(buckets, counts):
            seq += [((k + 0.5) / n, b) for k in range(n)]
        seq.sort()
        for rank, (_, b) in enumerate(seq):
            keyed.append(((rank + 0.5) / max(count, 1), ti, rank, b))
    keyed.sort()
    return [Slot(i, meta_tasks[ti], b) for i, (_, ti, _, b) in enumerate(keyed)]


def shard_slots(slots: Sequence[Slot], shard: int, num_shards: int) -> list[Slot]:
    if not 0 <= shard < num_shards:
        raise ValueError(f"collect.shard={shard} must be in [0, collect.num_shards={num_shards})")
    return [s for s in slots if s.index % num_shards == shard]


def thesis_filter(trial_rewards: Sequence[float], trial_completed: Sequence[Sequence[str]],
                  num_trials: int) -> tuple[bool, str, int | None]:
    """(passed, reason, bucket): the reward was found before the last trial and kept in every later
    trial, and some task was completed in every trial. `bucket` = unrewarded trials before the reward."""
    if len(trial_rewards) < num_trials:
        return False, "episode_incomplete", None
    hits = [i for i, r in enumerate(trial_rewards) if r > 0]
    if not hits:
        return False, "no_reward", None
    first = hits[0]
    if first >= num_trials - 1:
        return False, "reward_only_in_last_trial", first
    if any(r <= 0 for r in trial_rewards[first:]):
        return False, "reward_lost", first
    if any(len(c) == 0 for c in trial_completed):
        return False, "trial_without_task", first
    return True, "ok", first


def meta_tasks_of(env: Any) -> list[Any]:
    """The meta tasks a setting's training split can ask for."""
    if getattr(env, "setting", "") == "combi_explore":
        return [tuple(p) for p in env.pairs("train")]
    return list(env.pool.tracked_tasks)


def reset_options(env: Any, slot: Slot, rng: np.random.Generator) -> dict[str, Any]:
    """Reset options that place the slot's meta task where a listed-order explorer needs `bucket` failures."""
    from metamanip.settings.trial_limits import meta_positions

    if getattr(env, "setting", "") == "combi_explore":
        positions = meta_positions("combi_explore", slot.bucket)
        pos = positions[int(rng.integers(len(positions)))]
        return {"pair": tuple(slot.meta_task), "meta_position": tuple(pos)}
    return {"meta_task": slot.meta_task, "meta_position": slot.bucket}


def rollout(env: Any, agent: Any, seed: int, options: Mapping[str, Any], record_state: bool = True,
            max_steps: int | None = None) -> tuple[EpisodeBuffer, dict]:
    """Run one meta-episode with `agent`, recording every step; returns the buffer and the last info."""
    obs, info = env.reset(seed=seed, options=dict(options))
    agent.reset_episode(info)
    buf = EpisodeBuffer()
    sim = getattr(env, "sim", None)
    limit = max_steps or (getattr(env, "num_trials", 1) * getattr(env, "trial_steps", 10 ** 6) + 1)
    for _ in range(limit):
        action = agent.act(obs, info)
        decision = getattr(agent, "decision", None)
        fb = info["feedback"]
        lm = fb.get("lm_feedback", "")
        texts = {"train_feedback": fb.get("train_feedback", ""), "alt_feedback": fb.get("alt_feedback", ""),
                 "lm_feedback": lm.get("content", "") if isinstance(lm, Mapping) else str(lm),
                 "oracle_text": decision.text if decision is not None and getattr(agent, "new_decision", False) else "",
                 "instruction": decision.instruction if decision is not None else ""}
        state = sim.get_state() if (record_state and sim is not None) else None
        trial = int(info["trial"])
        obs_next, reward, terminated, truncated, info = env.step(action)
        buf.add_step(obs=obs, action=info.get("action_rel", action), action_abs=info.get("action_abs", np.zeros(7)),
                     trial=trial, reward=reward, texts=texts, state=state)
        obs = obs_next
        if terminated or truncated:
            break
    else:
        raise RuntimeError(f"episode did not terminate within {limit} steps; the setting's step limit is broken")
    return buf, info


def attempt_seed(base_seed: int, slot: Slot, attempt: int) -> int:
    """A deterministic, well-spread seed per (dataset seed, slot, attempt)."""
    return int(np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, slot.index, attempt]).generate_state(1)[0])


class ShardCollector:
    """Collects the slots of one shard into `root` (see the module docstring)."""

    def __init__(self, env: Any, agent: Any, root: str | os.PathLike, slots: Sequence[Slot], shard: int,
                 seed: int = 0, max_attempts: int = 10, record_state: bool = True,
                 write_options: WriteOptions | None = None, progress: bool = True,
                 strict_buckets: bool = True, on_episode: Callable[[Slot, dict], None] | None = None):
        self.env = env
        self.agent = agent
        self.root = Path(root)
        self.slots = list(slots)
        self.shard = int(shard)
        self.seed = int(seed)
        self.max_attempts = int(max_attempts)
        self.record_state = bool(record_state)
        self.writer = ShardWriter(self.root, self.shard, write_options)
        self.progress = progress
        self.strict_buckets = bool(strict_buckets)
        self.on_episode = on_episode
        self.progress_path = self.root / f"shard-{self.shard:05d}.progress.json"

    def load_progress(self) -> dict[str, Any]:
        """This shard's figures so far (attempts, passes, failure reasons), from its progress file."""
        import json

        if self.progress_path.exists():
            return json.loads(self.progress_path.read_text())
        return {"shard": self.shard, "attempts": 0, "passed": 0, "failures": {}, "slot_attempts": {},
                "given_up": [], "seconds": 0.0, "steps": 0}

    def run(self) -> dict[str, Any]:
        """Collect every slot not yet saved; returns this shard's progress figures."""
        done = {ref.episode_id for ref in self.writer.existing_episodes()}
        prog = self.load_progress()
        prog["passed"] = len(done & {s.episode_id for s in self.slots})
        todo = [s for s in self.slots if s.episode_id not in done and s.episode_id not in prog["given_up"]]
        if len(todo) < len(self.slots):
            log.info("shard %d: %d of %d episodes already saved, %d to go", self.shard,
                     len(self.slots) - len(todo), len(self.slots), len(todo))
        bar = tqdm(total=len(self.slots), initial=len(self.slots) - len(todo), desc=f"collect shard {self.shard}",
                   unit="ep", disable=not self.progress, dynamic_ncols=True)
        num_trials = int(getattr(self.env, "num_trials", 1))
        try:
            for slot in todo:
                first = int(prog["slot_attempts"].get(slot.episode_id, 0))
                for attempt in range(first, self.max_attempts):
                    t0 = time.perf_counter()
                    seed = attempt_seed(self.seed, slot, attempt)
                    rng = np.random.default_rng(seed)
                    buf, info = rollout(self.env, self.agent, seed, reset_options(self.env, slot, rng),
                                        record_state=self.record_state)
                    results = info.get("trial_results", [])
                    ok, reason, bucket = thesis_filter([r["reward"] for r in results],
                                                       [r["completed_tasks"] for r in results], num_trials)
                    if ok and bucket != slot.bucket and self.strict_buckets:
                        ok, reason = False, "bucket_mismatch"  # the oracle found the reward earlier or later
                    prog["attempts"] += 1
                    prog["steps"] += len(buf)
                    prog["slot_attempts"][slot.episode_id] = attempt + 1
                    if ok:
                        meta = {"meta_task": slot.meta_task, "bucket": bucket, "slot": slot.index,
                                "attempt": attempt, "seed": seed, "objects": info.get("episode_objects"),
                                "meta_position": info.get("meta_position"),
                                "trial_rewards": [r["reward"] for r in results],
                                "trial_tasks": [r["completed_tasks"] for r in results],
                                "decisions": [d.source for d in getattr(self.agent, "decisions", [])]}
                        self.writer.write_episode(slot.episode_id, buf, meta)
                        prog["passed"] += 1
                    else:
                        prog["failures"][reason] = prog["failures"].get(reason, 0) + 1
                        log.debug("slot %s attempt %d discarded: %s", slot.episode_id, attempt, reason)
                    prog["seconds"] += time.perf_counter() - t0
                    write_json(self.progress_path, prog)
                    bar.set_postfix(oracle_success=f"{prog['passed'] / max(prog['attempts'], 1):.0%}",
                                    attempts=prog["attempts"])
                    if ok:
                        if self.on_episode is not None:
                            self.on_episode(slot, meta)
                        break
                else:
                    log.warning("shard %d: gave up on episode %s (meta task %s, bucket %d) after %d attempts; "
                                "check the oracle's primitives for this task or raise collect.max_attempts",
                                self.shard, slot.episode_id, slot.meta_task, slot.bucket, self.max_attempts)
                    prog["given_up"].append(slot.episode_id)
                    write_json(self.progress_path, prog)
                bar.update(1)
        finally:
            bar.close()
        return prog
