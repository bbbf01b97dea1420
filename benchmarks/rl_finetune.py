"""RL fine-tuning closes the gap between a BC policy and the oracle (PPO, FLaRe's recipe, 2-core CPU).

1. The BC policy that falls short: `metamanip-pipeline experiment=demo` (Explore-3, 3 trials, 120 scripted
   episodes, 2000 BC steps), evaluated with the oracle as baseline through the same protocol
   (`eval.split=train`, `--resets` episodes).
2. `metamanip-rl experiment=rl_demo ckpt=<that BC checkpoint>` for at most `--minutes` of PPO
   (`rl.time_limit_min`), then the fine-tuned checkpoint through the same protocol and seed.

Goal: rl ≥ bc + 0.5 × (oracle − bc) in average reward per episode, and a rollout overhead (our rollout loop's
time per env step over plain lockstep env stepping on the same workers and envs) ≤ 1.2. Last line: JSON
{"bc": {...}, "rl": {...}, "oracle": {...}, "env_steps", "env_steps_per_s", "rollout_overhead_ratio", ...}.

    python benchmarks/rl_finetune.py [--minutes 60] [--resets 48] [--out DIR] [-- rl overrides]
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any


def figures(summary_path: Path) -> dict[str, Any]:
    s = json.loads(summary_path.read_text())
    return {"average_reward": round(s["average_reward"], 3),
            "success_by_trial": [round(v, 3) for v in s["success_by_trial"]], "episodes": s["episodes"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="PPO wall-clock budget (rl.time_limit_min)")
    ap.add_argument("--iterations", type=int, default=1000, help="rl.iterations (the time budget usually ends first)")
    ap.add_argument("--resets", type=int, default=48, help="evaluation episodes for BC, RL and the oracle")
    ap.add_argument("--out", default=None, help="keep the job dirs here (default: a temporary dir)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for the RL job")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from metamanip.cli import pipeline
    from metamanip.cli import rl as rl_cli

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        bc_job = root / "bc"
        cfg = pipeline.compose("pipeline", ["experiment=demo", "pipeline.baseline=true",
                                            f"eval.num_resets={args.resets}"], bc_job)
        pipeline.run(cfg)
        bc_min = (time.time() - t0) / 60
        rl_job = root / "rl"
        cfg = pipeline.compose("rl", ["experiment=rl_demo", f"ckpt={bc_job / 'train' / 'checkpoints' / 'last.pt'}",
                                      "eval.before=false", f"eval.num_resets={args.resets}", "logger=none",
                                      f"rl.iterations={args.iterations}", f"rl.time_limit_min={args.minutes}",
                                      *args.overrides], rl_job)
        t1 = time.time()
        metrics = rl_cli.run(cfg)
        rl_min = (time.time() - t1) / 60
        bc = figures(bc_job / "eval" / "summary.json")
        oracle = figures(bc_job / "baseline" / "summary.json")
        rl = figures(rl_job / "eval_after" / "summary.json")

    gap = oracle["average_reward"] - bc["average_reward"]
    closed = (rl["average_reward"] - bc["average_reward"]) / gap if gap > 0 else None
    print(f"{'agent':<8} {'avg_reward':>10}  success by trial")
    for name, r in (("bc", bc), ("rl", rl), ("oracle", oracle)):
        print(f"{name:<8} {r['average_reward']:>10.2f}  " + " ".join(f"{v:.2f}" for v in r["success_by_trial"]))
    print(f"PPO: {metrics['iterations']} iterations, {metrics['env_steps']} env steps in {rl_min:.1f} min "
          f"(with the final evaluation); {metrics['env_steps_per_s']} env steps/s in rollouts, "
          f"{metrics['bare_env_steps_per_s']} bare; overhead {metrics['rollout_overhead_ratio']}")
    goals = {"gap_closed": None if closed is None else round(closed, 3), "goal_gap_closed": 0.5,
             "rollout_overhead_ratio": metrics["rollout_overhead_ratio"], "goal_overhead": 1.2}
    print("goals:", json.dumps(goals), f"(total {(time.time() - t0) / 60:.1f} min, BC stage {bc_min:.1f} min)")
    out = {"bc": bc, "rl": rl, "oracle": oracle, "env_steps": metrics["env_steps"],
           "env_steps_per_s": metrics["env_steps_per_s"], "rollout_overhead_ratio": metrics["rollout_overhead_ratio"],
           "iterations": metrics["iterations"], "rl_minutes": round(rl_min, 2), "gap_closed": goals["gap_closed"],
           "first_rollout_reward": metrics.get("first_rollout_reward"),
           "last_rollout_reward": metrics.get("rollout_reward")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
