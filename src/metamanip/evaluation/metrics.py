"""Evaluation figures computed from per-trial rows (one row per episode x trial).

Everything in summary.json and metrics.json is derived here from the rows of trials.csv, so the two
files can never disagree. Definitions follow the thesis: `total_reward` is the number of rewarded trials,
`average_reward` the mean rewarded trials per episode, `ratio_reward_found` the fraction of episodes with
at least one rewarded trial, `episode_length` the mean env steps per episode; `success_by_trial[k]` is
the fraction of episodes whose trial k+1 was rewarded (the curve the thesis could not plot). A multi-exit
policy's compute per action (mean exit layer, LM layers run, LM FLOPs from shapes) is summed per trial in
trials.csv and reported per action in both files.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable, Mapping, Sequence


COMPUTE_FIELDS = ("lm_actions", "lm_exit_layers", "lm_layers", "lm_flops")


@dataclass(frozen=True)
class TrialRow:
    """One line of trials.csv."""

    setting: str
    num_objs: int
    group: str
    episode: int
    trial: int  # 1-based
    meta_position: str  # index of the rewarding object in the listed order (Combi: "i;j" of the pair)
    meta_task: str
    reward: float
    steps: int
    completed_tasks: str  # ";"-joined task names completed in this trial
    # LM compute of the trial's actions (multi-exit policies; 0 for other agents): sums over its actions
    lm_actions: int = 0  # actions counted
    lm_exit_layers: float = 0.0  # the LM layer each action was read from (1-based), summed
    lm_layers: float = 0.0  # LM layers run, summed
    lm_flops: float = 0.0  # LM FLOPs from the model's shapes, summed

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_strings(cls, rec: Mapping[str, str]) -> "TrialRow":
        """Parse a csv.DictReader record; raises ValueError naming the bad column."""
        try:
            return cls(setting=rec["setting"], num_objs=int(rec["num_objs"]), group=rec["group"],
                       episode=int(rec["episode"]), trial=int(rec["trial"]),
                       meta_position=rec["meta_position"], meta_task=rec["meta_task"],
                       reward=float(rec["reward"]), steps=int(rec["steps"]),
                       completed_tasks=rec["completed_tasks"] or "",
                       **{k: (int if k == "lm_actions" else float)(rec.get(k) or 0) for k in COMPUTE_FIELDS})
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed trials.csv row {dict(rec)!r}: {e}") from e

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def group_stats(rows: Sequence[TrialRow], num_trials: int) -> dict[str, Any]:
    """The thesis figures plus success by trial for the episodes in `rows`."""
    by_episode: dict[tuple[str, int], list[TrialRow]] = defaultdict(list)
    for r in rows:
        by_episode[(r.group, r.episode)].append(r)
    n = len(by_episode)
    if n == 0:
        return {"episodes": 0, "total_reward": 0.0, "average_reward": 0.0, "ratio_reward_found": 0.0,
                "episode_length": 0.0, "success_by_trial": [0.0] * num_trials}
    total = sum(r.reward for r in rows)
    found = sum(1 for trials in by_episode.values() if any(t.reward > 0 for t in trials))
    length = sum(r.steps for r in rows) / n
    hits = [0] * num_trials
    for trials in by_episode.values():
        for t in trials:
            if t.reward > 0 and 1 <= t.trial <= num_trials:
                hits[t.trial - 1] += 1
    return {"episodes": n, "total_reward": float(total), "average_reward": float(total) / n,
            "ratio_reward_found": found / n, "episode_length": length,
            "success_by_trial": [h / n for h in hits], **compute_stats(rows)}


def compute_stats(rows: Sequence[TrialRow]) -> dict[str, float]:
    """Per-action LM compute over `rows` (empty when no action was counted: not a multi-exit policy):
    `mean_exit_layer` (the layer actions were read from), `lm_layers_per_action` (layers run),
    `lm_flops_per_action` (counted from the model's shapes)."""
    actions = sum(r.lm_actions for r in rows)
    if actions == 0:
        return {}
    return {"mean_exit_layer": sum(r.lm_exit_layers for r in rows) / actions,
            "lm_layers_per_action": sum(r.lm_layers for r in rows) / actions,
            "lm_flops_per_action": sum(r.lm_flops for r in rows) / actions,
            "lm_actions": float(actions)}


def with_compute(rows: Sequence[TrialRow], compute: Sequence[Mapping[str, float]] | None) -> list[TrialRow]:
    """The rows of one episode with each trial's compute (a dict of COMPUTE_FIELDS per trial) filled in."""
    from dataclasses import replace

    if not compute:
        return list(rows)
    out = []
    for k, row in enumerate(rows):
        c = compute[k] if k < len(compute) else {}
        out.append(replace(row, **{f: (int if f == "lm_actions" else float)(c.get(f, 0)) for f in COMPUTE_FIELDS}))
    return out


def summarize(rows: Iterable[TrialRow], num_trials: int, groups: Sequence[str] | None = None,
              config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """summary.json: figures overall and per group (combination or pair), with the run's choices.

    `groups` fixes the order (and lists groups that have no episode yet).
    """
    rows = list(rows)
    per_group: dict[str, list[TrialRow]] = defaultdict(list)
    for r in rows:
        per_group[r.group].append(r)
    order = list(groups) if groups is not None else sorted(per_group)
    order += [g for g in sorted(per_group) if g not in order]
    overall = group_stats(rows, num_trials)
    return {
        **{k: overall[k] for k in ("total_reward", "average_reward", "ratio_reward_found", "episode_length")},
        **compute_stats(rows),
        "episodes": overall["episodes"],
        "num_trials": num_trials,
        "success_by_trial": overall["success_by_trial"],
        "groups": {g: group_stats(per_group.get(g, []), num_trials) for g in order},
        "config": dict(config or {}),
    }


def metrics_from_summary(summary: Mapping[str, Any]) -> dict[str, float]:
    """metrics.json: the flat overall figures, with `success_trial_1` ... `success_trial_N` (1-based)."""
    out = {k: float(summary[k]) for k in ("total_reward", "average_reward", "ratio_reward_found",
                                          "episode_length")}
    out["episodes"] = float(summary["episodes"])
    for k in ("mean_exit_layer", "lm_layers_per_action", "lm_flops_per_action"):
        if k in summary:
            out[k] = float(summary[k])
    for k, v in enumerate(summary["success_by_trial"], start=1):
        out[f"success_trial_{k}"] = float(v)
    return out
