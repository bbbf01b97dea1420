"""The Meta-CALVIN thesis' published figures, shown as reference rows next to a matching setting.

The thesis published no tables; its result CSVs are the only numbers (reference/meta_calvin.md §3.4).
Each entry below is one group of comparable rows from those CSVs, kept as the per-run values so that
the same mean ± 95 % CI as our own rows can be computed. A metric the thesis did not record (success
per trial index, and for some rows `ratio_reward_found`) is absent, never invented.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from metamanip.results.loader import normalise_setting


@dataclass(frozen=True)
class ReferenceResult:
    """Published per-run values for one setting; `match` says which of our groups it compares with."""

    label: str
    match: Mapping[str, Any]
    runs: Mapping[str, tuple[float, ...]]
    episodes_per_run: int | None = None
    note: str = ""
    source: str = "Meta-CALVIN thesis"

    @property
    def n(self) -> int:
        return max((len(v) for v in self.runs.values()), default=0)


THESIS_RESULTS: tuple[ReferenceResult, ...] = (
    ReferenceResult(
        label="thesis: Explore 5 objs, held-out, train_feedback (ckpt 9000)",
        match={"setting": "explore", "num_objs": 5, "num_trials": 4, "split": "heldout",
               "feedback": "train_feedback"},
        runs={"average_reward": (2.78, 1.89, 1.33)},
        episodes_per_run=9,
        note="eval/results/results.csv; 3 rows of about 9 episodes, maximum 4",
    ),
    ReferenceResult(
        label="thesis: Combi-Explore, held-out pairs, train_feedback (pretrained_combi_non_seq)",
        match={"setting": "combi_explore", "num_trials": 4, "split": "heldout", "feedback": "train_feedback"},
        runs={"average_reward": (0.60, 0.70, 0.35), "ratio_reward_found": (0.45, 0.45, 0.20)},
        episodes_per_run=20,
        note="4 trials x 500 steps; 3 rows of 20 episodes",
    ),
    ReferenceResult(
        label="thesis: Combi-Explore, held-out pairs, alt_feedback (ckpt 14000)",
        match={"setting": "combi_explore", "num_trials": 4, "split": "heldout", "feedback": "alt_feedback"},
        runs={"average_reward": (0.65, 0.53), "ratio_reward_found": (0.31, 0.25)},
        episodes_per_run=100,
        note="4 trials x 500 steps; 2 rows of 100 episodes; mean episode length about 1270-1340 of 2000",
    ),
)

_SPLIT_ALIASES = {"heldout": "heldout", "held_out": "heldout", "held-out": "heldout", "eval": "heldout",
                  "test": "heldout", "train": "train"}


def _normalise(key: str, value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if key == "setting":
        return normalise_setting(value)
    if key == "split" and isinstance(value, str):
        return _SPLIT_ALIASES.get(value.lower(), value.lower())
    if key == "feedback" and isinstance(value, str):  # eval.feedback says train | alt
        return value if value.endswith("_feedback") else f"{value}_feedback"
    if key in ("num_objs", "num_trials"):
        try:
            return int(value)
        except (TypeError, ValueError):
            return value
    return value


def matches(reference: ReferenceResult, known: Mapping[str, Any]) -> bool:
    """True when nothing we know about a group contradicts `reference.match`.

    `setting` must be known and equal; other keys only have to agree where the group knows them (a
    sweep whose config does not record the split is still compared, with the label saying which split
    the thesis used).
    """
    if _normalise("setting", known.get("setting")) != reference.match["setting"]:
        return False
    for key, want in reference.match.items():
        have = _normalise(key, known.get(key))
        if have is not None and have != _normalise(key, want):
            return False
    return True


def matching_references(known: Mapping[str, Any],
                        references: tuple[ReferenceResult, ...] = THESIS_RESULTS) -> list[ReferenceResult]:
    """The published results that compare with a group described by `known` (column -> value)."""
    return [r for r in references if matches(r, known)]


__all__ = ["ReferenceResult", "THESIS_RESULTS", "matches", "matching_references"]
