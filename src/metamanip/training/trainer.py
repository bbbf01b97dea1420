"""The behaviour-cloning trainer: windows from the dataset in, policy loss down, checkpoints out.

One optimizer step = `grad_accum_steps` micro-batches of `batch_size` windows on every rank. The
learning-rate schedule is sized from the real number of optimizer steps. Every step ends with one
small all-reduce that carries the loss, a non-finite flag and a stop flag, so all ranks log the same
loss, stop together on NaN/inf (before the bad update) and stop together on SIGTERM/SIGUSR2 after rank 0
has saved. Checkpoints hold everything needed to continue bit-for-bit (see `checkpointing`), and a
run that finds ``<output dir>/checkpoints/last.pt`` continues from it.
"""
from __future__ import annotations

import collections
import contextlib
import csv
import io
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from metamanip.atomic import atomic_write_text
from metamanip.errors import UserError
from metamanip.training import checkpointing, distributed
from metamanip.training.augment import RandomShift
from metamanip.training.loggers import NoLogger
from metamanip.training.optimizer import DEFAULT_NO_DECAY, build_adamw
from metamanip.training.preemption import Preempted, StopSignals
from metamanip.training.sampler import ResumableSampler
from metamanip.training.schedule import build_scheduler

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
LOG_COLUMNS = ("step", "loss", "lr", "val_loss", "samples_per_s")


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss became NaN or inf; the run stopped before applying the update."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


