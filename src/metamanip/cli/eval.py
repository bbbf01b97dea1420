"""`metamanip-eval`: a trained policy or an oracle through the thesis evaluation protocol.

    metamanip-eval env=explore env.num_objs=5 eval.split=heldout eval.num_resets=30 ckpt=.../last.pt
    metamanip-eval env=combi_explore eval.agent=oracle oracle=scripted eval.num_workers=2

Writes trials.csv, summary.json, metrics.json (and videos/ with eval.videos=K) into the job dir and
prints the results table. A re-run into the same dir (hydra.run.dir=...) finishes an interrupted one.
"""
from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig, OmegaConf, open_dict

from metamanip.cli.entry import entry_point
from metamanip.cli.jobstate import job, objective
from metamanip.errors import CheckpointError  # noqa: F401  (raised here; its home is metamanip.errors)
from metamanip.evaluation.agents import OracleFactory, PolicyFactory, configure_exits
from metamanip.evaluation.evaluator import evaluate
from metamanip.evaluation.metrics import metrics_from_summary
from metamanip.evaluation.plan import (SINGLE, env_for_split, num_objs_of, protocol_specs, setting_of,  # noqa: F401
                                       trial_budget_of)
from metamanip.evaluation.rollout import feedback_key
from metamanip.evaluation.workers import ConfigFactory

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"
AGENTS = ("policy", "oracle")


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(policy payload, training run config or None) of a policy or trainer checkpoint, without building
    the policy. The payload holds `config` (backbone, decoder, policy) and `state_dict`."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist: pass ckpt=<train job dir>/checkpoints/last.pt")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise CheckpointError(f"checkpoint {p} cannot be read ({type(e).__name__}: {e}); it may be truncated "
                              "or not a metamanip checkpoint") from e
    payload = blob.get("policy", blob) if isinstance(blob, dict) else None
    if not isinstance(payload, dict) or not payload.get("config") or "state_dict" not in payload:
        raise CheckpointError(f"checkpoint {p} holds no policy (expected 'config' and 'state_dict', or a trainer "
                              "checkpoint with them under 'policy')")
    run_cfg = blob.get("config") if "policy" in blob and isinstance(blob.get("config"), dict) else None
    return {**payload, "config": _plain(payload["config"])}, (_plain(run_cfg) if run_cfg else None)


def _plain(cfg: Any) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)


def check_checkpoint(path: str | Path | None, cfg: DictConfig) -> dict[str, Any]:
    """The checkpoint's policy payload; refuses, before any env starts, a checkpoint that is missing,
    unreadable or trained for other inputs."""
    if path in (None, "", "???"):
        raise CheckpointError("eval.agent=policy needs ckpt=<path to a trained checkpoint> "
                              "(or evaluate an oracle: eval.agent=oracle oracle=scripted)")
    payload, run_cfg = read_checkpoint(path)
    problems = compatibility_problems(payload["config"], run_cfg, cfg)
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match this config: " + "; ".join(problems))
    return payload


def camera_sizes(sim_cfg: Mapping[str, Any] | None) -> dict[str, tuple[int, int]]:
    """{camera: (height, width)} a simulator config gives (defaults filled in, switched-off cameras left out)."""
    from metamanip.envs.playtable import DEFAULT_CAMERAS

    cams = (sim_cfg or {}).get("cameras")
    cams = DEFAULT_CAMERAS if cams is None else cams
    out = {}
    for name, spec in cams.items():
        if spec is None:
            continue
        merged = {**DEFAULT_CAMERAS.get(name, {}), **dict(spec)}
        out[name] = (int(merged["height"]), int(merged["width"]))
    return out


