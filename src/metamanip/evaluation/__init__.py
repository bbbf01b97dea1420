"""Evaluation: the thesis protocols run by parallel env workers, with per-trial results.

`protocol` turns a split into episode specs (Explore: per combination, rewarding position balanced;
Combi-Explore: per pair), `evaluator.evaluate` runs them (a policy batched across `workers`, or an oracle
inside each worker), `trial_log` keeps the resumable trials.csv, `metrics` derives summary.json and
metrics.json from it, `video` writes captioned videos of chosen episodes. `metamanip-eval`
(`cli/eval.py`) composes all of it from `conf/eval.yaml`.
"""
from metamanip.evaluation.evaluator import evaluate
from metamanip.evaluation.metrics import TrialRow, metrics_from_summary, summarize
from metamanip.evaluation.protocol import EpisodeSpec, combi_episodes, explore_episodes

__all__ = ["evaluate", "TrialRow", "summarize", "metrics_from_summary", "EpisodeSpec", "explore_episodes",
           "combi_episodes"]
