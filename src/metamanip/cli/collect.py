"""`metamanip-collect`: collect an expert dataset with an oracle, resumably and in shards.

    metamanip-collect env=explore env.num_objs=7 trial_limits=thesis_7 collect.episodes=1120
    metamanip-collect oracle=llm oracle.model=google/gemma-2-27b-it
    metamanip-collect collect.render=later collect.dir=data/e5 && metamanip-render dataset=data/e5
    metamanip-collect -m hydra/launcher=slurm_cpu collect.dir=data/e7 collect.shard=0,1,2,3 collect.num_shards=4

The dataset goes to `collect.dir` (default: `<job dir>/dataset`). Running the same command again resumes
(a finished shard is left as it is); a directory made with another config is refused. Shards of one
dataset must share `collect.dir`; `collect.shard` defaults to SLURM_ARRAY_TASK_ID when set.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from metamanip.cli.entry import entry_point
from metamanip.cli.jobstate import job, write_json, write_metrics
from metamanip.errors import ConfigMismatchError  # noqa: F401  (raised here; its home is metamanip.errors)
from metamanip.locks import dir_lock

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"
POINTER = "dataset_dir.txt"
# collect.* keys that do not change what is collected (so a resume with other values is the same dataset)
RUNTIME_KEYS = ("dir", "shard", "progress", "finalise")


def dataset_dir(job_dir: str | os.PathLike) -> Path:
    """Where the collect job with output dir `job_dir` put its dataset."""
    job_dir = Path(job_dir)
    pointer = job_dir / POINTER
    if pointer.exists():
        return Path(pointer.read_text().strip())
    return job_dir / "dataset"


def resolve_dir(cfg: DictConfig) -> Path:
    d = cfg.collect.get("dir")
    return Path(d) if d else Path(cfg.paths.output_dir) / "dataset"


def resolve_shard(cfg: DictConfig) -> int:
    shard = cfg.collect.get("shard")
    if shard is None:
        shard = os.environ.get("SLURM_ARRAY_TASK_ID", 0)
    return int(shard)


def dataset_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of the config that decides what a dataset holds (fingerprinted)."""
    def plain(key: str) -> Any:  # only these nodes are resolved (paths may hold Hydra-only interpolations)
        node = cfg.get(key)
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node

    collect = {k: v for k, v in plain("collect").items() if k not in RUNTIME_KEYS}
    return {"seed": cfg.get("seed"), "env": plain("env"), "trial_limits": plain("trial_limits"),
            "oracle": plain("oracle"), "collect": collect}