def compatibility_problems(ckpt_cfg: Mapping[str, Any], run_cfg: Mapping[str, Any] | None,
                           cfg: DictConfig) -> list[str]:
    """Why the policy of a checkpoint cannot be evaluated under `cfg` (empty when it can).

    `ckpt_cfg` is the policy config (backbone, decoder, policy); `run_cfg` the training job's config when
    the checkpoint is a trainer checkpoint (it knows the camera sizes the policy was trained on).
    """
    problems = []
    pol = dict(ckpt_cfg.get("policy") or {})
    use_gripper = pol.get("use_gripper", (ckpt_cfg.get("backbone") or {}).get("use_gripper", True))
    reads = ("static", "gripper") if use_gripper else ("static",)
    if "rgb" not in str(pol.get("obs", "rgb")):
        reads = ()  # a state policy reads robot_obs / scene_obs, which every env gives
    plain = OmegaConf.to_container(cfg.env, resolve=True)
    have = camera_sizes(plain.get("sim"))
    trained = camera_sizes(((run_cfg or {}).get("env") or {}).get("sim")) if run_cfg else None
    for cam in reads:
        if cam not in have:
            problems.append(f"the policy reads the {cam} camera but env.sim.cameras.{cam} is off "
                            f"(turn it on, or evaluate a checkpoint trained without it)")
        elif trained is not None and cam in trained and trained[cam] != have[cam]:
            h, w = trained[cam]
            problems.append(f"the policy was trained on {cam} images of {h}x{w} but env.sim.cameras.{cam} gives "
                            f"{have[cam][0]}x{have[cam][1]} (set env.sim.cameras.{cam}.height={h} "
                            f"env.sim.cameras.{cam}.width={w})")
    want_window = (cfg.get("policy") or {}).get("window_size") if "policy" in cfg else None
    if want_window is not None and pol.get("window_size") is not None and int(want_window) != int(pol["window_size"]):
        problems.append(f"the checkpoint's policy has window_size={pol['window_size']} but this config sets "
                        f"policy.window_size={want_window} (drop the override or use a matching checkpoint)")
    return problems


def chunk_overrides(e: DictConfig) -> dict[str, Any]:
    """`eval.chunk_execution` / `eval.ensemble_weight` (null: the checkpoint's) as decoder options: how a
    chunked policy plays its chunks here; a policy without chunks ignores them."""
    out: dict[str, Any] = {}
    if e.get("chunk_execution") is not None:
        out["execution"] = str(e.chunk_execution)
    if e.get("ensemble_weight") is not None:
        out["ensemble_weight"] = float(e.ensemble_weight)
    return out


def run(cfg: DictConfig) -> dict[str, float]:
    """Evaluate in `cfg.paths.output_dir`; returns the metrics (also written to metrics.json)."""
    e = cfg.eval
    if e.agent not in AGENTS:
        raise ValueError(f"eval.agent must be one of {list(AGENTS)}, got {e.agent!r}")
    if e.split not in ("heldout", "train"):
        raise ValueError(f"eval.split must be 'heldout' or 'train', got {e.split!r}")
    feedback_key(e.feedback)
    setting = setting_of(cfg.env)
    policy = agent_factory = None
    with job(cfg) as out:
        payload = check_checkpoint(cfg.get("ckpt"), cfg) if e.agent == "policy" else None  # before any env
        ckpt_cfg = payload["config"] if payload else None
        if int(e.videos) > 0 and not camera_sizes(OmegaConf.to_container(cfg.env, resolve=True).get("sim")):
            raise ValueError(f"eval.videos={e.videos} needs a camera, but env.sim.cameras has none on; turn "
                             "env.sim.cameras.static on or set eval.videos=0")
        specs = protocol_specs(cfg)
        device = None
        if payload is not None:
            from metamanip.models.checkpoint import load_policy
        if payload is not None and e.get("policy_in_workers", False):
            if str(e.get("device", "cpu")) != "cpu":
                raise ValueError("eval.policy_in_workers=true runs a policy copy in every env worker on the CPU; "
                                 "set eval.device=cpu or eval.policy_in_workers=false (batched on the device)")
            budget = OmegaConf.to_container(e.early_exit, resolve=True) if e.get("early_exit") else None
            configure_exits(load_policy(payload), budget)  # a bad budget fails here, not in the workers
            agent_factory = PolicyFactory(str(cfg.ckpt), e.feedback, decoder_overrides=chunk_overrides(e),
                                          early_exit=budget)
        elif payload is not None:
            from metamanip.models.chunking import with_chunk_execution

            device = str(e.get("device", "cpu"))
            policy = load_policy(with_chunk_execution(payload, chunk_overrides(e))).to(device)
            configure_exits(policy, OmegaConf.to_container(e.early_exit, resolve=True) if e.get("early_exit") else None)
        else:
            agent_factory = OracleFactory(OmegaConf.to_container(cfg.oracle, resolve=True))
        num_trials, trial_steps = trial_budget_of(cfg.env)
        with cores_shared(int(e.num_workers)) if device == "cpu" else nullcontext():
            summary = evaluate(
                specs, env_factory=ConfigFactory(env_for_split(cfg.env, e.split)), out_dir=out,
                num_objs=num_objs_of(cfg.env), num_trials=num_trials, trial_steps=trial_steps,
                num_workers=int(e.num_workers), policy=policy, agent_factory=agent_factory,
                feedback=e.feedback, config=run_choices(cfg, setting, ckpt_cfg),
                progress=bool(e.get("progress", True)))
    return metrics_from_summary(summary)


