"""The trainer's throughput against a bare training loop, same model, same batches, same run.

    python benchmarks/train_speed.py [--steps 30 --rounds 3 --data DIR --workers 1]

The tiny preset (backbone=tiny, decoder=lstm, the smoke recipe's window and batch) trains on a real
small dataset (collected once with the scripted oracle into data/benchmarks/train_speed, or --data).

- bare loop: the batches are collated once and held in memory; each step is forward, backward,
  gradient clipping and the AdamW step. Nothing else.
- trainer: `Trainer.fit` for the same number of steps, timed around the whole call: DataLoader over
  the HDF5 shards, random-shift augmentation, the per-step all-reduce/NaN check, train_log.csv, the
  progress bookkeeping, setup and the final checkpoint.

`ratio` = trainer samples/s over bare-loop samples/s (goal >= 0.90). Rounds alternate the two; each
figure is the best round (other processes on the machine only ever slow a round down). The last line
printed is JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import torch

from metamanip.cli.pipeline import CONFIG_DIR, compose

RECIPE = ["experiment=smoke", "logger=none", "trainer.progress=false", "trainer.val_every_steps=0",
          "trainer.save_every_steps=0", "data.val_episodes=0"]


def real_dataset(path: Path, episodes: int) -> Path:
    """A small dataset collected by the scripted oracle (reused when it is already there)."""
    from metamanip.cli import collect as collect_cli
    from metamanip.data.shards import list_episodes

    if path.exists() and len(list_episodes(path)) >= episodes:
        return path
    with tempfile.TemporaryDirectory() as job:
        cfg = compose("collect", ["experiment=smoke", f"collect.dir={path}", f"collect.episodes={episodes}",
                                  "collect.progress=false"], output_dir=job)
        collect_cli.run(cfg)
    return path


def bare_loop(cfg, batches: list[dict], steps: int) -> float:
    """Seconds for `steps` optimizer steps on in-memory batches."""
    from metamanip.models.policy import build_policy
    from metamanip.training.optimizer import build_adamw

    from metamanip.training.distributed import DistEnv, pick_device

    torch.manual_seed(int(cfg.seed))
    device = pick_device(DistEnv(), str(cfg.trainer.device))
    policy = build_policy(cfg).to(device)
    policy.train()
    opt = build_adamw(policy, float(cfg.trainer.lr), float(cfg.trainer.weight_decay))
    batches = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in batches]
    clip = float(cfg.trainer.clip_grad_norm or 0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for i in range(steps):
        loss = policy(batches[i % len(batches)])["loss"]
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - t0


def trainer_run(cfg, train_set, steps: int) -> tuple[float, dict]:
    """Seconds for a whole `Trainer.fit` of `steps` steps (fresh output dir) and its metrics."""
    from hydra.utils import instantiate

    from metamanip.models.policy import build_policy

    torch.manual_seed(int(cfg.seed))
    policy = build_policy(cfg)
    trainer = instantiate(cfg.trainer, max_steps=steps)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        metrics = trainer.fit(policy, train_set, None, out)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - t0, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per timed block")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="a collected dataset (default: collect one)")
    parser.add_argument("--episodes", type=int, default=3, help="episodes to collect when --data is not given")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the trainer")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("overrides", nargs="*", help="extra train config overrides, e.g. trainer.batch_size=8")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    from metamanip.cli.train import build_datasets

    data = real_dataset(args.data or CONFIG_DIR.parent / "data" / "benchmarks" / "train_speed", args.episodes)
    with tempfile.TemporaryDirectory() as out:
        cfg = compose("train", [*RECIPE, f"data.dir={data}", f"trainer.num_workers={args.workers}",
                                *args.overrides], output_dir=out)
    train_set, _ = build_datasets(cfg)
    batch_size = int(cfg.trainer.batch_size)
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    batches = [b for b, _ in zip(loader, range(args.steps))]
    samples = args.steps * batch_size * int(cfg.trainer.grad_accum_steps)

    bare_loop(cfg, batches, 3)  # warm-up: allocator, kernels
    bare_s, trainer_s, reported = [], [], []
    for _ in range(args.rounds):
        bare_s.append(bare_loop(cfg, batches, args.steps))
        seconds, metrics = trainer_run(cfg, train_set, args.steps)
        trainer_s.append(seconds)
        reported.append(metrics["samples_per_s"])
    bare_rate, trainer_rate = samples / min(bare_s), samples / min(trainer_s)
    print(f"{'':24}{'samples/s':>12}{'s per round':>14}")
    print(f"{'bare loop':24}{bare_rate:12.2f}{min(bare_s):14.2f}")
    print(f"{'trainer (whole fit)':24}{trainer_rate:12.2f}{min(trainer_s):14.2f}")
    print(f"{'trainer (its own figure)':24}{max(reported):12.2f}")
    result = {
        "trainer_samples_per_s": round(trainer_rate, 3),
        "bare_loop_samples_per_s": round(bare_rate, 3),
        "ratio": round(trainer_rate / bare_rate, 4),
        "trainer_reported_samples_per_s": round(max(reported), 3),
        "steps": args.steps, "rounds": args.rounds, "batch_size": batch_size,
        "window_size": int(cfg.policy.window_size), "train_windows": len(train_set),
        "num_workers": args.workers, "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
