"""The trainer's throughput against a bare training loop, same model, same batches, same run.

    python benchmarks/train_speed.py [--steps 50 --rounds 3 --data DIR --workers N --threads N]

The tiny preset (backbone=tiny, decoder=lstm, the smoke recipe's window and batch) trains on a real
small dataset (collected once with the scripted oracle into data/benchmarks/train_speed, or --data).

- bare loop: the batches are collated once and held in memory; each step is forward, backward,
  gradient clipping and the AdamW step. Nothing else.
- trainer: `Trainer.fit` for the same number of steps, timed around the whole call: DataLoader over
  the HDF5 shards, random-shift augmentation, the per-step all-reduce/NaN check, train_log.csv, the
  progress bookkeeping, setup and the final checkpoint.

`ratio` = trainer samples/s over bare-loop samples/s, wall clock (goal >= 0.90). Rounds alternate the
two; each figure is the best round (other processes on the machine only ever slow a round down).
`bookkeeping_ratio` runs the same trainer on the windows read into memory beforehand, which splits the
cost into the trainer's own bookkeeping and the dataset reading (HDF5 + image decoding per window).
`cpu_ratio` is the main comparison in CPU seconds (this process plus finished children such as the
DataLoader workers), which other processes on a shared machine disturb much less. The last line
printed is JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from metamanip.cli.pipeline import CONFIG_DIR, compose

RECIPE = ["experiment=smoke", "logger=none", "trainer.progress=false", "trainer.val_every_steps=0",
          "trainer.save_every_steps=0", "data.val_episodes=0"]


def real_dataset(path: Path, episodes: int) -> Path:
    """A small dataset collected by the scripted oracle into the benchmark's cache dir (reused when it is
    there and readable; re-collected when an older format left it unreadable)."""
    import shutil

    from metamanip.cli import collect as collect_cli
    from metamanip.data.shards import CorruptShardError, list_episodes

    if path.exists():
        try:
            if len(list_episodes(path)) >= episodes:
                return path
        except CorruptShardError as e:
            logging.warning("re-collecting the benchmark dataset: %s", e)
            shutil.rmtree(path)
    with tempfile.TemporaryDirectory() as job:
        cfg = compose("collect", ["experiment=smoke", f"collect.dir={path}", f"collect.episodes={episodes}",
                                  "collect.progress=false"], output_dir=job)
        collect_cli.run(cfg)
    return path


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bare_loop(cfg, batches: list[dict], steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds for `steps` optimizer steps on in-memory batches."""
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
    t0, c0 = time.perf_counter(), cpu_seconds()
    for i in range(steps):
        loss = policy(batches[i % len(batches)])["loss"]
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - t0, cpu_seconds() - c0


def trainer_run(cfg, train_set, steps: int) -> tuple[float, float, dict]:
    """(wall, CPU) seconds for a whole `Trainer.fit` of `steps` steps (fresh output dir), its metrics."""
    from hydra.utils import instantiate

    from metamanip.models.policy import build_policy

    torch.manual_seed(int(cfg.seed))
    policy = build_policy(cfg)
    trainer = instantiate(cfg.trainer, max_steps=steps)
    with tempfile.TemporaryDirectory() as out:
        t0, c0 = time.perf_counter(), cpu_seconds()
        metrics = trainer.fit(policy, train_set, None, out)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - t0, cpu_seconds() - c0, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per timed block")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="a collected dataset (default: collect one)")
    parser.add_argument("--episodes", type=int, default=3, help="episodes to collect when --data is not given")
    parser.add_argument("--workers", type=int, default=-1,
                        help="DataLoader workers of the trainer (-1: the recipe's trainer.num_workers)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads on CPU (0: torch's default; on a small shared machine "
                             "2+ threads spin-wait on each other and bury the comparison in noise)")
    parser.add_argument("overrides", nargs="*", help="extra train config overrides, e.g. trainer.batch_size=8")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    from metamanip.cli.train import build_datasets

    data = args.data or real_dataset(CONFIG_DIR.parent / "data" / "benchmarks" / "train_speed", args.episodes)
    workers = [f"trainer.num_workers={args.workers}"] if args.workers >= 0 else []
    with tempfile.TemporaryDirectory() as out:
        cfg = compose("train", [*RECIPE, f"data.dir={data}", *workers, *args.overrides], output_dir=out)
    train_set, _ = build_datasets(cfg)
    batch_size = int(cfg.trainer.batch_size)
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    batches = [b for b, _ in zip(loader, range(args.steps))]
    samples = args.steps * batch_size * int(cfg.trainer.grad_accum_steps)

    bare_loop(cfg, batches, 3)  # warm-up: allocator, kernels
    in_memory = [train_set[i] for i in range(len(train_set))]
    bare_s, bare_cpu, trainer_s, trainer_cpu, mem_s, reported = [], [], [], [], [], []
    for _ in range(args.rounds):
        wall, cpu = bare_loop(cfg, batches, args.steps)
        bare_s.append(wall)
        bare_cpu.append(cpu)
        wall, cpu, metrics = trainer_run(cfg, train_set, args.steps)
        trainer_s.append(wall)
        trainer_cpu.append(cpu)
        reported.append(metrics["samples_per_s"])
        mem_s.append(trainer_run(cfg, in_memory, args.steps)[0])
    bare_rate, trainer_rate, mem_rate = (samples / min(t) for t in (bare_s, trainer_s, mem_s))
    print(f"{'':28}{'samples/s':>12}{'wall s':>10}{'CPU s':>10}")
    print(f"{'bare loop':28}{bare_rate:12.2f}{min(bare_s):10.2f}{min(bare_cpu):10.2f}")
    print(f"{'trainer (whole fit)':28}{trainer_rate:12.2f}{min(trainer_s):10.2f}{min(trainer_cpu):10.2f}")
    print(f"{'trainer (its own figure)':28}{max(reported):12.2f}")
    print(f"{'trainer, windows in memory':28}{mem_rate:12.2f}{min(mem_s):10.2f}")
    result = {
        "trainer_samples_per_s": round(trainer_rate, 3),
        "bare_loop_samples_per_s": round(bare_rate, 3),
        "ratio": round(trainer_rate / bare_rate, 4),
        "trainer_in_memory_samples_per_s": round(mem_rate, 3),
        "bookkeeping_ratio": round(mem_rate / bare_rate, 4),
        "cpu_ratio": round(min(bare_cpu) / min(trainer_cpu), 4),
        "trainer_reported_samples_per_s": round(max(reported), 3),
        "steps": args.steps, "rounds": args.rounds, "batch_size": batch_size,
        "window_size": int(cfg.policy.window_size), "train_windows": len(train_set),
        "num_workers": int(cfg.trainer.num_workers), "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
