"""Shared helpers of the workbench tests: where the config tree is, how a launcher composes it."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Iterator

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf, open_dict

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
EXPERIMENTS = REPO / "experiments"
PRIMARIES = ("collect", "train", "eval", "pipeline", "rl")
LAUNCHERS = ("local", "slurm_gpu", "slurm_cpu")
HYDRA_NODES = ("run", "sweep", "launcher", "sweeper", "job", "callbacks")

# A primary config like the real ones, for testing the workbench's groups on their own.
STANDIN_PRIMARY = """\
defaults:
  - _self_
  - paths: default
  - hydra: default
  - experiment: null
  - hparams_search: null
  - optional local: default
task_name: train
seed: 0
trainer: {lr: 1.0e-4, weight_decay: 0.01}
decoder: lstm
"""


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))


def compose_job(config_dir: Path, name: str, overrides: list[str], tmp: Path, job_num: int = 0) -> DictConfig:
    """Compose `name` as the launcher would for job `job_num` of a sweep, logs under `tmp`."""
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(name, overrides=[*overrides, f"paths.log_dir={tmp}/logs", f"paths.data_dir={tmp}/data"],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.job.num = job_num
        cfg.hydra.job.id = f"{1000 + job_num}_{job_num}"
        cfg.hydra.runtime.output_dir = str(tmp / "logs" / "job")
        cfg.hydra.runtime.cwd = str(tmp)
    HydraConfig.instance().set_config(cfg)
    return cfg


def resolve_all(cfg: DictConfig) -> dict[str, Any]:
    """The task config and the hydra nodes that launchers/sweepers read, fully resolved.

    Raises on any missing value (`???`) or broken interpolation, the errors that otherwise only show
    when a sweep starts on the cluster.
    """
    task = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]),
                                  resolve=True, throw_on_missing=True)
    hydra_part = {k: OmegaConf.to_container(cfg.hydra[k], resolve=True, throw_on_missing=True)
                  for k in HYDRA_NODES if k in cfg.hydra}
    return {"task": task, "hydra": hydra_part}


def target_nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every (dotted path, dict) with a `_target_` in a resolved container."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node
        for k, v in node.items():
            yield from target_nodes(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from target_nodes(v, f"{path}[{i}]")


def check_target_binds(path: str, node: dict) -> None:
    """The `_target_` imports and accepts the node's arguments (what instantiate would call).

    Arguments an entry point passes at runtime (an oracle's `env`, a trainer's `policy`) may be absent;
    unknown or misspelled keys may not.
    """
    try:
        target = get_object(node["_target_"])
    except Exception as e:
        raise AssertionError(f"{path}: _target_ {node['_target_']!r} does not import: {e}") from None
    kwargs = {k: v for k, v in node.items() if not (k.startswith("_") and k.endswith("_"))}
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # some builtins have no signature
        return
    try:
        sig.bind_partial(**kwargs)
    except TypeError as e:
        raise AssertionError(f"{path}: {node['_target_']}({', '.join(kwargs)}) does not accept its arguments: "
                             f"{e}") from None


def write_tiny_dataset(root: Path, episodes: int = 3, trials: int = 2, steps: int = 6, size: int = 32,
                       seed: int = 0) -> Path:
    """A small real dataset (the data layer's shard writer) for training jobs in sweep tests."""
    import numpy as np

    from metamanip.data.shards import EpisodeBuffer, ShardWriter

    rng = np.random.default_rng(seed)
    writer = ShardWriter(root, 0)
    for e in range(episodes):
        buf = EpisodeBuffer()
        for trial in range(trials):
            for _ in range(steps):
                robot = rng.normal(size=15).astype(np.float32)
                obs = {"robot_obs": robot, "scene_obs": rng.normal(size=24).astype(np.float32),
                       "rgb_static": rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
                       "rgb_gripper": rng.integers(0, 255, (size // 2, size // 2, 3), dtype=np.uint8)}
                action = np.concatenate([np.tanh(robot[:6]), [1.0 if robot[6] > 0 else -1.0]]).astype(np.float32)
                buf.add_step(obs=obs, action=action, action_abs=action, trial=trial, reward=0.0,
                             texts={"train_feedback": f"first trial. episode objects: drawer, led {trial}",
                                    "alt_feedback": "alt", "lm_feedback": "lm"})
        writer.write_episode(f"ep{e:03d}", buf, {"meta_task": "open_drawer"})
    writer.finalise()
    return root
