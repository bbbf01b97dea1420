"""Evaluation throughput with 1 and with 2 env workers (the policy batched across them).

The same evaluation (Explore, 3 objects, held-out combination, the tiny policy on small cameras, short
trials) runs once with `num_workers=1` and once with `num_workers=2`, each into a fresh dir.
Goal: speedup >= 1.7 on 2 cores. Last line: JSON {"episodes_per_min_1", "episodes_per_min_2", "speedup"}.

    python benchmarks/eval_speed.py [--episodes 8] [--trial-steps 30] [--image 48] [--agent policy|oracle]
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from metamanip.cli import eval as eval_cli
from metamanip.cli.pipeline import compose
from metamanip.evaluation.agents import OracleFactory
from metamanip.evaluation.evaluator import evaluate
from metamanip.evaluation.workers import ConfigFactory, _context


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=8, help="episodes per run (num_resets on one combination)")
    ap.add_argument("--trial-steps", type=int, default=30)
    ap.add_argument("--image", type=int, default=48, help="static and gripper camera size (pixels)")
    ap.add_argument("--agent", choices=["policy", "oracle"], default="policy")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    s = args.image
    overrides = ["env=explore", "env.num_objs=3", "env.num_trials=4", f"env.trial_steps={args.trial_steps}",
                 f"env.sim.cameras.static.width={s}", f"env.sim.cameras.static.height={s}",
                 f"env.sim.cameras.gripper.width={s}", f"env.sim.cameras.gripper.height={s}",
                 "eval.split=heldout", f"eval.num_resets={args.episodes}", "eval.progress=false"]
    policy = None
    if args.agent == "policy":
        from metamanip.models.policy import build_policy

        policy = build_policy(compose("train", ["backbone=tiny", "decoder=lstm", "policy=tiny", "data.dir=unused"],
                                      tempfile.gettempdir()))
    warm = _context(None).Process(target=int)  # start the fork server outside the timed runs
    warm.start()
    warm.join()
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            cfg = compose("eval", [*overrides, f"eval.num_workers={workers}"], Path(tmp) / f"w{workers}")
            specs = eval_cli.protocol_specs(cfg)
            num_trials, trial_steps = eval_cli.trial_budget_of(cfg.env)
            agent = dict(policy=policy) if policy is not None else dict(
                agent_factory=OracleFactory(OmegaConf.to_container(cfg.oracle, resolve=True)))
            t0 = time.perf_counter()
            evaluate(specs, env_factory=ConfigFactory(eval_cli.env_for_split(cfg.env, "heldout")),
                     out_dir=Path(tmp) / f"w{workers}", num_objs=3, num_trials=num_trials, trial_steps=trial_steps,
                     num_workers=workers, progress=False, **agent)
            minutes = (time.perf_counter() - t0) / 60
            rates[workers] = len(specs) / minutes
            print(f"{workers} worker(s): {len(specs)} episodes in {minutes * 60:.1f} s "
                  f"= {rates[workers]:.2f} episodes/min")
    print(json.dumps({"agent": args.agent, "episodes": args.episodes, "episodes_per_min_1": round(rates[1], 3),
                      "episodes_per_min_2": round(rates[2], 3), "speedup": round(rates[2] / rates[1], 3)}))


if __name__ == "__main__":
    main()
