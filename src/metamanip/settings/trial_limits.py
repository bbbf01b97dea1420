"""Trial limits: per meta task, how many collected episodes find the reward after 0, 1 or 2 unrewarded trials.

The collector realises "k unrewarded trials before the reward" by placing the rewarding object at
position k of the listed order (Explore), or the rewarding pair at positions that a listed-order
explorer reaches in trial k + 1 (Combi, see `meta_positions`). The thesis filter keeps an episode only
if the reward was found before the last trial, so k must be at most `num_trials - 2`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

SETTINGS_WITH_LIMITS = ("explore", "combi_explore", "single_object")


def combi_unrewarded_trials(positions: tuple[int, int]) -> int:
    """Unrewarded trials before a listed-order Combi explorer finds the pair at `positions` (of 4 objects).

    The explorer tries objects (0, 1) first; if one was rewarding it keeps it and pairs it with the next
    untried object; if none was, the pair is (2, 3).
    """
    i, j = sorted(positions)
    if (i, j) == (0, 1):
        return 0
    if (i, j) == (2, 3) or j == 2:
        return 1
    return 2


def meta_positions(setting: str, unrewarded_trials: int, objects_per_episode: int = 4) -> list:
    """Where to list the rewarding object (Explore: an index) or pair (Combi: a pair of indices)
    so that an explorer going through the list in order needs `unrewarded_trials` failures first."""
    if setting == "combi_explore":
        return [p for p in itertools.combinations(range(4), 2) if combi_unrewarded_trials(p) == unrewarded_trials]
    if setting in ("explore", "single_object"):
        return [unrewarded_trials] if 0 <= unrewarded_trials < objects_per_episode else []
    raise ValueError(f"setting must be one of {SETTINGS_WITH_LIMITS}, got {setting!r}")


@dataclass(frozen=True)
class TrialLimits:
    """Episodes per meta task that find the reward after zero / one / two unrewarded trials."""

    zero: int
    one: int
    two: int

    def __post_init__(self) -> None:
        for name in ("zero", "one", "two"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"trial_limits.{name} must be a non-negative integer, got {v!r}")
        if self.total == 0:
            raise ValueError("trial_limits are all zero: no episode could be collected; "
                             "use a preset (trial_limits=thesis_3_5, thesis_7 or combi) or set zero/one/two > 0")

    @property
    def total(self) -> int:
        """Episodes per meta task."""
        return self.zero + self.one + self.two

    def by_unrewarded_trials(self) -> dict[int, int]:
        return {0: self.zero, 1: self.one, 2: self.two}

    def position_probs(self, setting: str = "explore", objects_per_episode: int = 3) -> list[float] | dict:
        """Where collection under these limits lists the rewarding object (Explore: one probability per
        position) or pair (Combi: {pair of positions: probability}, spread evenly over `meta_positions`),
        in the form `optimal_explorer` takes."""
        out: dict = {}
        for k, n in self.by_unrewarded_trials().items():
            if n == 0:
                continue
            places = meta_positions(setting, k, objects_per_episode)
            if not places:
                raise ValueError(f"trial_limits: {n} episodes after {k} unrewarded trials cannot be placed with "
                                 f"{objects_per_episode} objects per episode")
            for p in places:
                out[p] = out.get(p, 0.0) + n / self.total / len(places)
        if setting == "combi_explore":
            return out
        return [out.get(k, 0.0) for k in range(objects_per_episode)]

    def check_feasible(self, setting: str, num_trials: int, objects_per_episode: int) -> None:
        """Raise if a non-zero limit asks for more unrewarded trials than the setting can hold."""
        names = {0: "zero", 1: "one", 2: "two"}
        for k, limit in self.by_unrewarded_trials().items():
            if limit == 0:
                continue
            if k > num_trials - 2:
                raise ValueError(
                    f"trial_limits.{names[k]}={limit} cannot be met with num_trials={num_trials}: the reward must be "
                    f"found before the last trial, so at most {max(num_trials - 2, 0)} unrewarded trials are possible; "
                    f"set trial_limits.{names[k]}=0 or raise env.num_trials to at least {k + 2}")
            if not meta_positions(setting, k, objects_per_episode):
                raise ValueError(
                    f"trial_limits.{names[k]}={limit} cannot be met in {setting} with {objects_per_episode} objects per "
                    f"episode: the reward can follow at most {objects_per_episode - 1} unrewarded trials; "
                    f"set trial_limits.{names[k]}=0")
