"""Protocol planning: which setting a config's env node is, its trial budget, the thesis protocol's
episode specs for a split, and the env node for a split, all read from the config without building an env.
`metamanip-eval`, the pipeline and the RL trainer plan their episodes through these."""
from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf, open_dict

from metamanip.evaluation.protocol import (COMBI, EXPLORE, EpisodeSpec, combi_episodes, explore_episodes,
                                           mark_videos)

SINGLE = "single_object"


def setting_of(env_cfg: Mapping[str, Any]) -> str:
    """explore | combi_explore | single_object, from the env node's `name` or its `_target_`."""
    name = str(env_cfg.get("name") or env_cfg.get("_target_", "")).rsplit(".", 1)[-1].lower()
    if "combi" in name:
        return COMBI
    if "single" in name:
        return SINGLE
    if "explore" in name:
        return EXPLORE
    raise ValueError(f"cannot tell the setting of env node {env_cfg.get('_target_')!r}: choose env=explore, "
                     "env=combi_explore or env=single_object")


def trial_budget_of(env_cfg: DictConfig) -> tuple[int, int]:
    """(num_trials, trial_steps) the setting will use, resolved the setting's way without building it."""
    from hydra.utils import get_class

    from metamanip.settings.meta_env import trial_budget

    cls = get_class(env_cfg._target_)
    plain = OmegaConf.to_container(env_cfg, resolve=True)
    return trial_budget(plain.get("num_trials"), plain.get("trial_steps"), plain.get("rollout_steps"),
                        cls.thesis_num_trials(plain), setting_of(env_cfg))


def protocol_specs(cfg: DictConfig) -> list[EpisodeSpec]:
    """The episodes of the thesis protocol for this config (split, num_resets, seed, videos)."""
    specs = plan_episodes(cfg.env, str(cfg.eval.split), int(cfg.eval.num_resets), int(cfg.seed))
    return mark_videos(specs, int(cfg.eval.videos))


def plan_episodes(env_cfg: DictConfig, split: str, num_resets: int, seed: int) -> list[EpisodeSpec]:
    """The protocol's episodes of `split` for the setting of `env_cfg`: `num_resets` per combination
    (Explore, single object) or rewarding pair (Combi), each with the seed its identity and `seed` fix."""
    from metamanip.settings.splits import combi_pairs, explore_pool

    setting = setting_of(env_cfg)
    num_trials, _ = trial_budget_of(env_cfg)
    if setting == COMBI:
        return combi_episodes(combi_pairs().pairs(split), num_resets, seed)
    if setting == SINGLE:
        from metamanip.settings.single_object import single_pool

        combos = single_pool(env_cfg.object).combinations(split)
        return explore_episodes(combos, num_resets, num_trials, seed, setting=SINGLE)
    pool = explore_pool(int(env_cfg.num_objs), bool(env_cfg.get("block_holdout", False)))
    return explore_episodes(pool.combinations(split), num_resets, num_trials, seed)


def num_objs_of(env_cfg: Mapping[str, Any]) -> int:
    """The objects-per-setting figure of the thesis tables: num_objs (Explore), 4 (Combi), 1 (single)."""
    setting = setting_of(env_cfg)
    return 4 if setting == COMBI else 1 if setting == SINGLE else int(env_cfg["num_objs"])


def env_for_split(env_cfg: DictConfig, split: str) -> DictConfig:
    """The env node with the evaluation split set (held-out paraphrase templates and combinations)."""
    node = env_cfg.copy()
    with open_dict(node):
        if "split" in node:
            node.split = split
    return node
