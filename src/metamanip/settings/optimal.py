"""The optimal explorer: the best expected score any agent can reach, the yardstick for oracles and policies.

The agent knows the distribution of where the rewarding object (Explore) or pair (Combi) sits in the
listed order, and nothing else. Each trial it completes tasks on one object (Explore) or on two
(Combi), and the trial-end feedback tells it which of them were rewarding. A small dynamic programme
over the hypotheses still consistent with the feedback maximises the expected number of rewarded
trials; under a uniform distribution this is "explore in listed order, then repeat", the strategy the
thesis' LLM was told to follow.
"""
from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Mapping, Sequence

from metamanip.settings.splits import explore_pool
from metamanip.settings.trial_limits import combi_unrewarded_trials

STRATEGIES = ("optimal", "listed", "random")
OBJECTS_PER_EPISODE = {"combi_explore": 4, "single_object": 1}
_EPS = 1e-12


def balanced_positions(objects_per_episode: int, num_trials: int) -> list[float]:
    """The thesis' evaluation distribution: the rewarding object's index balanced over 0 .. num_trials - 2."""
    last = min(objects_per_episode, max(num_trials - 1, 1))
    return [1.0 / last if k < last else 0.0 for k in range(objects_per_episode)]


def _hypotheses(setting: str, n: int, position_probs) -> list[tuple[frozenset[int], float]]:
    if setting == "combi_explore":
        pairs = list(itertools.combinations(range(n), 2))
        if position_probs is None:
            probs = {p: 1.0 / len(pairs) for p in pairs}
        elif isinstance(position_probs, Mapping):
            probs = {tuple(sorted(k)): float(v) for k, v in position_probs.items()}
            bad = [k for k in probs if k not in pairs]
            if bad:
                raise ValueError(f"Combi position_probs keys must be pairs of positions among {pairs}; got {bad}")
        else:
            vals = list(position_probs)
            if len(vals) != len(pairs):
                raise ValueError(f"Combi position_probs needs {len(pairs)} values, one per pair {pairs}; got {len(vals)}")
            probs = dict(zip(pairs, map(float, vals)))
        hyps = [(frozenset(p), probs.get(p, 0.0)) for p in pairs]
    else:
        vals = [1.0 / n] * n if position_probs is None else [float(v) for v in position_probs]
        if len(vals) != n:
            raise ValueError(f"position_probs needs {n} values (one per listed object) for {setting}; got {len(vals)}")
        hyps = [(frozenset({k}), v) for k, v in enumerate(vals)]
    if any(p < 0 for _, p in hyps) or abs(sum(p for _, p in hyps) - 1.0) > 1e-6:
        raise ValueError(f"position_probs must be non-negative and sum to 1; got {[p for _, p in hyps]}")
    return [(h, p) for h, p in hyps if p > 0]


def optimal_explorer(setting: str, num_objs: int | None, num_trials: int,
                     position_probs: Sequence[float] | Mapping[tuple[int, int], float] | None = None,
                     strategy: str = "optimal") -> dict:
    """Expected `average_reward`, `ratio_reward_found` and `success_by_trial` of the optimal explorer.

    `setting`: "explore" (`num_objs` 3, 5 or 7 selects the objects per episode), "combi_explore"
    (4 objects, `num_objs` ignored) or "single_object". `position_probs`: for Explore one probability
    per listed position; for Combi one per position pair (in `itertools.combinations(range(4), 2)` order,
    or a mapping pair -> probability); None means uniform. `success_by_trial[t]` is the probability that
    trial t + 1 is rewarded. `strategy="listed"` scores the thesis' rule (explore in listed order, then
    repeat) instead of the Bayes-optimal order; the two agree for uniform and decreasing distributions.
    `strategy="random"` scores an agent that ignores the feedback and picks one listed object (Combi: one
    pair) uniformly at random in every trial: the floor a policy that reads the feedback must beat.
    """
    if setting == "explore":
        if num_objs is None:
            raise ValueError("optimal_explorer('explore', ...) needs num_objs, one of [3, 5, 7]")
        n = explore_pool(num_objs).objects_per_episode
    elif setting in OBJECTS_PER_EPISODE:
        n = OBJECTS_PER_EPISODE[setting]
    else:
        raise ValueError(f"setting must be 'explore', 'combi_explore' or 'single_object', got {setting!r}")
    if not isinstance(num_trials, int) or num_trials < 1:
        raise ValueError(f"num_trials must be a positive integer, got {num_trials!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    hyps = _hypotheses(setting, n, position_probs)
    if strategy == "listed":
        return _listed(setting, hyps, num_trials)
    size = 2 if setting == "combi_explore" else 1
    actions = tuple(frozenset(a) for a in itertools.combinations(range(n), size))
    if strategy == "random":
        return _random(hyps, num_trials, actions)
    value, curve, found = _solve(tuple(hyps), num_trials, actions, size)
    return {"average_reward": value, "ratio_reward_found": found, "success_by_trial": list(curve)}


def _random(hyps: list[tuple[frozenset[int], float]], num_trials: int, actions: tuple[frozenset[int], ...]) -> dict:
    # each trial, an action drawn uniformly is rewarded when it covers the hidden hypothesis
    hit = sum(p * sum(h <= a for a in actions) / len(actions) for h, p in hyps)
    curve = [hit] * num_trials
    return {"average_reward": hit * num_trials, "ratio_reward_found": 1.0 - (1.0 - hit) ** num_trials,
            "success_by_trial": curve}


def _listed(setting: str, hyps: list[tuple[frozenset[int], float]], num_trials: int) -> dict:
    curve = [0.0] * num_trials
    value = 0.0
    for h, p in hyps:
        k = combi_unrewarded_trials(tuple(sorted(h))) if setting == "combi_explore" else min(h)
        for t in range(k, num_trials):
            curve[t] += p
        value += p * max(num_trials - k, 0)
    return {"average_reward": value, "ratio_reward_found": curve[-1], "success_by_trial": curve}


@lru_cache(maxsize=None)
def _solve(hyps: tuple[tuple[frozenset[int], float], ...], trials_left: int, actions: tuple[frozenset[int], ...],
           size: int) -> tuple[float, tuple[float, ...], float]:
    """(expected rewarded trials, P(reward) per remaining trial, P(reward ever)) for normalised `hyps`."""
    if trials_left == 0 or not hyps:
        return 0.0, (0.0,) * trials_left, 0.0
    total = sum(p for _, p in hyps)
    best: tuple[float, tuple[float, ...], float] | None = None
    for a in actions:
        groups: dict[frozenset[int], list[tuple[frozenset[int], float]]] = {}
        for h, p in hyps:
            groups.setdefault(a & h, []).append((h, p / total))
        value, found = 0.0, 0.0
        curve = [0.0] * trials_left
        for seen, group in groups.items():
            gp = sum(p for _, p in group)
            rewarded = len(seen) == size
            sub_value, sub_curve, sub_found = _solve(tuple(group), trials_left - 1, actions, size)
            value += gp * (float(rewarded) + sub_value)
            found += gp * (1.0 if rewarded else sub_found)
            curve[0] += gp * float(rewarded)
            for t, s in enumerate(sub_curve):
                curve[t + 1] += gp * s
        if best is None or value > best[0] + _EPS:
            best = (value, tuple(curve), found)
    assert best is not None
    return best
