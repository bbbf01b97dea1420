"""`metamanip-rl`: PPO fine-tuning of a behaviour-cloned policy in a meta-learning setting.

    metamanip-rl experiment=rl_demo ckpt=<BC job>/train/checkpoints/last.pt
    metamanip-rl env=combi_explore ckpt=... rl.iterations=50 rl.envs_per_worker=16
    metamanip-rl -m hydra/launcher=slurm_cpu experiment=rl_demo ckpt=... rl.lr=1e-5,3e-5 seed=0,1

Writes eval_before/ (the BC checkpoint through the metamanip-eval protocol), rl_log.csv,
checkpoints/last.pt, eval_after/ (the fine-tuned policy, same protocol) and metrics.json into the job
dir, and prints both results side by side. Running again in the same dir resumes where it stopped.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from metamanip.cli.entry import entry_point
from metamanip.cli.jobstate import job, objective, read_status, write_metrics
from metamanip.errors import MissingInputError
from metamanip.training.preemption import Preempted

log = logging.getLogger(__name__)


def evaluate_stage(cfg: DictConfig, ckpt: str | Path, out: Path) -> dict[str, Any]:
    """`metamanip-eval` of `ckpt` into `out` with this job's env, eval and seed; a finished stage is
    read back, an interrupted one resumes."""
    from metamanip.cli import eval as eval_cli

    if read_status(out).get("status") == "done" and (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    sub = cfg.copy()
    with open_dict(sub):
        sub.paths.output_dir = str(out)
        sub.ckpt = str(ckpt)
        sub.eval.pop("before", None)
    eval_cli.run(sub)
    return json.loads((out / "summary.json").read_text())


def figures(summary: dict[str, Any]) -> dict[str, Any]:
    return {"average_reward": round(float(summary["average_reward"]), 4),
            "success_by_trial": [round(float(v), 4) for v in summary["success_by_trial"]],
            "episodes": int(summary["episodes"])}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune, evaluate before and after, write metrics.json; returns the metrics."""
    from metamanip.cli.eval import check_checkpoint, cores_shared
    from metamanip.evaluation.plan import env_for_split, num_objs_of, trial_budget_of
    from metamanip.evaluation.workers import ConfigFactory
    from metamanip.models.checkpoint import checkpoint_payload, load_policy, load_policy_state
    from metamanip.rl.ppo import check_policy
    from metamanip.rl.rollout import EpisodePlan
    from metamanip.training.trainer import seed_everything

    with job(cfg) as out:
        seed_everything(int(cfg.seed))
        if cfg.get("ckpt") in (None, "", "???"):
            raise MissingInputError("metamanip-rl needs the behaviour-cloned policy to fine-tune (ckpt is not set)",
                                    fix="pass ckpt=<train job>/checkpoints/last.pt, e.g. of metamanip-pipeline "
                                        "experiment=demo")
        payload = check_checkpoint(cfg.ckpt, cfg)   # before any env starts
        trainer = instantiate(cfg.rl)
        num_trials, trial_steps = trial_budget_of(cfg.env)
        policy = load_policy(payload).to(str(cfg.rl.device))
        check_policy(policy)
        before = evaluate_stage(cfg, cfg.ckpt, out / "eval_before") if cfg.eval.get("before", True) else None
        logger = instantiate(cfg.logger)
        with cores_shared(int(cfg.rl.num_workers)):
            fig = trainer.fit(
                policy, env_factory=ConfigFactory(env_for_split(cfg.env, trainer.split)),
                plan=EpisodePlan(cfg.env, trainer.split, trainer.episodes_per_iter, int(cfg.seed)),
                num_objs=num_objs_of(cfg.env), num_trials=num_trials, trial_steps=trial_steps, output_dir=out,
                logger=logger, run_config=OmegaConf.to_container(cfg, resolve=True),
                policy_payload=checkpoint_payload, policy_restore=load_policy_state)
        after = evaluate_stage(cfg, out / "checkpoints" / "last.pt", out / "eval_after")
        metrics: dict[str, Any] = dict(fig)
        if before is not None:
            metrics["bc"] = figures(before)
            metrics["bc_average_reward"] = metrics["bc"]["average_reward"]
        metrics["rl"] = figures(after)
        metrics["average_reward"] = metrics["rl"]["average_reward"]
        write_metrics(out, metrics)
    return metrics


def format_comparison(metrics: dict[str, Any]) -> str:
    lines = [f"{'policy':<10} {'avg_reward':>10}  success by trial"]
    for name in ("bc", "rl"):
        if name in metrics:
            r = metrics[name]
            lines.append(f"{name:<10} {r['average_reward']:>10.2f}  " + " ".join(f"{v:.2f}" for v in r["success_by_trial"]))
    lines.append(f"{metrics.get('env_steps', 0)} env steps, {metrics.get('env_steps_per_s')} env steps/s, "
                 f"rollout overhead {metrics.get('rollout_overhead_ratio')}x bare env stepping")
    return "\n".join(lines)


@entry_point("rl")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = run(cfg)
    except Preempted as e:
        log.warning("%s", e)
        sys.exit(128 + int(e.signum if e.signum else signal.SIGTERM))
    print(format_comparison(metrics))
    return objective(cfg, metrics)


if __name__ == "__main__":
    main()
