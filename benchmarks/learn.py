"""The whole chain learns: scripted demonstrations → tiny policy trained on CPU → evaluated success.

Runs the pipeline (metamanip.cli.pipeline.run: collect → train → eval) on `env=single_object` (one object,
its one task is always rewarded) with small cameras and the `tiny` backbone on CPU, then reports the
policy's success. `success_rate` is the fraction of evaluated trials that were rewarded (every trial is an
attempt at the same task); `found` the fraction of episodes with a rewarded trial; `untrained_success_rate`
the same evaluation of the policy's initial weights (the floor).
Goal: success_rate >= 0.5 within 30 minutes of CPU training.
Last line: JSON {"success_rate", "train_minutes", ...}.

    python benchmarks/learn.py [--object led] [--episodes 40] [--steps 1500] [--resets 10] [--threads 1] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd

NUM_TRIALS = 2


def untrained_success(cfg, job: Path) -> float:
    """The floor: the same evaluation of the same policy before training (its initial weights)."""
    import torch

    from metamanip.cli import eval as eval_cli
    from metamanip.cli import pipeline
    from metamanip.models.checkpoint import save_policy
    from metamanip.models.policy import build_policy

    torch.manual_seed(int(cfg.seed))
    ckpt = save_policy(build_policy(cfg), job / "untrained" / "policy.pt")
    stage = pipeline.stage_config(cfg, "eval", job)
    stage.paths.output_dir = str(job / "untrained" / "eval")
    stage.ckpt = str(ckpt)
    metrics = eval_cli.run(stage)
    return metrics["average_reward"] / NUM_TRIALS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--object", default="led", help="env.object of the single-object setting")
    ap.add_argument("--episodes", type=int, default=40, help="scripted demonstrations to collect")
    ap.add_argument("--steps", type=int, default=1500, help="optimizer steps of the tiny policy")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--image", type=int, default=32, help="static and gripper camera size (pixels)")
    ap.add_argument("--trial-steps", type=int, default=120)
    ap.add_argument("--resets", type=int, default=10, help="evaluation episodes")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (on a busy machine more threads than free cores is many times slower)")
    ap.add_argument("--out", default=None, help="keep the job dir here (default: a temporary dir)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for the pipeline config")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    from metamanip.cli import pipeline

    s = args.image
    overrides = [
        "env=single_object", f"env.object={args.object}", f"env.num_trials={NUM_TRIALS}",
        f"env.trial_steps={args.trial_steps}",
        "env.rollout_steps=null",
        f"env.sim.cameras.static.width={s}", f"env.sim.cameras.static.height={s}",
        f"env.sim.cameras.gripper.width={s}", f"env.sim.cameras.gripper.height={s}",
        "trial_limits.zero=1000", f"collect.episodes={args.episodes}", "collect.progress=false",
        "backbone=tiny", "decoder=lstm", "policy=tiny", "trainer=smoke", f"trainer.max_steps={args.steps}",
        f"trainer.batch_size={args.batch}", f"trainer.lr={args.lr}", "trainer.warmup_steps=50",
        "trainer.scheduler=cosine", f"trainer.save_every_steps={max(100, args.steps // 5)}",
        "trainer.log_every_steps=50", "trainer.progress=false",
        "eval.split=train", f"eval.num_resets={args.resets}", f"eval.num_workers={args.workers}",
        "eval.progress=false", *args.overrides,
    ]
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(args.out) if args.out else Path(tmp) / "learn"
        cfg = pipeline.compose("pipeline", overrides, job)
        t0 = time.time()
        metrics = pipeline.run(cfg)
        total = (time.time() - t0) / 60
        log_path = job / "train" / "train_log.csv"
        train_log = pd.read_csv(log_path) if log_path.exists() else None
        status = {s: json.loads((job / s / "status.json").read_text()) for s in ("collect", "train", "eval")}
        minutes = {s: (st["ended"] - st["started"]) / 60 for s, st in status.items()}
        collect = json.loads((job / "collect" / "metrics.json").read_text())
        floor = untrained_success(cfg, job)
        result = {
            "success_rate": round(metrics["average_reward"] / NUM_TRIALS, 3),
            "found": round(metrics["ratio_reward_found"], 3),
            "success_trial_1": round(metrics["success_trial_1"], 3),
            "untrained_success_rate": round(floor, 3),
            "train_minutes": round(minutes["train"], 2),
            "collect_minutes": round(minutes["collect"], 2),
            "eval_minutes": round(minutes["eval"], 2),
            "total_minutes": round(total, 2),
            "episodes": int(collect["episodes"]),
            "oracle_success_rate": collect.get("oracle_success_rate"),
            "train_steps": int(metrics.get("train_steps", args.steps)),
            "first_loss": float(train_log["loss"].iloc[0]) if train_log is not None and len(train_log) else None,
            "last_loss": float(train_log["loss"].iloc[-1]) if train_log is not None and len(train_log) else None,
            "object": args.object,
        }
    print(f"{args.object}: {result['episodes']} demos, {result['train_steps']} steps in {result['train_minutes']} min "
          f"(loss {result['first_loss']} -> {result['last_loss']}), success {result['success_rate']:.2f} "
          f"(found {result['found']:.2f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
