"""The thesis evaluation protocols as lists of episode specs.

Explore: for every object combination of the split, `num_resets` episodes; the listed order is shuffled
and the rewarding object's position is balanced over the first `num_trials - 1` places (an agent that
explores in order can then still find and repeat it). Combi-Explore: for every task pair of the split,
`num_resets` episodes. Every episode gets its own seed derived from (seed, setting, group, episode), so
an episode is the same whatever ran before it: a resumed evaluation redoes nothing and changes nothing.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np

EXPLORE = "explore"
COMBI = "combi_explore"


@dataclass(frozen=True)
class EpisodeSpec:
    """One evaluation episode: which group it belongs to and everything its reset needs."""

    setting: str
    group: str  # combination ("drawer/led/slider") or pair ("move_slider_left+open_drawer")
    episode: int  # index within the group, 0-based
    seed: int
    combination: tuple[str, ...] | None = None
    meta_position: int | None = None
    pair: tuple[str, str] | None = None
    video: bool = False
    extra_options: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> tuple[str, int]:
        """Identity of the episode in trials.csv."""
        return (self.group, self.episode)

    def reset_options(self) -> dict[str, Any]:
        """The `options` passed to the setting's `reset`."""
        opts: dict[str, Any] = dict(self.extra_options)
        if self.combination is not None:
            opts["combination"] = tuple(self.combination)
        if self.meta_position is not None:
            opts["meta_position"] = int(self.meta_position)
        if self.pair is not None:
            opts["pair"] = tuple(self.pair)
        return opts


def episode_seed(seed: int, setting: str, group: str, episode: int) -> int:
    """A 31-bit seed fixed by the episode's identity alone (stable across processes and Python runs)."""
    digest = zlib.crc32(f"{setting}|{group}".encode())
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, digest, int(episode)]).generate_state(1)[0]
               & 0x7FFFFFFF)


def combination_label(combination: Sequence[str]) -> str:
    return "/".join(combination)


def pair_label(pair: Sequence[str]) -> str:
    return "+".join(pair)


def balanced_positions(num_resets: int, num_places: int) -> list[int]:
    """Positions 0..num_places-1 in turn, so each place gets num_resets // num_places or one more."""
    if num_places < 1:
        raise ValueError(f"need at least one place for the rewarding object, got {num_places}")
    return [i % num_places for i in range(num_resets)]


def explore_episodes(combinations: Iterable[Sequence[str]], num_resets: int, num_trials: int, seed: int,
                     setting: str = EXPLORE) -> list[EpisodeSpec]:
    """Episode specs of the Explore protocol, group by group, in a fixed order.

    The rewarding object sits at position 0 .. min(num_trials - 1, len(combination)) - 1, balanced;
    the other objects are shuffled around it with the episode's own generator.
    """
    _check_counts(num_resets, num_trials)
    specs: list[EpisodeSpec] = []
    for combination in combinations:
        combination = tuple(combination)
        if len(combination) < 1:
            raise ValueError("an Explore combination needs at least one object")
        group = combination_label(combination)
        places = max(1, min(num_trials - 1, len(combination)))
        for episode, position in enumerate(balanced_positions(num_resets, places)):
            s = episode_seed(seed, setting, group, episode)
            rng = np.random.default_rng(s)
            order = list(combination)
            rng.shuffle(order)
            # order[0] is the rewarding object (a random one); place it at the balanced position
            meta_object = order.pop(0)
            order.insert(position, meta_object)
            specs.append(EpisodeSpec(setting=setting, group=group, episode=episode, seed=s,
                                     combination=tuple(order), meta_position=position))
    return specs


def combi_episodes(pairs: Iterable[Sequence[str]], num_resets: int, seed: int,
                   setting: str = COMBI) -> list[EpisodeSpec]:
    """Episode specs of the Combi-Explore protocol: `num_resets` episodes per rewarding pair."""
    _check_counts(num_resets, 1)
    specs: list[EpisodeSpec] = []
    for pair in pairs:
        pair = tuple(pair)
        if len(pair) != 2:
            raise ValueError(f"a Combi-Explore pair has two subtasks, got {pair!r}")
        group = pair_label(pair)
        for episode in range(num_resets):
            specs.append(EpisodeSpec(setting=setting, group=group, episode=episode,
                                     seed=episode_seed(seed, setting, group, episode), pair=pair))
    return specs


def mark_videos(specs: Sequence[EpisodeSpec], num_videos: int) -> list[EpisodeSpec]:
    """Ask for a video of the first `num_videos` episodes of the protocol (in its fixed order)."""
    if num_videos < 0:
        raise ValueError(f"eval.videos must be >= 0, got {num_videos}")
    return [replace(s, video=i < num_videos) for i, s in enumerate(specs)]


def _check_counts(num_resets: int, num_trials: int) -> None:
    if num_resets < 1:
        raise ValueError(f"eval.num_resets must be >= 1, got {num_resets}")
    if num_trials < 1:
        raise ValueError(f"env.num_trials must be >= 1, got {num_trials}")