@contextmanager
def cores_shared(num_workers: int) -> Iterator[int]:
    """Leave one core per env worker while evaluating: torch in this process gets the rest (at least one
    thread); the previous thread count is restored after. Oversubscribed cores make batched CPU inference
    many times slower than one thread."""
    import torch

    before = torch.get_num_threads()
    threads = max(1, (os.cpu_count() or 1) - num_workers)
    torch.set_num_threads(threads)
    log.info("policy inference on %d CPU thread(s), %d env worker(s)", threads, num_workers)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def run_choices(cfg: DictConfig, setting: str, ckpt_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config choices recorded in summary.json (the results tables group by them)."""
    e = cfg.eval
    if e.agent == "policy":
        agent = "policy"
    else:
        oracle = _choice("oracle") or _name_of(OmegaConf.to_container(cfg.oracle).get("decider")) or "oracle"
        agent = f"oracle/{oracle}"
    num_trials, trial_steps = trial_budget_of(cfg.env)
    out = {"setting": setting, "num_objs": num_objs_of(cfg.env), "split": e.split,
           "feedback": e.feedback, "agent": agent, "num_trials": num_trials,
           "trial_steps": trial_steps, "num_resets": int(e.num_resets), "seed": int(cfg.seed),
           "trial_limits": _choice("trial_limits")}
    if ckpt_cfg is not None:
        out["ckpt"] = str(cfg.ckpt)
        out["backbone"] = _choice("backbone") or (ckpt_cfg.get("backbone") or {}).get("name")
        out["decoder"] = _choice("decoder") or _name_of(ckpt_cfg.get("decoder"))
        if e.get("early_exit"):
            out["early_exit"] = OmegaConf.to_container(e.early_exit, resolve=True)
    return out


def _name_of(node: Any) -> str | None:
    """'lstm' for a node whose _target_ is ...LSTMDecoder, 'scripted' for ...ScriptedDecider."""
    if not isinstance(node, Mapping):
        return None
    if node.get("name"):
        return str(node["name"])
    cls = str(node.get("_target_", "")).rsplit(".", 1)[-1]
    return cls.lower().removesuffix("decoder").removesuffix("decider") or None


def _choice(group: str) -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get(group)
    except (ValueError, AttributeError):
        return None


def format_table(summary: Mapping[str, Any]) -> str:
    """The results table: one row per combination or pair, then the overall row."""
    head = ["group", "episodes", "total", "avg_reward", "found", "ep_len", "success by trial"]
    rows = []
    for name, g in list(summary["groups"].items()) + [("overall", summary)]:
        rows.append([name, str(g["episodes"]), f"{g['total_reward']:.0f}", f"{g['average_reward']:.2f}",
                     f"{g['ratio_reward_found']:.2f}", f"{g['episode_length']:.1f}",
                     " ".join(f"{v:.2f}" for v in g["success_by_trial"])])
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    sep = "-" * len(line(head))
    return "\n".join([line(head), sep, *map(line, rows[:-1]), sep, line(rows[-1])])


@entry_point("eval")
def main(cfg: DictConfig) -> float | None:
    metrics = run(cfg)
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    print(format_table(summary))
    return objective(cfg, metrics)


if __name__ == "__main__":
    main()
