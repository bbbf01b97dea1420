"""What values the config tree allows, registered once and checked on every composed config.

`check_config(cfg)` runs before an entry point's job body and, in a multirun, on every element of the sweep
before any job is launched (`metamanip.cli.entry`). Each `Rule` names a dotted key of the config, what is
allowed there and how to fix a bad value; a key a config does not have is not checked (collect has no
`trainer`, eval no `data`). The allowed sets come from the modules that own them where one exists
(`settings.splits.EXPLORE_NUM_OBJS`, `training.trainer.PRECISIONS`, ...; `tests/workbench` pins that they
agree), so a new choice is added in one place. A new rule is one line in `RULES`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from metamanip.errors import ConfigValueError

# owned by the layers (kept here as literals so composing never imports torch; the test suite checks them)
EXPLORE_NUM_OBJS = (3, 5, 7)                      # settings.splits.EXPLORE_NUM_OBJS
PRECISIONS = ("fp32", "bf16", "fp16")             # training.trainer.PRECISIONS
SCHEDULERS = ("constant", "cosine", "linear")     # training.schedule
SPLITS = ("train", "heldout")                     # settings.splits
FEEDBACK_KEYS = ("train_feedback", "alt_feedback", "lm_feedback")
EVAL_AGENTS = ("policy", "oracle")                # cli.eval.AGENTS
EVAL_FEEDBACK = ("train", "alt")
POLICY_OBS = ("rgb", "state", "rgb+state")
TEXT_INPUTS = ("trial", "first_trial")
FUSION_MODES = ("post", "pre")
CHUNK_EXECUTIONS = ("open_loop", "ensemble", "first")  # models.decoders.heads.CHUNK_EXECUTIONS
RENDER_MODES = ("live", "later")
IMAGE_CODECS = ("lzma", "gzip")
DEVICES = ("auto", "cpu", "cuda")
# keys the entry point gives a decoder itself (models.policy.build_policy)
DECODER_INJECTED = ("in_features", "window_size")


@dataclass(frozen=True)
class Rule:
    """`key` must satisfy `allowed` (a tuple of values, or a predicate); `fix` says what to do instead;
    `when(cfg)` limits the rule to some configs (e.g. Explore only)."""

    key: str
    allowed: Sequence[Any] | Callable[[Any], bool]
    fix: str
    when: Callable[[DictConfig], bool] | None = None

    def problem(self, cfg: DictConfig) -> str | None:
        if self.when is not None and not self.when(cfg):
            return None
        try:
            value = OmegaConf.select(cfg, self.key, default=_ABSENT, throw_on_missing=True)
        except Exception:  # noqa: BLE001  (??? or a Hydra-only interpolation: the job reports it)
            return None
        if value is _ABSENT:
            return None
        ok = self.allowed(value) if callable(self.allowed) else value in self.allowed
        if ok:
            return None
        if callable(self.allowed):
            return f"{self.key}={value!r} is not allowed; {self.fix}"
        return f"{self.key}={value!r} is not one of {', '.join(map(str, self.allowed))}; {self.fix}"


_ABSENT = object()


def _is_explore(cfg: DictConfig) -> bool:
    return str(OmegaConf.select(cfg, "env.name", default="")) == "explore"


def _int_at_least(n: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= n


def _number(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return hi is None or v <= hi
    return ok


def _device(v: Any) -> bool:
    return isinstance(v, str) and (v in DEVICES or (v.startswith("cuda:") and v[5:].isdigit()))


RULES: tuple[Rule, ...] = (
    Rule("env.num_objs", EXPLORE_NUM_OBJS, "the Explore pools exist for 3, 5 and 7 objects (env.num_objs=5)",
         when=_is_explore),
    Rule("env.split", SPLITS, "use env.split=train or env.split=heldout"),
    Rule("env.num_trials", lambda v: v is None or _int_at_least(2)(v), "a meta-episode needs at least 2 trials "
         "(null: the thesis value)"),
    Rule("env.rollout_steps", _int_at_least(1), "give a positive step budget"),
    Rule("env.trial_steps", lambda v: v is None or _int_at_least(1)(v), "give a positive number or null"),
    Rule("trainer.precision", PRECISIONS, "fp16 trains with a gradient scaler, bf16 needs a GPU that has it"),
    Rule("trainer.scheduler", SCHEDULERS, "choose the lr schedule after warmup"),
    Rule("trainer.lr", _number(0, lo_open=True), "the learning rate must be a positive number (e.g. 1e-4)"),
    Rule("trainer.weight_decay", _number(0), "use a weight decay >= 0"),
    Rule("trainer.batch_size", _int_at_least(1), "use a positive batch size"),
    Rule("trainer.grad_accum_steps", _int_at_least(1), "use 1 (no accumulation) or more micro-batches"),
    Rule("trainer.max_steps", _int_at_least(0), "use a number of optimizer steps >= 0 (0: trainer.max_epochs)"),
    Rule("trainer.max_epochs", _number(0), "use a number of passes >= 0"),
    Rule("trainer.warmup_steps", _int_at_least(0), "use a number of warmup steps >= 0"),
    Rule("trainer.num_workers", _int_at_least(0), "use 0 (load in the main process) or more DataLoader workers"),
    Rule("trainer.device", _device, "use auto, cpu, cuda or cuda:<index>"),
    Rule("data.feedback", FEEDBACK_KEYS, "the policy's text is one of the three stored feedback strings"),
    Rule("data.val_episodes", _number(0), "use a fraction (< 1) or a count (>= 1) of held-out episodes, 0: none"),
    Rule("data.stride", _int_at_least(1), "use a positive step between window starts"),
    Rule("policy.window_size", _int_at_least(1), "use a positive window (policy=tiny has 4)"),
    Rule("policy.obs", POLICY_OBS, "rgb: cameras, state: robot_obs + scene_obs, rgb+state: both"),
    Rule("policy.text_input", TEXT_INPUTS, "trial: the feedback in force, first_trial: the ablation"),
    Rule("policy.fusion_mode", FUSION_MODES, "RoboFlamingo's post (default) or pre fusion"),
    Rule("decoder.num_layers", _int_at_least(1), "a decoder needs at least one layer"),
    Rule("decoder.dropout", _number(0, 1), "use a dropout probability in [0, 1)"),
    Rule("decoder.n_bins", _int_at_least(2), "the discrete decoder needs at least 2 bins per dimension"),
    Rule("decoder.num_train_timesteps", _int_at_least(1), "use a positive number of diffusion steps"),
    Rule("decoder.fwd_pred_next_n", _int_at_least(1), "use 1 (one action per step) or a chunk of k > 1 actions"),
    Rule("decoder.execution", CHUNK_EXECUTIONS, "how chunks are played at inference (docs/DESIGN.md)"),
    Rule("decoder.ensemble_weight", _number(0), "ACT's m >= 0 (0: plain mean of the overlapping predictions)"),
    Rule("eval.chunk_execution", lambda v: v is None or v in CHUNK_EXECUTIONS,
         "null keeps the checkpoint's decoder.execution; else open_loop, ensemble or first"),
    Rule("eval.ensemble_weight", lambda v: v is None or _number(0)(v), "null keeps the checkpoint's; else >= 0"),
    Rule("eval.split", SPLITS, "heldout: the thesis' held-out combinations, train: the training ones"),
    Rule("eval.agent", EVAL_AGENTS, "policy (with ckpt=...) or oracle (with oracle=scripted|llm)"),
    Rule("eval.feedback", EVAL_FEEDBACK, "train: the training feedback strings, alt: the paraphrases"),
    Rule("eval.num_resets", _int_at_least(1), "evaluate at least one episode per combination"),
    Rule("eval.num_workers", _int_at_least(1), "use at least one env worker"),
    Rule("rl.split", SPLITS, "train: the training combinations (or pairs), heldout: the held-out ones"),
    Rule("rl.feedback", EVAL_FEEDBACK, "train: the training feedback strings, alt: the paraphrases"),
    Rule("rl.lr_schedule", ("fixed", "adaptive"), "adaptive: follow rl.target_kl, fixed: keep rl.lr"),
    Rule("rl.episodes_per_iter", _int_at_least(1), "roll out at least one whole episode per iteration"),
    Rule("rl.num_workers", _int_at_least(1), "use at least one env worker"),
    Rule("rl.envs_per_worker", _int_at_least(1), "give every worker at least one env"),
    Rule("rl.iterations", _int_at_least(0), "0 (only evaluate the BC policy) or more iterations"),
    Rule("rl.lr", _number(0, lo_open=True), "a positive actor learning rate (FLaRe: small, e.g. 1e-5)"),
    Rule("rl.clip_epsilon", _number(0, lo_open=True), "a positive PPO clip range, e.g. 0.1"),
    Rule("rl.gamma", _number(0, 1, lo_open=True), "a discount in (0, 1], e.g. 0.995"),
    Rule("rl.init_std", _number(0, lo_open=True), "a positive arm noise std, e.g. 0.03"),
    Rule("collect.episodes", _int_at_least(1), "collect at least one episode"),
    Rule("collect.num_shards", _int_at_least(1), "use 1 (one writer) or more shards"),
    Rule("collect.shard", lambda v: v is None or _int_at_least(0)(v), "shards are numbered 0..num_shards-1"),
    Rule("collect.render", RENDER_MODES, "live: images while collecting, later: states only, then "
         "metamanip-render"),
    Rule("collect.image_codec", IMAGE_CODECS, "lzma: smallest, gzip: plain HDF5 any tool reads"),
    Rule("collect.max_attempts", _int_at_least(1), "give each episode at least one attempt"),
    Rule("hydra.launcher.timeout_min", _number(0, lo_open=True), "give jobs a positive time limit in minutes"),
    Rule("hydra.launcher.max_parallel", lambda v: v is None or _int_at_least(1)(v),
         "use a positive number of jobs at once, or null for the whole batch"),
)


def _shard_problem(cfg: DictConfig) -> str | None:
    shard = OmegaConf.select(cfg, "collect.shard", default=None)
    n = OmegaConf.select(cfg, "collect.num_shards", default=None)
    if isinstance(shard, int) and isinstance(n, int) and n >= 1 and shard >= n:
        return (f"collect.shard={shard} with collect.num_shards={n}; shards are numbered 0..{n - 1} "
                f"(collect.shard=0,...,{n - 1} collect.num_shards={n})")
    return None


def _decoder_problem(cfg: DictConfig) -> str | None:
    """A decoder key its class does not take (a typo such as `+decoder.hiden_size=64`)."""
    node = OmegaConf.select(cfg, "decoder", default=None)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return None
    from hydra.utils import get_object

    try:
        target = get_object(str(node._target_))
        params = inspect.signature(target).parameters
    except Exception as e:  # noqa: BLE001  (an unimportable target is reported by name)
        return f"decoder._target_={node._target_!r} cannot be imported ({e}); choose decoder=lstm|fc|gpt|diffusion|discrete"
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    unknown = sorted(k for k in node if not str(k).startswith("_") and k not in params)
    injected = sorted(k for k in node if k in DECODER_INJECTED)
    if unknown:
        takes = sorted(k for k in params if k not in ("self", *DECODER_INJECTED))
        return (f"decoder option(s) {', '.join(unknown)} are not taken by {node._target_}; it takes "
                f"{', '.join(takes)}")
    if injected:
        return f"decoder.{injected[0]} is set by the policy (LM width, policy.window_size); drop it"
    return None


def _launcher_problem(cfg: DictConfig) -> str | None:
    node = OmegaConf.select(cfg, "hydra.launcher", default=None)
    if not isinstance(node, DictConfig) or not str(node.get("_target_", "")).endswith("metamanip.launchers.LocalLauncher"):
        return None
    from hydra_plugins.metamanip.launchers import slurm_keys_problem

    return slurm_keys_problem(OmegaConf.to_container(node, resolve=False))


CROSS_CHECKS: tuple[Callable[[DictConfig], str | None], ...] = (_shard_problem, _decoder_problem,
                                                                _launcher_problem)


def problems(cfg: DictConfig) -> list[str]:
    """Every problem of `cfg` (empty when it is fine)."""
    found = [p for rule in RULES if (p := rule.problem(cfg))]
    found += [p for check in CROSS_CHECKS if (p := check(cfg))]
    return found


def check_config(cfg: DictConfig) -> None:
    """Raise `ConfigValueError` naming every bad value of `cfg`, before any work starts."""
    found = problems(cfg)
    if found:
        more = f" (and {len(found) - 1} more: {' | '.join(found[1:])})" if len(found) > 1 else ""
        raise ConfigValueError(found[0] + more)