def fingerprint(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def check_or_claim(root: Path, config: dict[str, Any]) -> None:
    """Record the config in `root/collection.json`, or refuse a directory made with another one."""
    path = root / "collection.json"
    fp = fingerprint(config)
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("fingerprint") != fp:
            diffs = _diff(stored.get("config", {}), config)
            raise ConfigMismatchError(
                f"{root} holds a dataset collected with a different config ({len(diffs)} difference(s): "
                f"{'; '.join(diffs[:8])}). Resume it with the same config, or choose another collect.dir")
        return
    if root.exists() and any(p.suffix == ".h5" or p.name.endswith(".parts") for p in root.iterdir()):
        raise ConfigMismatchError(f"{root} already holds shards but no collection.json; choose an empty "
                                  f"collect.dir")
    write_json(path, {"fingerprint": fp, "config": config})


def shard_lock(root: Path, shard: int, num_shards: int) -> Any:
    """One collector per shard of a dataset: `<root>/.shard-XXXXX.lock` (held until the shard is written)."""
    return dir_lock(root / f".shard-{shard:05d}.lock", f"collect shard {shard} of {num_shards} into {root}",
                    hint=f"wait for it (running the same command afterwards resumes), or collect in parallel with "
                        f"one shard per process: collect.dir={root} collect.shard=<i> collect.num_shards=<N> "
                        f"(the same N for all, i = 0..N-1; with SLURM arrays collect.shard comes from the task id)")


def build_env(cfg: DictConfig) -> Any:
    """The setting env; without cameras when images are rendered later."""
    env_cfg = cfg.env.copy()
    render = cfg.collect.render
    if render not in ("live", "later"):
        raise ValueError(f"collect.render={render!r}: use live (render while collecting) or later "
                         f"(states only, then metamanip-render)")
    if render == "later":
        with open_dict(env_cfg):
            env_cfg.sim.cameras = {}
    return instantiate(env_cfg, _convert_="all")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Collect this shard of the dataset; returns metrics (also written to metrics.json)."""
    from metamanip.data.card import write_card
    from metamanip.data.collection import ShardCollector, meta_tasks_of, plan_slots, shard_slots
    from metamanip.data.shards import WriteOptions

    with job(cfg) as out, contextlib.ExitStack() as stack:
        c = cfg.collect
        root = resolve_dir(cfg)
        shard, num_shards = resolve_shard(cfg), int(c.num_shards)
        if num_shards > 1 and not c.get("dir"):
            raise ValueError("collect.num_shards > 1 needs collect.dir: every shard must write into the same "
                             "dataset directory (e.g. collect.dir=${paths.data_dir}/explore_7)")
        if cfg.get("trial_limits") is None:
            raise ValueError("collect needs trial limits: add trial_limits=thesis_3_5 (3/5 objects), "
                             "thesis_7 (7 objects) or combi")
        config = dataset_config(cfg)
        root.mkdir(parents=True, exist_ok=True)
        stack.enter_context(shard_lock(root, shard, num_shards))
        check_or_claim(root, config)
        (Path(out) / POINTER).write_text(str(root.resolve()) + "\n")
        env = build_env(cfg)
        agent = instantiate(cfg.oracle, env=env, _convert_="all")
        limits = {0: int(cfg.trial_limits.zero), 1: int(cfg.trial_limits.one), 2: int(cfg.trial_limits.two)}
        slots = plan_slots(meta_tasks_of(env), limits, int(c.episodes), max_bucket=env.num_trials - 2)
        mine = shard_slots(slots, shard, num_shards)
        log.info("collect: %d episodes planned, shard %d/%d takes %d, into %s", len(slots), shard, num_shards,
                 len(mine), root)
        options = WriteOptions(image_codec=str(c.image_codec), image_chunk=int(c.image_chunk),
                               lzma_preset=int(c.lzma_preset), compression_level=int(c.compression_level))
        collector = ShardCollector(env, agent, root, mine, shard, seed=int(cfg.seed),
                                   max_attempts=int(c.max_attempts), record_state=bool(c.record_state),
                                   write_options=options, progress=bool(c.progress),
                                   strict_buckets=bool(c.get("strict_buckets", True)))
        if collector.writer.finalised:
            log.info("shard %d is already finalised in %s", shard, root)
            prog = collector.load_progress()
        else:
            prog = collector.run()
        if c.finalise:
            collector.writer.finalise()  # also finishes a finalise that a crash interrupted
        env.close()
        card = write_card(root, config)
        metrics = {"episodes": card["episodes"], "shard_episodes": prog["passed"],
                   "shard_attempts": prog["attempts"],
                   "oracle_success_rate": card["oracle_success_rate"],
                   "bytes": card["bytes"], "steps": card["steps"],
                   "episodes_per_hour": (prog["passed"] / prog["seconds"] * 3600) if prog.get("seconds") else None,
                   "dataset_dir": str(root)}
        write_metrics(out, metrics)
    return metrics


@entry_point("collect")
def main(cfg: DictConfig) -> None:
    metrics = run(cfg)
    rate = metrics["oracle_success_rate"]
    print(f"dataset {metrics['dataset_dir']}: {metrics['episodes']} episodes, {metrics['steps']} steps, "
          f"{metrics['bytes'] / 1e6:.1f} MB, oracle success rate "
          f"{'n/a' if rate is None else f'{rate:.0%}'} (card.md has the details)")


if __name__ == "__main__":
    main()
