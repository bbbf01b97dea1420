"""Evaluation throughput with 1 and with 2 env workers (the policy batched across them).

The same evaluation (Explore, 3 objects, held-out combination, the tiny policy on small cameras, short
trials) runs once with `num_workers=1` and once with `num_workers=2`, each into a fresh dir.
Goal: speedup >= 1.7 on 2 cores. Last line: JSON {"episodes_per_min_1", "episodes_per_min_2", "speedup"},
plus `machine_parallel_speedup`: what two plain CPU-bound processes get over one on this machine at the
time (the ceiling; a machine shared with other jobs shows well below 2), and `speedup_over_ceiling`.

    python benchmarks/eval_speed.py [--episodes 32] [--trial-steps 30] [--image 48]
                                    [--agent policy|policy_in_workers|oracle]
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from metamanip.cli import eval as eval_cli
from metamanip.cli.pipeline import compose
from metamanip.evaluation.agents import OracleFactory, PolicyFactory
from metamanip.evaluation.evaluator import evaluate
from metamanip.evaluation.workers import ConfigFactory, _context


def _spin(n: int) -> None:
    x = 0
    for i in range(n):
        x += i * i


def machine_parallel_speedup(n: int = 10_000_000) -> float:
    """What two processes get over one on this machine right now (the ceiling for `speedup`):
    on a shared or throttled machine this is well below 2."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # plain CPU work, nothing to import
    t0 = time.perf_counter()
    _spin(n)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    procs = [ctx.Process(target=_spin, args=(n,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    two = time.perf_counter() - t0
    return 2 * one / two


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=32,
                    help="episodes per run (num_resets on one combination); enough to amortise the worker start")
    ap.add_argument("--trial-steps", type=int, default=30)
    ap.add_argument("--image", type=int, default=48, help="static and gripper camera size (pixels)")
    ap.add_argument("--agent", choices=["policy", "policy_in_workers", "oracle"], default="policy",
                    help="policy: batched in this process; policy_in_workers: a copy per worker; oracle: scripted")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    s = args.image
    overrides = ["env=explore", "env.num_objs=3", "env.num_trials=4", f"env.trial_steps={args.trial_steps}",
                 f"env.sim.cameras.static.width={s}", f"env.sim.cameras.static.height={s}",
                 f"env.sim.cameras.gripper.width={s}", f"env.sim.cameras.gripper.height={s}",
                 "eval.split=heldout", f"eval.num_resets={args.episodes}", "eval.progress=false"]
    policy = None
    tmp_root = tempfile.mkdtemp()
    if args.agent.startswith("policy"):
        from metamanip.models.checkpoint import save_policy
        from metamanip.models.policy import build_policy

        policy = build_policy(compose("train", ["backbone=tiny", "decoder=lstm", "policy=tiny", "data.dir=unused"],
                                      tmp_root))
        ckpt = save_policy(policy, Path(tmp_root) / "policy.pt")
    ceiling_before = machine_parallel_speedup()
    warm = _context(None).Process(target=int)  # start the fork server outside the timed runs
    warm.start()
    warm.join()
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            cfg = compose("eval", [*overrides, f"eval.num_workers={workers}"], Path(tmp) / f"w{workers}")
            specs = eval_cli.protocol_specs(cfg)
            num_trials, trial_steps = eval_cli.trial_budget_of(cfg.env)
            if args.agent == "policy":
                agent = dict(policy=policy)
            elif args.agent == "policy_in_workers":
                agent = dict(agent_factory=PolicyFactory(str(ckpt)))
            else:
                agent = dict(agent_factory=OracleFactory(OmegaConf.to_container(cfg.oracle, resolve=True)))
            t0 = time.perf_counter()
            evaluate(specs, env_factory=ConfigFactory(eval_cli.env_for_split(cfg.env, "heldout")),
                     out_dir=Path(tmp) / f"w{workers}", num_objs=3, num_trials=num_trials, trial_steps=trial_steps,
                     num_workers=workers, progress=False, **agent)
            minutes = (time.perf_counter() - t0) / 60
            rates[workers] = len(specs) / minutes
            print(f"{workers} worker(s): {len(specs)} episodes in {minutes * 60:.1f} s "
                  f"= {rates[workers]:.2f} episodes/min")
    shutil.rmtree(tmp_root, ignore_errors=True)
    ceiling = (ceiling_before + machine_parallel_speedup()) / 2  # the machine's load drifts: before and after
    print(f"machine: two processes run {ceiling:.2f}x one right now (the ceiling for the speedup)")
    print(json.dumps({"agent": args.agent, "episodes": args.episodes, "episodes_per_min_1": round(rates[1], 3),
                      "episodes_per_min_2": round(rates[2], 3), "speedup": round(rates[2] / rates[1], 3),
                      "machine_parallel_speedup": round(ceiling, 3),
                      "speedup_over_ceiling": round(rates[2] / rates[1] / ceiling, 3)}))


if __name__ == "__main__":
    main()