class TrainLog:
    """`train_log.csv`: one row per logged step; on resume, rows past the checkpoint are dropped."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    try:
                        if None not in row.values() and int(row["step"]) <= resume_step:
                            rows.append(row)
                    except (KeyError, TypeError, ValueError):
                        continue  # a torn last line from a killed run
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, buf.getvalue())
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=LOG_COLUMNS, lineterminator="\n")

    def write(self, step: int, loss: float, lr: float, val_loss: float | None,
              samples_per_s: float) -> None:
        self._writer.writerow({"step": step, "loss": f"{loss:.6g}", "lr": f"{lr:.6g}",
                               "val_loss": "" if val_loss is None else f"{val_loss:.6g}",
                               "samples_per_s": f"{samples_per_s:.4g}"})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Trainer:
    """Behaviour cloning with AdamW, warmup + schedule, accumulation, mixed precision, clipping, DDP,
    random-shift augmentation, periodic validation and atomic, resumable checkpoints.

    The constructor arguments are `conf/trainer/*.yaml`; `fit` does the run.
    """

    def __init__(self, max_steps: int = 1000, max_epochs: float = 0, batch_size: int = 8,
                 grad_accum_steps: int = 1, lr: float = 1e-4, weight_decay: float = 0.1,
                 betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 no_decay: Sequence[str] = DEFAULT_NO_DECAY, scheduler: str = "constant",
                 warmup_steps: int = 0, min_lr_ratio: float = 0.0, precision: str = "fp32",
                 clip_grad_norm: float | None = 1.0, rgb_pad: int = 0, gripper_pad: int = 0,
                 consistent_shift: bool = True, val_every_steps: int = 0, val_max_batches: int = 0,
                 save_every_steps: int = 0, keep_step_checkpoints: bool = False,
                 log_every_steps: int = 10, num_workers: int = 0, prefetch_factor: int = 2,
                 device: str = "auto", seed: int = 0, resume: bool = True,
                 find_unused_parameters: bool = False, progress: bool = True) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"trainer.precision={precision!r}; choose one of {', '.join(PRECISIONS)}")
        if max_steps <= 0 and max_epochs <= 0:
            raise ValueError("set trainer.max_steps (optimizer steps) or trainer.max_epochs to a value > 0")
        for name, value in (("batch_size", batch_size), ("grad_accum_steps", grad_accum_steps),
                            ("log_every_steps", log_every_steps)):
            if value < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {value}")
        self.max_steps, self.max_epochs = int(max_steps), float(max_epochs)
        self.batch_size, self.grad_accum_steps = int(batch_size), int(grad_accum_steps)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, tuple(betas), eps
        self.no_decay = tuple(no_decay)
        self.scheduler_name, self.warmup_steps, self.min_lr_ratio = scheduler, warmup_steps, min_lr_ratio
        self.precision = precision
        self.clip_grad_norm = clip_grad_norm if clip_grad_norm and clip_grad_norm > 0 else None
        self.augment = RandomShift({"rgb_static": rgb_pad, "rgb_gripper": gripper_pad}, consistent_shift)
        self.val_every_steps, self.val_max_batches = val_every_steps, val_max_batches
        self.save_every_steps, self.keep_step_checkpoints = save_every_steps, keep_step_checkpoints
        self.log_every_steps = log_every_steps
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self.device_name, self.seed, self.resume = device, int(seed), resume
        self.find_unused_parameters, self.progress = find_unused_parameters, progress

    # ------------------------------------------------------------------ sizes
    def steps_per_epoch(self, num_windows: int, world_size: int = 1) -> float:
        """Optimizer steps in one pass over the training windows (may be fractional)."""
        batches = (num_windows // world_size) // self.batch_size
        return batches / self.grad_accum_steps

    def total_steps(self, num_windows: int, world_size: int = 1) -> int:
        """The run's optimizer steps: `max_steps`, else `max_epochs` passes over the data."""
        if self.max_steps > 0:
            return self.max_steps
        return max(1, math.ceil(self.max_epochs * self.steps_per_epoch(num_windows, world_size)))

    # ------------------------------------------------------------------ run
    def fit(self, policy: nn.Module, train_set: Dataset, val_set: Dataset | None,
            output_dir: str | os.PathLike, logger: NoLogger | None = None,
            run_config: dict[str, Any] | None = None,
            policy_payload: Callable[[nn.Module], dict[str, Any]] | None = None,
            policy_restore: Callable[[nn.Module, dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Train `policy` (its `forward(batch)["loss"]`) and return the final metrics.

        `policy_payload(policy)` builds the policy checkpoint dict stored under ``"policy"`` (by default
        ``{"format_version": 1, "config": policy.config, "state_dict": the full state dict}``) and
        `policy_restore(policy, state_dict)` loads it back on resume (default: a strict
        `load_state_dict`). `run_config` is the resolved config stored in every checkpoint and handed to
        the logger.
        """
        logger = logger or NoLogger()
        denv = distributed.detect()
        device = distributed.pick_device(denv, self.device_name)
        distributed.init_process_group(denv, device)
        # ranks may have been given different dirs (a timestamped Hydra run dir); rank 0's counts
        out = Path(distributed.broadcast_object(str(output_dir)))
        ckpt_dir = out / "checkpoints"
        try:
            return self._fit(policy, train_set, val_set, out, ckpt_dir, logger, run_config or {},
                             policy_payload or _default_payload, policy_restore or _default_restore,
                             denv, device)
        finally:
            distributed.destroy_process_group()

    def _fit(self, policy: nn.Module, train_set: Dataset, val_set: Dataset | None, out: Path,
             ckpt_dir: Path, logger: NoLogger, run_config: dict[str, Any],
             policy_payload: Callable[[nn.Module], dict[str, Any]],
             policy_restore: Callable[[nn.Module, dict[str, Any]], None], denv: distributed.DistEnv,
             device: torch.device) -> dict[str, Any]:
        main = denv.is_main
        num_windows = len(train_set)  # type: ignore[arg-type]
        per_rank_batches = (num_windows // denv.world_size) // self.batch_size
        if per_rank_batches < 1:
            raise ValueError(f"{num_windows} training windows give no full batch of {self.batch_size} on "
                             f"each of {denv.world_size} processes; lower trainer.batch_size or collect "
                             "more episodes")
        total = self.total_steps(num_windows, denv.world_size)
        seed_everything(self.seed + denv.rank)
        policy.to(device)
        model: nn.Module = policy
        if denv.distributed:
            model = DistributedDataParallel(
                policy, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=self.find_unused_parameters)
        optimizer = build_adamw(policy, self.lr, self.weight_decay, self.betas, self.eps, self.no_decay)
        scheduler = build_scheduler(optimizer, self.scheduler_name, self.warmup_steps, total,
                                    self.min_lr_ratio)
        scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        aug_gen = torch.Generator(device=device).manual_seed(self.seed * 7919 + denv.rank)

        sampler = ResumableSampler(num_windows, denv.rank, denv.world_size, self.seed, shuffle=True)
        loader = self._loader(train_set, sampler, device)

        step, micro, recent = 0, 0, collections.deque(maxlen=self.log_every_steps)
        resume_id: str | None = None
        last_val: float | None = None
        resume_path = checkpointing.find_resume_checkpoint(ckpt_dir) if self.resume else None
        if resume_path is not None:
            state = checkpointing.load_checkpoint(resume_path)
            step, micro, last_val, resume_id = self._restore(state, policy, policy_restore, optimizer,
                                                             scheduler, scaler, aug_gen, denv, recent)
            log.info("resumed from %s at step %d/%d (data position %d)", resume_path, step, total, micro)

        logger.start(out, run_config, run_id=resume_id, enabled=main)
        train_log = TrainLog(out / "train_log.csv", resume_step=step) if main else None
        stop = StopSignals().install()
        autocast = self._autocast(device)
        samples_per_step = self.batch_size * self.grad_accum_steps * denv.world_size
        start_step, excluded, saved_at = step, 0.0, (step if resume_path is not None else -1)
        lr_now = scheduler.get_last_lr()[0]
        bar = tqdm(total=total, initial=step, desc="train", dynamic_ncols=True,
                   disable=not (main and self.progress), leave=False)
        exit_code = 1
        try:
            model.train()
            stream = self._stream(loader, sampler, micro, per_rank_batches)
            loop_t0 = window_t0 = time.perf_counter()
            window_samples = 0
            while step < total:
                loss_all, bad, stopping = self._accumulate(model, stream, scaler, autocast, aug_gen, stop,
                                                           denv, device)
                micro += self.grad_accum_steps
                if bad:
                    raise NonFiniteLossError(self._nan_message(step, ckpt_dir, saved_at))
                if self.clip_grad_norm:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), self.clip_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                lr_now = scheduler.get_last_lr()[0]
                scheduler.step()
                step += 1
                recent.append(loss_all / (self.grad_accum_steps * denv.world_size))
                window_samples += samples_per_step
                bar.update(1)

                val_now = None
                if val_set is not None and self.val_every_steps and step % self.val_every_steps == 0 \
                        and step < total:
                    t_val = time.perf_counter()
                    val_now = last_val = self.validate(model, val_set, device, denv)
                    excluded += time.perf_counter() - t_val
                    window_t0 += time.perf_counter() - t_val
                if (step % self.log_every_steps == 0 and step < total) or val_now is not None:
                    now = time.perf_counter()
                    rate = window_samples / max(now - window_t0, 1e-9)
                    window_t0, window_samples = now, 0
                    mean_loss = float(np.mean(recent))
                    bar.set_postfix(loss=f"{mean_loss:.4f}", samples_per_s=f"{rate:.1f}")
                    if main:
                        logger.log({"train/loss": mean_loss, "train/lr": lr_now,
                                    "train/samples_per_s": rate,
                                    **({"val/loss": val_now} if val_now is not None else {})}, step)
                        train_log.write(step, mean_loss, lr_now, val_now, rate)  # type: ignore[union-attr]
                if stopping or (self.save_every_steps and step % self.save_every_steps == 0
                                and step < total):
                    t_save = time.perf_counter()
                    path = self._save(ckpt_dir, step, micro, policy, optimizer, scheduler, scaler,
                                      aug_gen, denv, recent, last_val, logger, run_config, policy_payload)
                    saved_at = step
                    excluded += time.perf_counter() - t_save
                    window_t0 += time.perf_counter() - t_save
                    if stopping:
                        signum = stop.signum or 15
                        bar.close()
                        if train_log is not None:
                            train_log.close()
                            train_log = None
                        logger.finish(exit_code=1)
                        stop.forward()  # submitit's handler requeues and exits here
                        raise Preempted(signum, step, str(path) if path else None)
            # the end: validation, final checkpoint, metrics
            loop_time = time.perf_counter() - loop_t0 - excluded
            flag = torch.tensor([float(stop.requested)], device=device, dtype=torch.float64)
            if distributed.all_reduce_sum(flag).item():  # signalled after the last step: save, hand on
                path = self._save(ckpt_dir, step, micro, policy, optimizer, scheduler, scaler, aug_gen,
                                  denv, recent, last_val, logger, run_config, policy_payload)
                logger.finish(exit_code=1)
                signum = stop.signum or 15
                stop.forward()
                raise Preempted(signum, step, str(path) if path else None)
            if val_set is not None:
                last_val = self.validate(model, val_set, device, denv)
            final_loss = float(np.mean(recent)) if recent else float("nan")
            if saved_at != step:
                self._save(ckpt_dir, step, micro, policy, optimizer, scheduler, scaler, aug_gen, denv,
                           recent, last_val, logger, run_config, policy_payload)
            trained = step - start_step
            metrics = {"train_loss": final_loss, "val_loss": last_val, "steps": step,
                       "samples_per_s": trained * samples_per_step / loop_time if loop_time else None,
                       "epochs": micro / per_rank_batches, "resumed_from_step": start_step if
                       resume_path is not None else None}
            if main and trained > 0:
                if train_log is not None:
                    train_log.write(step, final_loss, lr_now, last_val,
                                    metrics["samples_per_s"] or 0.0)
                logger.log({"train/loss": final_loss, "train/lr": lr_now,
                            **({"val/loss": last_val} if last_val is not None else {})}, step)
            exit_code = 0
            return metrics
        finally:
            bar.close()
            stop.uninstall()
            if train_log is not None:
                train_log.close()
            logger.finish(exit_code=exit_code)

    # ------------------------------------------------------------------ pieces
    def _accumulate(self, model: nn.Module, stream: Iterator[dict[str, Any]], scaler: torch.amp.GradScaler,
                    autocast: contextlib.AbstractContextManager, aug_gen: torch.Generator,
                    stop: StopSignals, denv: distributed.DistEnv, device: torch.device
                    ) -> tuple[float, bool, bool]:
        """Forward/backward over one step's micro-batches (gradients synced on the last one), then the
        step's single all-reduce: (loss summed over micro-batches and ranks, any non-finite, any stop)."""
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        for k in range(self.grad_accum_steps):
            batch = _to_device(next(stream), device)
            if self.augment:
                batch = self.augment(batch, aug_gen)
            last = k == self.grad_accum_steps - 1
            sync = model.no_sync() if denv.distributed and not last else contextlib.nullcontext()
            with sync:
                with autocast:
                    loss = self._forward(model, batch, device)
                scaler.scale(loss.float() / self.grad_accum_steps).backward()
            loss_sum += loss.detach().double()
        flags = torch.stack([loss_sum, torch.isfinite(loss_sum).logical_not().double(),
                             torch.tensor(float(stop.requested), device=device, dtype=torch.float64)])
        loss_all, bad, stopping = distributed.all_reduce_sum(flags).tolist()
        return loss_all, bool(bad), bool(stopping)

    def _loader(self, dataset: Dataset, sampler: ResumableSampler, device: torch.device) -> DataLoader:
        kwargs: dict[str, Any] = {}
        if self.num_workers > 0:
            kwargs.update(persistent_workers=True, prefetch_factor=self.prefetch_factor)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                          num_workers=self.num_workers, pin_memory=device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.seed), **kwargs)

    @staticmethod
    def _stream(loader: DataLoader, sampler: ResumableSampler, micro: int,
                per_rank_batches: int) -> Iterator[dict[str, Any]]:
        """Micro-batches forever, starting at global micro-batch index `micro`."""
        epoch, offset = divmod(micro, per_rank_batches)
        while True:
            sampler.set_position(epoch, offset * loader.batch_size)  # type: ignore[operator]
            yield from loader
            epoch, offset = epoch + 1, 0

    def _forward(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        if self.precision != "fp16" or device.type != "cpu":
            return model(batch)["loss"]
        try:
            return model(batch)["loss"]
        except RuntimeError as e:
            raise RuntimeError(f"trainer.precision=fp16 failed on the CPU ({e}); some CPU kernels (the LSTM "
                               "among them) have no fp16 version: use trainer.precision=bf16 or fp32 on a "
                               "CPU, fp16 on GPUs") from e

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)

    @torch.no_grad()
    def validate(self, model: nn.Module, val_set: Dataset, device: torch.device,
                 denv: distributed.DistEnv) -> float | None:
        """Mean loss over the held-out windows (sharded over ranks), without augmentation."""
        n = len(val_set)  # type: ignore[arg-type]
        if n == 0:
            return None
        shard = n >= denv.world_size
        sampler = ResumableSampler(n, denv.rank if shard else 0, denv.world_size if shard else 1,
                                   shuffle=False)
        loader = DataLoader(val_set, batch_size=self.batch_size, sampler=sampler,
                            num_workers=min(self.num_workers, 2), pin_memory=device.type == "cuda")
        module = model.module if isinstance(model, DistributedDataParallel) else model
        was_training = module.training
        module.eval()
        total = torch.zeros(2, device=device, dtype=torch.float64)
        try:
            with self._autocast(device):
                for i, batch in enumerate(loader):
                    if self.val_max_batches and i >= self.val_max_batches:
                        break
                    batch = _to_device(batch, device)
                    size = next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor))
                    total[0] += module(batch)["loss"].detach().double() * size
                    total[1] += size
        finally:
            module.train(was_training)
        if shard:
            distributed.all_reduce_sum(total)
        loss_sum, count = total.tolist()
        return loss_sum / count if count else None

    def _save(self, ckpt_dir: Path, step: int, micro: int, policy: nn.Module,
              optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler,
              aug_gen: torch.Generator, denv: distributed.DistEnv, recent: collections.deque,
              last_val: float | None, logger: NoLogger, run_config: dict[str, Any],
              policy_payload: Callable[[nn.Module], dict[str, Any]]) -> Path | None:
        rngs = distributed.all_gather_objects(checkpointing.capture_rng(aug_gen))
        if not denv.is_main:
            return None
        state = {"step": step, "micro_step": micro, "policy": policy_payload(policy),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "rng": rngs, "recent_losses": list(recent),
                 "val_loss": last_val, "world_size": denv.world_size, "batch_size": self.batch_size,
                 "grad_accum_steps": self.grad_accum_steps, "seed": self.seed,
                 "logger_id": logger.run_id, "config": run_config}
        last = ckpt_dir / checkpointing.LAST
        if self.keep_step_checkpoints:
            step_path = checkpointing.save_checkpoint(ckpt_dir / checkpointing.step_checkpoint_name(step),
                                                      state)
            try:  # same bytes under a second name, swapped in atomically
                tmp = ckpt_dir / f".{checkpointing.LAST}.link"
                tmp.unlink(missing_ok=True)
                os.link(step_path, tmp)
                os.replace(tmp, last)
            except OSError:
                checkpointing.save_checkpoint(last, state)
        else:
            checkpointing.save_checkpoint(last, state)
        log.info("checkpoint at step %d -> %s", step, last)
        return last

    def _restore(self, state: dict[str, Any], policy: nn.Module,
                 policy_restore: Callable[[nn.Module, dict[str, Any]], None],
                 optimizer: torch.optim.Optimizer,
                 scheduler: Any, scaler: torch.amp.GradScaler, aug_gen: torch.Generator,
                 denv: distributed.DistEnv, recent: collections.deque
                 ) -> tuple[int, int, float | None, str | None]:
        try:
            policy_restore(policy, state["policy"]["state_dict"])
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"the checkpoint does not fit this policy ({e}); the run config changed "
                             "since it was written: use a new output dir or trainer.resume=false") from e
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if (state.get("world_size"), state.get("batch_size"), state.get("grad_accum_steps")) != \
                (denv.world_size, self.batch_size, self.grad_accum_steps):
            log.warning("resuming with a different world size / batch size / accumulation than the "
                        "checkpoint: the data order will not match an uninterrupted run")
        rngs = state.get("rng") or []
        if len(rngs) == denv.world_size:
            checkpointing.restore_rng(rngs[denv.rank], aug_gen)
        elif rngs:
            checkpointing.restore_rng(rngs[0], aug_gen)
        recent.extend(state.get("recent_losses", []))
        return int(state["step"]), int(state["micro_step"]), state.get("val_loss"), state.get("logger_id")

    @staticmethod
    def _nan_message(step: int, ckpt_dir: Path, saved_at: int) -> str:
        kept = (f"the last good checkpoint {ckpt_dir / checkpointing.LAST} (step {saved_at}) is kept"
                if saved_at >= 0 else "no checkpoint was written yet")
        return (f"the training loss is NaN/inf at step {step + 1}; the update was not applied and "
                f"{kept}. Lower trainer.lr, use trainer.precision=fp32 or bf16, lower "
                "trainer.clip_grad_norm, or check the dataset for NaN values")


def _default_restore(policy: nn.Module, state_dict: dict[str, Any]) -> None:
    policy.load_state_dict(state_dict)


def _default_payload(policy: nn.Module) -> dict[str, Any]:
    return {"format_version": 1, "config": getattr(policy, "config", {}) or {},
            "state_dict": policy.state_dict()}
