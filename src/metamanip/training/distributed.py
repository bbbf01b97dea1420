"""Process-group setup for DDP under `torchrun` or SLURM (plain `srun` or submitit), and the few
collectives the trainer needs.

Ranks come from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or, when
those are absent, from SLURM's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, the first host of
SLURM_JOB_NODELIST, a port derived from SLURM_JOB_ID), or from submitit's local executor with several
tasks per job (SUBMITIT_LOCAL_GLOBALID, ...). `export_env` writes the torchrun names back
into the environment so every later reader (status files, loggers) agrees on who rank 0 is.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """Who this process is in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launcher: str = "single"  # single | torchrun | slurm | submitit-local

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def first_slurm_host(nodelist: str) -> str:
    """The first host name of a SLURM node list such as ``gpu[03-05,9],cpu1`` (-> ``gpu03``)."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                                 text=True, timeout=10, check=True).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError):
            log.debug("scontrol could not expand %r; parsing it", nodelist)
    first = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not first:
        raise ValueError(f"cannot read a host from SLURM_JOB_NODELIST={nodelist!r}")
    prefix, _, ranges = first.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def detect(environ: dict[str, str] | None = None) -> DistEnv:
    """Read this process's place in the job from torchrun's or SLURM's environment variables."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]),
                       local_rank=int(env.get("LOCAL_RANK", 0)),
                       master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                       master_port=int(env.get("MASTER_PORT", 29500)), launcher="torchrun")
    ntasks = int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1)
    if ntasks > 1 and "SLURM_PROCID" in env:
        addr = env.get("MASTER_ADDR") or first_slurm_host(env.get("SLURM_JOB_NODELIST",
                                                                  env.get("SLURM_NODELIST", "")))
        job_id = env.get("SLURM_JOB_ID", "0")
        port = int(env.get("MASTER_PORT") or 20000 + int(re.sub(r"\D", "", job_id) or 0) % 20000)
        return DistEnv(rank=int(env["SLURM_PROCID"]), world_size=ntasks,
                       local_rank=int(env.get("SLURM_LOCALID", 0)), master_addr=addr,
                       master_port=port, launcher="slurm")
    ntasks = int(env.get("SUBMITIT_LOCAL_NTASKS", "1") or 1)
    if ntasks > 1 and "SUBMITIT_LOCAL_GLOBALID" in env:  # submitit's local executor, several tasks
        job_id = env.get("SUBMITIT_LOCAL_JOB_ID", "0")
        return DistEnv(rank=int(env["SUBMITIT_LOCAL_GLOBALID"]), world_size=ntasks,
                       local_rank=int(env.get("SUBMITIT_LOCAL_LOCALID", 0)), master_addr="127.0.0.1",
                       master_port=20000 + int(re.sub(r"\D", "", job_id) or 0) % 20000,
                       launcher="submitit-local")
    return DistEnv()


def export_env(denv: DistEnv) -> None:
    """Write the torchrun-style variables for `denv` (a no-op for a single process)."""
    if not denv.distributed:
        return
    os.environ.update({"RANK": str(denv.rank), "WORLD_SIZE": str(denv.world_size),
                       "LOCAL_RANK": str(denv.local_rank), "MASTER_ADDR": denv.master_addr,
                       "MASTER_PORT": str(denv.master_port)})


def pick_device(denv: DistEnv, device: str = "auto") -> torch.device:
    """`auto` is this rank's GPU when there is one, otherwise the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but no GPU is visible; use trainer.device=cpu or auto")
        index = denv.local_rank if dev.index is None else dev.index
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    return dev


def init_process_group(denv: DistEnv, device: torch.device, timeout_s: float = 1800.0) -> None:
    """Join the job's process group: NCCL on GPUs, gloo on CPUs. A no-op for a single process."""
    if not denv.distributed or (dist.is_available() and dist.is_initialized()):
        return
    export_env(denv)
    backend = "nccl" if device.type == "cuda" else "gloo"
    log.info("joining process group: rank %d/%d (local %d) via %s at %s:%d [%s]", denv.rank,
             denv.world_size, denv.local_rank, backend, denv.master_addr, denv.master_port, denv.launcher)
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        kwargs["device_id"] = device
    dist.init_process_group(backend=backend, init_method="env://", rank=denv.rank,
                            world_size=denv.world_size, timeout=timedelta(seconds=timeout_s), **kwargs)


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (identity for a single process)."""
    if is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list for a single process)."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if is_initialized():
        dist.barrier()
