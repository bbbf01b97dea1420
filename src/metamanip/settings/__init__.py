"""The meta-learning settings: Explore, Combi-Explore and the single-object sanity setting.

Each is a gymnasium env over the playtable simulator whose episode is a meta-episode of trials
(`explore.ExploreEnv`, `combi.CombiExploreEnv`, `single_object.SingleObjectEnv`). Pools and splits
live in `splits`, feedback text in `feedback` (original format), `paraphrases` (alt_feedback) and
`chat` (LLM oracle); `optimal.optimal_explorer` gives the yardstick score; `trial_limits` the
collection presets. Differences from the original code: settings/README.md.
"""
from metamanip.settings.optimal import optimal_explorer
from metamanip.settings.splits import combi_pairs, explore_pool
from metamanip.settings.trial_limits import TrialLimits

__all__ = ["optimal_explorer", "explore_pool", "combi_pairs", "TrialLimits"]
