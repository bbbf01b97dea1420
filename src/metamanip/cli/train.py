"""`metamanip-train`: behaviour cloning of a policy on a collected dataset.

    metamanip-train data.dir=data/explore_5 backbone=tiny decoder=lstm trainer.max_steps=2000
    torchrun --nproc_per_node=2 -m metamanip.cli.train data.dir=... trainer.device=cpu
    metamanip-train -m hydra/launcher=slurm_gpu decoder=lstm,gpt,fc seed=1,2,3 data.dir=...

Writes checkpoints/last.pt, train_log.csv, metrics.json and wandb/ into the job dir. Running again in
the same dir (a SLURM requeue lands there by construction) resumes from checkpoints/last.pt.
"""
from __future__ import annotations

import hashlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from metamanip.cli.entry import entry_point
from metamanip.cli.jobstate import job, objective, write_metrics
from metamanip.errors import DatasetMismatchError  # noqa: F401  (raised here; its home is metamanip.errors)
from metamanip.training import distributed
from metamanip.training.preemption import Preempted
from metamanip.training.trainer import seed_everything

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"


def heldout_episodes(episode_ids: list[str], val_episodes: float) -> list[str]:
    """The episodes kept for validation: a fixed choice by a hash of the id, so it does not depend on
    the seed (val losses of a seed sweep are comparable) and mostly survives adding episodes."""
    n = len(episode_ids)
    if val_episodes <= 0 or n < 2:
        return []
    count = int(val_episodes) if val_episodes >= 1 else max(1, round(val_episodes * n))
    if count >= n:
        raise ValueError(f"data.val_episodes={val_episodes} holds out {count} of the {n} episodes, leaving "
                         "none to train on; lower data.val_episodes")
    ranked = sorted(episode_ids, key=lambda e: hashlib.sha1(e.encode()).hexdigest())
    return sorted(ranked[:count])


def cameras_of(cfg: DictConfig) -> tuple[str, ...]:
    """The cameras the policy reads (none for `policy.obs=state`)."""
    if "rgb" not in str(cfg.policy.get("obs", "rgb")):
        return ()
    use_gripper = cfg.policy.get("use_gripper", cfg.backbone.get("use_gripper", True))
    return ("static", "gripper") if use_gripper else ("static",)


def build_datasets(cfg: DictConfig) -> tuple[Any, Any]:
    """Training and held-out `WindowDataset`s for the policy's window and cameras, checked against
    the policy before any step runs."""
    from metamanip.data.dataset import DEFAULT_CACHE_MB, WindowDataset
    from metamanip.data.shards import list_episodes

    root = Path(str(cfg.data.dir))
    if not root.exists():
        raise FileNotFoundError(f"data.dir={root} does not exist; collect a dataset with metamanip-collect "
                                "or point data.dir at one")
    window = int(cfg.policy.window_size)
    cameras = cameras_of(cfg)
    refs = list_episodes(root, skip_corrupt=bool(cfg.data.skip_corrupt))
    if not refs:
        raise DatasetMismatchError(f"no episodes in data.dir={root}; collect some with metamanip-collect")
    check_cameras(refs, cameras, root)
    ids = [r.episode_id for r in refs]
    val_ids = heldout_episodes(ids, float(cfg.data.val_episodes))
    train_ids = sorted(set(ids) - set(val_ids))
    kwargs = dict(window_size=window, feedback=str(cfg.data.feedback), cameras=cameras,
                  skip_corrupt=bool(cfg.data.skip_corrupt), stride=int(cfg.data.stride),
                  cache_mb=float(cfg.data.get("cache_mb", DEFAULT_CACHE_MB)),
                  text=str(cfg.policy.get("text_input", "trial")),
                  fwd_pred_next_n=int((cfg.get("decoder") or {}).get("fwd_pred_next_n", 1) or 1))
    try:
        train_set = WindowDataset(root, episodes=train_ids, **kwargs)
    except ValueError as e:
        if "window_size" in str(e):
            raise DatasetMismatchError(
                f"policy.window_size={window} is longer than every trial in {root} ({e}); lower "
                "policy.window_size (e.g. policy=tiny) or collect longer trials") from e
        raise DatasetMismatchError(f"{root} cannot feed this policy: {e}") from e
    check_item(train_set[0], cameras, window, root)
    val_set = None
    if val_ids:
        try:
            val_set = WindowDataset(root, episodes=val_ids, **kwargs)
        except ValueError as e:
            log.warning("no validation windows in the %d held-out episodes (%s); training without "
                        "a validation loss", len(val_ids), e)
    log.info("dataset %s: %d training windows from %d episodes, %d validation windows from %d episodes",
             root, len(train_set), len(train_ids), len(val_set) if val_set is not None else 0, len(val_ids))
    return train_set, val_set


