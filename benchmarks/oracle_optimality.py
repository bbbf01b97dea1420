"""The scripted oracle through the evaluation protocol reaches the optimal explorer's expected score.

For Explore 3, 5, 7 and Combi-Explore (held-out split, no cameras), run `metamanip-eval
eval.agent=oracle oracle=scripted` and compare its `average_reward` with `optimal_explorer`'s expectation
under the protocol's distribution of rewarding positions: Explore's balanced positions (read back from
trials.csv), Combi's uniform pair positions (the setting shuffles the objects). The listed-order rule's
score on exactly the positions drawn is printed too (what a flawless executor of that rule gets).
Goal: within 5 % everywhere. Last line: JSON with measured, expected and ratio per setting.

    python benchmarks/oracle_optimality.py [--resets-scale 1.0] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path

from metamanip.cli import eval as eval_cli
from metamanip.cli.pipeline import compose
from metamanip.evaluation.trial_log import read_trials
from metamanip.settings.optimal import optimal_explorer

# (name, overrides, num_resets): enough episodes for every combination/pair and balanced positions
CASES = [
    ("explore_3", ["env=explore", "env.num_objs=3"], 24),
    ("explore_5", ["env=explore", "env.num_objs=5"], 9),
    ("explore_7", ["env=explore", "env.num_objs=7"], 4),
    ("combi", ["env=combi_explore"], 16),
]
NO_CAMERAS = ["env.sim.cameras.static=null", "env.sim.cameras.gripper=null"]


def position_probs(rows, setting: str, n_objects: int):
    """The protocol's empirical distribution of rewarding positions (one count per episode)."""
    first = [r for r in rows if r.trial == 1]
    if setting == "combi_explore":
        import itertools

        pairs = list(itertools.combinations(range(n_objects), 2))
        c = Counter(tuple(int(x) for x in r.meta_position.split(";")) for r in first)
        return [c[p] / len(first) for p in pairs]
    c = Counter(int(r.meta_position) for r in first)
    return [c[k] / len(first) for k in range(n_objects)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resets-scale", type=float, default=1.0, help="multiply every case's num_resets")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="case names to run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides, resets in CASES:
            if args.only and name not in args.only:
                continue
            resets = max(1, round(resets * args.resets_scale))
            job_dir = Path(tmp) / name
            cfg = compose("eval", [*overrides, *NO_CAMERAS, "eval.agent=oracle", "oracle=scripted",
                                   "eval.split=heldout", f"eval.num_resets={resets}",
                                   f"eval.num_workers={args.workers}", "eval.progress=false"], job_dir)
            t0 = time.time()
            metrics = eval_cli.run(cfg)
            minutes = (time.time() - t0) / 60
            rows = read_trials(job_dir / "trials.csv")
            setting = eval_cli.setting_of(cfg.env)
            num_trials, _ = eval_cli.trial_budget_of(cfg.env)
            n_obj = 4 if setting == "combi_explore" else len({o for o in rows[0].group.split("/")})
            num_objs = None if setting == "combi_explore" else int(cfg.env.num_objs)
            if setting == "combi_explore":  # the setting shuffles the objects: pair positions are uniform
                expected = optimal_explorer(setting, None, num_trials)
            else:  # the protocol balances the rewarding position over the first num_trials - 1 places
                expected = optimal_explorer(setting, num_objs, num_trials, position_probs(rows, setting, n_obj))
            # the same rule on exactly the positions this run drew (no sampling noise)
            drawn = optimal_explorer(setting, num_objs, num_trials, position_probs(rows, setting, n_obj),
                                     strategy="listed")
            ratio = metrics["average_reward"] / expected["average_reward"]
            out[name] = {"episodes": int(metrics["episodes"]), "average_reward": round(metrics["average_reward"], 4),
                         "expected": round(expected["average_reward"], 4), "ratio": round(ratio, 4),
                         "listed_rule_on_drawn_positions": round(drawn["average_reward"], 4),
                         "ratio_reward_found": round(metrics["ratio_reward_found"], 4),
                         "within_5pct": abs(ratio - 1) <= 0.05, "minutes": round(minutes, 2)}
    print(f"{'case':<10} {'episodes':>8} {'avg_reward':>10} {'expected':>9} {'ratio':>7} {'found':>6} {'min':>6}")
    for name, r in out.items():
        print(f"{name:<10} {r['episodes']:>8} {r['average_reward']:>10.3f} {r['expected']:>9.3f} {r['ratio']:>7.3f} "
              f"{r['ratio_reward_found']:>6.2f} {r['minutes']:>6.2f}")
    out["all_within_5pct"] = all(r["within_5pct"] for r in out.values() if isinstance(r, dict))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
