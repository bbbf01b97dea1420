"""PPO fine-tuning of a behaviour-cloned policy, with FLaRe's stabilising recipe.

The actor is the policy itself (its encoder and continuous decoder, from the BC weights) with a
`GaussianActionHead` on its outputs; the critic is a separate MLP head on the policy's step feature
(detached by default, so value regression never moves the BC features) plus the trial index and the
step's place in its trial. A rollout is whole meta-episodes (all trials, the policy keeping its history
and feedback as in evaluation), so the return is the reward summed across trials: the meta-RL objective.

The RL machinery is torchrl's: `ClipPPOLoss` (clipped surrogate, critic loss, approximate KL,
advantage normalisation) and `generalized_advantage_estimate`. What is ours: recomputing a step's
action distribution with gradients from its history window (`FlamingoPolicy.action_params` on
right-padded windows of step features), the critic's inputs, and the loop.

FLaRe's recipe, as config (`conf/rl/ppo.yaml`): a small actor learning rate, no entropy bonus
(`entropy_coef: 0`), critic warm-up (`critic_warmup_iters` iterations that fit the critic alone
before any policy update), large on-policy batches (`episodes_per_iter` whole episodes), a small clip
range and early stopping of an iteration's epochs when the approximate KL passes `target_kl`.

Checkpoints (`<out>/checkpoints/last.pt`, written atomically after every `save_every_iters`
iterations) hold the policy payload (so `metamanip-eval ckpt=...` evaluates them like any policy), the
head, the critic, both optimisers, the iteration, env step count, RNG states and the log rows; a run
started again in the same dir resumes exactly there. SIGTERM / SIGUSR2 (SLURM preemption) stops at the
next iteration boundary after a checkpoint, handing the signal on to submitit's requeue.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from metamanip.atomic import atomic_write_text
from metamanip.evaluation.protocol import EpisodeSpec
from metamanip.models.action_dist import GaussianActionHead
from metamanip.rl.rollout import CRITIC_EXTRA, RolloutCollector, Trajectory, bare_step_seconds
from metamanip.training import checkpointing
from metamanip.training.preemption import Preempted, StopSignals

log = logging.getLogger(__name__)

LOG_COLUMNS = ("iteration", "env_steps", "episodes", "rollout_reward", "success_by_trial", "phase",
               "loss_objective", "loss_critic", "kl_approx", "clip_fraction", "explained_variance", "std", "lr",
               "env_busy",
               "epochs", "rollout_s", "update_s", "env_steps_per_s")


class Critic(nn.Module):
    """V(step feature, trial index, place in trial): an MLP head separate from the actor."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (256, 256), detach: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features + CRITIC_EXTRA
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.detach = detach

    def forward(self, features: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        if self.detach:
            features = features.detach()
        return self.net(torch.cat([features, extra.to(features.dtype)], dim=-1))


class _Actor(nn.Module):
    """The policy + head as the module torchrl's loss asks its distribution from."""

    in_keys = ["windows", "lengths"]
    out_keys = ["action"]

    def __init__(self, policy: nn.Module, head: GaussianActionHead) -> None:
        super().__init__()
        self.policy, self.head = policy, head

    def get_dist(self, td: Any) -> Any:
        return self.head(*self.policy.action_params(td["windows"], td["lengths"]))


class _CriticModule(nn.Module):
    in_keys = ["critic_feat", "critic_extra"]
    out_keys = ["state_value"]

    def __init__(self, critic: Critic) -> None:
        super().__init__()
        self.critic = critic

    def forward(self, td: Any) -> Any:
        td.set("state_value", self.critic(td["critic_feat"], td["critic_extra"]))
        return td


def check_policy(policy: nn.Module) -> None:
    """Refuse, before any env starts, a policy whose decoder gives no continuous action to put a
    distribution on (diffusion samples its actions, discrete reads them off token logits)."""
    from metamanip.models.decoders.heads import ContinuousDecoder

    if not isinstance(getattr(policy, "decoder", None), ContinuousDecoder):
        raise ValueError(f"metamanip-rl fine-tunes policies with a continuous decoder (lstm, fc, gpt); this "
                         f"checkpoint's decoder is {type(getattr(policy, 'decoder', None)).__name__}: train the BC "
                         "policy with decoder=lstm, fc or gpt")


class PPOTrainer:
    """PPO on whole meta-episodes; see the module docstring. Built from `conf/rl/ppo.yaml`."""

    def __init__(self, iterations: int = 20, episodes_per_iter: int = 32, epochs: int = 4,
                 minibatch_size: int = 1024, lr: float = 1e-5, critic_lr: float = 1e-3, gamma: float = 0.995,
                 gae_lambda: float = 0.95, clip_epsilon: float = 0.1, target_kl: float | None = 0.02,
                 critic_coef: float = 0.5, critic_warmup_iters: int = 2, entropy_coef: float = 0.0,
                 max_grad_norm: float = 1.0, init_std: float = 0.03, min_std: float = 0.005, learn_std: bool = True,
                 critic_hidden: Sequence[int] = (256, 256), critic_detach: bool = True,
                 normalize_advantage: bool = True, num_workers: int = 2, envs_per_worker: int = 8,
                 device: str = "cpu", save_every_iters: int = 1, bare_rounds: int = 100, seed: int = 0,
                 resume: bool = True, split: str = "train", feedback: str = "train",
                 time_limit_min: float | None = None, lr_schedule: str = "adaptive",
                 lr_range: Sequence[float] = (1e-6, 1e-4)) -> None:
        checks = {"rl.iterations": iterations >= 0, "rl.episodes_per_iter": episodes_per_iter >= 1,
                  "rl.epochs": epochs >= 1, "rl.minibatch_size": minibatch_size >= 1, "rl.lr": lr >= 0,
                  "rl.critic_lr": critic_lr > 0, "rl.gamma": 0 < gamma <= 1, "rl.gae_lambda": 0 <= gae_lambda <= 1,
                  "rl.clip_epsilon": clip_epsilon > 0, "rl.num_workers": num_workers >= 1,
                  "rl.envs_per_worker": envs_per_worker >= 1, "rl.save_every_iters": save_every_iters >= 1,
                  "rl.critic_warmup_iters": critic_warmup_iters >= 0, "rl.entropy_coef": entropy_coef >= 0}
        checks["rl.split (train | heldout)"] = split in ("train", "heldout")
        checks["rl.feedback (train | alt)"] = feedback in ("train", "alt")
        checks["rl.lr_schedule (fixed | adaptive)"] = lr_schedule in ("fixed", "adaptive")
        checks["rl.lr_range ([min, max] around rl.lr)"] = (len(lr_range) == 2 and 0 < lr_range[0] <= lr <= lr_range[1])
        checks["rl.target_kl (adaptive lr needs it)"] = lr_schedule == "fixed" or target_kl is not None
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid PPO settings: {', '.join(bad)} (see conf/rl/ppo.yaml for the allowed ranges)")
        self.iterations, self.episodes_per_iter, self.epochs = iterations, episodes_per_iter, epochs
        self.minibatch_size, self.lr, self.critic_lr = minibatch_size, lr, critic_lr
        self.gamma, self.gae_lambda, self.clip_epsilon, self.target_kl = gamma, gae_lambda, clip_epsilon, target_kl
        self.critic_coef, self.critic_warmup_iters, self.entropy_coef = critic_coef, critic_warmup_iters, entropy_coef
        self.max_grad_norm = max_grad_norm
        self.init_std, self.min_std, self.learn_std = init_std, min_std, learn_std
        self.critic_hidden, self.critic_detach = list(critic_hidden), critic_detach
        self.normalize_advantage = normalize_advantage
        self.num_workers, self.envs_per_worker, self.device_name = num_workers, envs_per_worker, device
        self.save_every_iters, self.bare_rounds, self.seed, self.resume = save_every_iters, bare_rounds, seed, resume
        self.split, self.feedback = split, feedback
        self.time_limit_min = time_limit_min
        self.lr_schedule, self.lr_range = lr_schedule, (float(lr_range[0]), float(lr_range[1]))

    # ------------------------------------------------------------------ pieces
    def build_heads(self, policy: nn.Module, feature_dim: int) -> tuple[GaussianActionHead, Critic]:
        head = GaussianActionHead(self.init_std, self.min_std, self.learn_std)
        critic = Critic(feature_dim, self.critic_hidden, self.critic_detach)
        return head, critic

    def _loss(self, actor: _Actor, critic: _CriticModule) -> Any:
        from torchrl.objectives import ClipPPOLoss

        loss = ClipPPOLoss(actor, critic, clip_epsilon=self.clip_epsilon, entropy_bonus=self.entropy_coef > 0,
                           entropy_coeff=self.entropy_coef if self.entropy_coef > 0 else None,
                           critic_coeff=self.critic_coef, loss_critic_type="l2",
                           normalize_advantage=self.normalize_advantage, functional=False)
        loss.set_keys(sample_log_prob="sample_log_prob", action="action", value="state_value",
                      advantage="advantage", value_target="value_target")
        return loss

    def advantages(self, traj: Trajectory) -> tuple[np.ndarray, np.ndarray]:
        """GAE advantages and value targets of one whole episode (terminal after its last step)."""
        from torchrl.objectives.value.functional import generalized_advantage_estimate

        v = torch.as_tensor(traj.values, dtype=torch.float32)[:, None]
        nxt = torch.cat([v[1:], torch.zeros(1, 1)])
        r = torch.as_tensor(traj.rewards, dtype=torch.float32)[:, None]
        done = torch.zeros_like(r, dtype=torch.bool)
        done[-1] = True
        adv, target = generalized_advantage_estimate(self.gamma, self.gae_lambda, v, nxt, r, done, done)
        return adv[:, 0].numpy(), target[:, 0].numpy()

    # ------------------------------------------------------------------ run
    def fit(self, policy: nn.Module, *, env_factory: Callable[[], Any], plan: Callable[[int], list[EpisodeSpec]],
            num_objs: int, num_trials: int, trial_steps: int, output_dir: str | Path,
            logger: Any = None, run_config: dict[str, Any] | None = None,
            policy_payload: Callable[[nn.Module], dict[str, Any]],
            policy_restore: Callable[[nn.Module, dict[str, Any]], None],
            on_checkpoint: Callable[[Path], None] | None = None) -> dict[str, Any]:
        """Fine-tune `policy` for `iterations`; `plan(i)` gives iteration i's episode specs. Returns the
        run's figures (also the last row of `rl_log.csv`)."""
        from metamanip.evaluation.workers import EnvWorkerPool
        from metamanip.training.loggers import NoLogger

        check_policy(policy)
        logger = logger or NoLogger()
        out = Path(output_dir)
        ckpt_dir = out / "checkpoints"
        device = torch.device(self.device_name)
        policy.to(device).eval()   # no dropout: the update recomputes exactly the rollout's distribution
        feature_dim = int(policy.feature_dim)
        head, critic = self.build_heads(policy, feature_dim)
        head.to(device), critic.to(device)
        actor_params = [p for p in policy.parameters() if p.requires_grad] + [p for p in head.parameters()
                                                                             if p.requires_grad]
        actor_opt = torch.optim.Adam(actor_params, lr=self.lr, eps=1e-5)
        critic_opt = torch.optim.Adam(critic.parameters(), lr=self.critic_lr, eps=1e-5)
        gen = torch.Generator(device="cpu").manual_seed(self.seed * 7919 + 17)
        iteration, env_steps, rows, resume_id, bare = 0, 0, [], None, None
        resume_path = checkpointing.find_resume_checkpoint(ckpt_dir) if self.resume else None
        if resume_path is not None:
            state = checkpointing.load_checkpoint(resume_path)
            if "rl" not in state:
                raise ValueError(f"{resume_path} is a behaviour-cloning checkpoint, not an RL one; point ckpt= at "
                                 "it and give the RL run its own output dir")
            policy_restore(policy, state["policy"]["state_dict"])
            head.load_state_dict(state["rl"]["head"])
            critic.load_state_dict(state["rl"]["critic"])
            actor_opt.load_state_dict(state["rl"]["actor_opt"])
            critic_opt.load_state_dict(state["rl"]["critic_opt"])
            iteration, env_steps = int(state["rl"]["iteration"]), int(state["rl"]["env_steps"])
            rows = list(state["rl"]["rows"])
            bare = state["rl"].get("bare_step_s")
            checkpointing.restore_rng(state["rng"])
            gen.set_state(state["rl"]["generator"])
            resume_id = state.get("logger_id")
            log.info("resumed from %s at iteration %d/%d (%d env steps)", resume_path, iteration,
                     self.iterations, env_steps)
        loss_fn = self._loss(_Actor(policy, head), _CriticModule(critic))
        logger.start(out, run_config or {}, run_id=resume_id, enabled=True)
        stop = StopSignals().install()
        figures: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            if iteration < self.iterations:  # a finished run (run again) only reports
                with EnvWorkerPool(env_factory, self.num_workers, envs_per_worker=self.envs_per_worker) as pool:
                    collector = RolloutCollector(pool, policy, head, critic, num_objs=num_objs, num_trials=num_trials,
                                                 trial_steps=trial_steps, feedback=self.feedback, generator=gen)
                    if bare is None and self.bare_rounds:
                        bare = bare_step_seconds(pool, plan(0), self.bare_rounds, seed=self.seed)
                    while iteration < self.iterations:
                        if self.time_limit_min is not None and time.perf_counter() - started > 60 * self.time_limit_min:
                            log.info("rl.time_limit_min=%g reached after %d iterations: stopping here",
                                     self.time_limit_min, iteration)
                            self._save(ckpt_dir, policy, head, critic, actor_opt, critic_opt, iteration, env_steps,
                                       rows, gen, run_config, logger, policy_payload, bare)
                            break
                        specs = plan(iteration)
                        t0 = time.perf_counter()
                        rounds0 = collector.rounds
                        trajs = collector.collect(specs)
                        rollout_s = time.perf_counter() - t0
                        steps = sum(len(t) for t in trajs)
                        env_steps += steps
                        t1 = time.perf_counter()
                        stats = self.update(policy, head, critic, loss_fn, actor_opt, critic_opt, trajs, gen,
                                            actor_phase=iteration >= self.critic_warmup_iters)
                        update_s = time.perf_counter() - t1
                        stats["env_busy"] = round(sum(len(t) for t in trajs) /
                                                  max((collector.rounds - rounds0) * len(collector.slots), 1), 4)
                        iteration += 1
                        row = self._row(iteration, env_steps, trajs, num_trials, stats, head, rollout_s, update_s, steps)
                        rows.append(row)
                        log.info("rl iteration %d/%d: %d env steps, rollout reward %.3f, success by trial %s, kl %.4f, "
                                 "std %.3f (%.0f env steps/s)", iteration, self.iterations, env_steps,
                                 row["rollout_reward"], row["success_by_trial"], row["kl_approx"], row["std"],
                                 row["env_steps_per_s"])
                        logger.log({f"rl/{k}": v for k, v in row.items() if isinstance(v, (int, float))}, step=iteration)
                        self._write_log(out, rows)
                        if iteration % self.save_every_iters == 0 or iteration == self.iterations or stop.requested:
                            path = self._save(ckpt_dir, policy, head, critic, actor_opt, critic_opt, iteration,
                                              env_steps, rows, gen, run_config, logger, policy_payload, bare)
                            if on_checkpoint is not None:
                                on_checkpoint(path)
                        if stop.requested and iteration < self.iterations:
                            signum = stop.signum
                            logger.finish(exit_code=1)
                            stop.forward()
                            raise Preempted(int(signum or 15), iteration, str(ckpt_dir / checkpointing.LAST))
            if not (ckpt_dir / checkpointing.LAST).is_file():  # iterations=0: the BC weights as an RL run
                self._save(ckpt_dir, policy, head, critic, actor_opt, critic_opt, iteration, env_steps, rows,
                           gen, run_config, logger, policy_payload, bare)
            figures = self.figures(rows, iteration, env_steps, bare)
        finally:
            stop.uninstall()
        logger.finish(summary=figures, exit_code=0)
        return figures

    # ------------------------------------------------------------------ update
    def update(self, policy: nn.Module, head: GaussianActionHead, critic: Critic, loss_fn: Any,
               actor_opt: torch.optim.Optimizer, critic_opt: torch.optim.Optimizer, trajs: list[Trajectory],
               gen: torch.Generator, actor_phase: bool) -> dict[str, float]:
        """PPO epochs over one batch of episodes; `actor_phase=False` fits the critic alone (warm-up)."""
        flat = flatten(trajs, self)
        n = flat["n"]
        stats: dict[str, list[float]] = {k: [] for k in ("loss_objective", "loss_critic", "kl_approx",
                                                         "clip_fraction", "explained_variance")}
        epochs_run, kl, stopped = 0, 0.0, False
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=gen)
            for mb in perm.split(self.minibatch_size):
                td = self.minibatch(policy, flat, mb)
                out = loss_fn(td)
                kl = float(out["kl_approx"])
                if actor_phase and self.target_kl is not None and kl > 1.5 * self.target_kl:
                    stopped = True  # the policy moved far enough from the rollout's: no step on this minibatch
                    break
                loss = out["loss_critic"]
                if actor_phase:
                    loss = loss + out["loss_objective"]
                    if "loss_entropy" in out.keys():
                        loss = loss + out["loss_entropy"]
                actor_opt.zero_grad(set_to_none=True)
                critic_opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(critic.parameters(), self.max_grad_norm)
                critic_opt.step()
                if actor_phase:
                    params = [p for g in actor_opt.param_groups for p in g["params"]]
                    torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                    actor_opt.step()
                for k in stats:
                    if k in out.keys():
                        stats[k].append(float(out[k].detach().float().mean()))
            epochs_run += 1
            if stopped:
                log.info("approximate KL %.4f > 1.5 x rl.target_kl=%g in epoch %d: stopping this update", kl,
                         self.target_kl, epochs_run)
                break
        if actor_phase:
            self.adapt_lr(actor_opt, kl)
        stats["kl_approx"] = [kl]  # how far this update moved the policy from the rollout's
        result = {k: (float(np.mean(v)) if v else float("nan")) for k, v in stats.items()}
        result["epochs"] = epochs_run
        result["lr"] = float(actor_opt.param_groups[0]["lr"])
        result["phase"] = "ppo" if actor_phase else "critic_warmup"
        return result

    def adapt_lr(self, opt: torch.optim.Optimizer, kl: float) -> None:
        """`rl.lr_schedule=adaptive`, after each update: divide the actor's learning rate by 1.5 when the
        update's approximate KL to the rollout policy passed 2 × target_kl, multiply it by 1.5 when it
        stayed below target_kl / 2, within `rl.lr_range`. The rate lives in the optimiser's state, so it
        resumes with the run."""
        if self.lr_schedule != "adaptive" or self.target_kl is None:
            return
        for group in opt.param_groups:
            if kl > 2.0 * self.target_kl:
                group["lr"] = max(group["lr"] / 1.5, self.lr_range[0])
            elif 0.0 <= kl < 0.5 * self.target_kl:
                group["lr"] = min(group["lr"] * 1.5, self.lr_range[1])

    @staticmethod
    def minibatch(policy: nn.Module, flat: dict[str, Any], mb: torch.Tensor) -> Any:
        """The loss's TensorDict for steps `mb` of a flattened batch: every step's history window is
        re-encoded with gradients (each distinct step and text once) and right-padded with zeros, as the
        rollout built it, so the fresh log-probability equals the rollout's before any update."""
        from tensordict import TensorDict

        device = policy.device
        offsets = torch.arange(int(policy.window_size))
        start = flat["window_start"][mb]
        lengths = mb - start + 1
        valid = offsets[None] < lengths[:, None]
        win = torch.where(valid, start[:, None] + offsets[None], mb[:, None])
        uniq, inv = torch.unique(win, return_inverse=True)
        sel = uniq.numpy()
        feats = policy.step_features({k: v[sel] for k, v in flat["obs"].items()}, [flat["texts"][i] for i in sel],
                                     text_cache={})
        windows = feats[inv.to(device)] * valid[..., None].to(device, feats.dtype)
        rows = torch.arange(len(mb), device=device)
        return TensorDict({
            "windows": windows, "lengths": lengths.to(device),
            "critic_feat": windows[rows, (lengths - 1).to(device)],
            "critic_extra": flat["critic_extra"][mb].to(device),
            "action": flat["actions"][mb].to(device),
            "sample_log_prob": flat["log_probs"][mb].to(device),
            "advantage": flat["advantages"][mb, None].to(device),
            "value_target": flat["targets"][mb, None].to(device),
            "state_value": flat["values"][mb, None].to(device),
        }, batch_size=[len(mb)])

    # ------------------------------------------------------------------ bookkeeping
    def _row(self, iteration: int, env_steps: int, trajs: list[Trajectory], num_trials: int, stats: dict[str, Any],
             head: GaussianActionHead, rollout_s: float, update_s: float, steps: int) -> dict[str, Any]:
        rewards = [float(t.rewards.sum()) for t in trajs]
        by_trial = [float(np.mean([1.0 if t.rows[k].reward > 0 else 0.0 for t in trajs])) for k in range(num_trials)]
        return {"iteration": iteration, "env_steps": env_steps, "episodes": len(trajs),
                "rollout_reward": round(float(np.mean(rewards)), 4),
                "success_by_trial": " ".join(f"{v:.3f}" for v in by_trial), "phase": stats["phase"],
                **{k: round(stats[k], 6) for k in ("loss_objective", "loss_critic", "kl_approx", "clip_fraction",
                                                   "explained_variance")},
                "std": round(float(head.std.detach().mean()), 5), "lr": stats["lr"], "env_busy": stats["env_busy"],
                "epochs": stats["epochs"],
                "rollout_s": round(rollout_s, 2), "update_s": round(update_s, 2),
                "env_steps_per_s": round(steps / rollout_s, 1) if rollout_s > 0 else 0.0}

    @staticmethod
    def figures(rows: list[dict[str, Any]], iteration: int, env_steps: int, bare: float | None) -> dict[str, Any]:
        """The run's figures from its log rows (so a resumed or finished run reports the whole run):
        rollout throughput, and its ratio to plain lockstep env stepping on the same workers and slots."""
        out: dict[str, Any] = {"iterations": iteration, "env_steps": env_steps, "env_steps_per_s": None,
                               "bare_env_steps_per_s": round(1.0 / bare, 2) if bare else None,
                               "rollout_overhead_ratio": None}
        if rows:
            seconds = sum(float(r["rollout_s"]) for r in rows)
            steps = int(rows[-1]["env_steps"])
            if seconds > 0:
                out["env_steps_per_s"] = round(steps / seconds, 2)
                if bare:
                    out["rollout_overhead_ratio"] = round(seconds / steps / bare, 3)
            out["rollout_reward"] = rows[-1]["rollout_reward"]
            out["first_rollout_reward"] = rows[0]["rollout_reward"]
        return out

    def _write_log(self, out: Path, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / "rl_log.csv", buf.getvalue())

    def _save(self, ckpt_dir: Path, policy: nn.Module, head: GaussianActionHead, critic: Critic,
              actor_opt: torch.optim.Optimizer, critic_opt: torch.optim.Optimizer, iteration: int, env_steps: int,
              rows: list[dict[str, Any]], gen: torch.Generator, run_config: dict[str, Any] | None, logger: Any,
              policy_payload: Callable[[nn.Module], dict[str, Any]], bare: float | None) -> Path:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = checkpointing.save_checkpoint(ckpt_dir / checkpointing.LAST, {
            "policy": policy_payload(policy), "config": run_config or {}, "step": iteration,
            "rng": checkpointing.capture_rng(), "logger_id": getattr(logger, "run_id", None),
            "rl": {"head": head.state_dict(), "critic": critic.state_dict(), "actor_opt": actor_opt.state_dict(),
                   "critic_opt": critic_opt.state_dict(), "iteration": iteration, "env_steps": env_steps,
                   "rows": rows, "generator": gen.get_state(), "bare_step_s": bare}})
        log.info("rl checkpoint at iteration %d -> %s", iteration, path)
        return path


def flatten(trajs: list[Trajectory], trainer: PPOTrainer) -> dict[str, Any]:
    """One flat batch of all episodes' steps, with per-episode GAE and global window starts."""
    obs: dict[str, list[np.ndarray]] = {}
    texts: list[str] = []
    starts, actions, logps, values, advs, targets, extras = [], [], [], [], [], [], []
    offset = 0
    for t in trajs:
        for k, v in t.obs.items():
            obs.setdefault(k, []).append(v)
        texts += t.texts
        starts.append(t.window_start + offset)
        actions.append(t.actions)
        logps.append(t.log_probs)
        values.append(t.values)
        extras.append(t.critic_extra)
        a, g = trainer.advantages(t)
        advs.append(a)
        targets.append(g)
        offset += len(t)
    cat = lambda xs: torch.as_tensor(np.concatenate(xs))  # noqa: E731
    return {"n": offset, "obs": {k: np.concatenate(v) for k, v in obs.items()}, "texts": texts,
            "window_start": cat(starts).long(), "actions": cat(actions).float(), "log_probs": cat(logps).float(),
            "values": cat(values).float(), "advantages": cat(advs).float(), "targets": cat(targets).float(),
            "critic_extra": cat(extras).float()}