def check_cameras(refs: list[Any], cameras: tuple[str, ...], root: Path) -> None:
    """Refuse a dataset whose episodes lack a camera the policy reads (before any window is read)."""
    from metamanip.data.shards import EpisodeReader

    reader = EpisodeReader()
    try:
        for cam in cameras:
            key = f"rgb_{cam}"
            lacking = [r.episode_id for r in refs if key not in reader.file(r.path)[r.group]]
            if lacking:
                hint = ("use policy.use_gripper=false, or collect with the gripper camera" if cam == "gripper"
                        else "render the images with metamanip-render")
                raise DatasetMismatchError(
                    f"the policy reads {key} but {len(lacking)} of {len(refs)} episodes in {root} have no "
                    f"{cam} camera (e.g. {lacking[0]}); {hint}")
    finally:
        reader.close()


def check_item(item: dict[str, Any], cameras: tuple[str, ...], window: int, root: Path) -> None:
    """Refuse a dataset whose windows lack what the policy reads."""
    for cam in cameras:
        key = f"rgb_{cam}"
        if key not in item:
            raise DatasetMismatchError(f"the policy reads {key} but the windows of {root} have no {cam} "
                                       f"camera; use policy.use_gripper=false or collect with that camera")
    for key in ("actions", "robot_obs", "text"):
        if key not in item:
            raise DatasetMismatchError(f"the windows of {root} have no {key!r}; the dataset is not a "
                                       "metamanip-collect dataset")
    if item["actions"].shape[0] != window:
        raise DatasetMismatchError(f"windows of {item['actions'].shape[0]} steps for "
                                   f"policy.window_size={window}")


def record_camera_sizes(cfg: DictConfig, item: dict[str, Any]) -> None:
    """Make `env.sim.cameras` of the run config say the image sizes the policy really trains on (the
    dataset's), since evaluation checks the env's cameras against them."""
    sim = cfg.get("env", {}).get("sim") if "env" in cfg else None
    if sim is None:
        return
    for cam in ("static", "gripper"):
        key = f"rgb_{cam}"
        if key not in item:
            continue
        h, w = (int(x) for x in item[key].shape[-2:])
        node = (sim.get("cameras") or {}).get(cam)
        if node is None:
            continue
        if (int(node.get("height", h)), int(node.get("width", w))) != (h, w):
            log.warning("the dataset's %s images are %dx%d but env.sim.cameras.%s says %sx%s; recording %dx%d "
                        "in the run config (evaluate with env.sim.cameras.%s.height=%d "
                        "env.sim.cameras.%s.width=%d)", cam, h, w, cam, node.get("height"), node.get("width"),
                        h, w, cam, h, cam, w)
            with open_dict(node):
                node.height, node.width = h, w


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, write metrics.json, return the metrics (the pipeline calls this directly)."""
    denv = distributed.detect()
    distributed.export_env(denv)  # so that only rank 0 writes status/metrics
    with job(cfg) as out:
        seed_everything(int(cfg.seed))
        train_set, val_set = build_datasets(cfg)
        from metamanip.models.checkpoint import checkpoint_payload, load_policy_state
        from metamanip.models.policy import build_policy

        policy = build_policy(cfg)
        if policy.state_encoder is not None:  # a resumed run restores the same statistics from its checkpoint
            stats = train_set.state_stats(policy.state_encoder.keys)
            policy.set_state_stats(stats["mean"], stats["std"])
        record_camera_sizes(cfg, train_set[0])
        # a backbone that reads an inner LM layer leaves the blocks above it without gradients, and a state
        # policy leaves the vision encoder, resampler and cross-attention without any
        unused = ((cfg.backbone.get("feature_layer") is not None or not policy.uses_images)
                  and not cfg.trainer.find_unused_parameters)
        trainer = instantiate(cfg.trainer, **({"find_unused_parameters": True} if unused else {}))
        logger = instantiate(cfg.logger)
        metrics = trainer.fit(policy, train_set, val_set, out, logger=logger,
                              run_config=OmegaConf.to_container(cfg, resolve=True),
                              policy_payload=checkpoint_payload, policy_restore=load_policy_state)
        if denv.is_main:
            write_metrics(out, metrics)
    return metrics


@entry_point("train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = run(cfg)
    except Preempted as e:
        log.warning("%s", e)
        sys.exit(128 + int(e.signum if e.signum else signal.SIGTERM))
    return objective(cfg, metrics)


if __name__ == "__main__":
    main()
