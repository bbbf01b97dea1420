"""Print what an `env` config selects: object pool, tracked tasks, both splits, trial budget.

    python -m metamanip.settings.describe env=explore env.num_objs=7
    python -m metamanip.settings.describe env=combi_explore

Composes the project's `conf/` with Hydra (the simulator is not built). The last line is JSON
`{"train": int, "heldout": int, "tasks": int}` for scripts.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from metamanip.settings.meta_env import trial_budget

PRIMARY = "settings_describe"


def conf_dir() -> Path:
    """The project's conf/ (METAMANIP_ROOT/conf when set, else next to the source tree)."""
    root = os.environ.get("METAMANIP_ROOT")
    candidates = [Path(root) / "conf"] if root else []
    candidates.append(Path(__file__).resolve().parents[3] / "conf")
    for c in candidates:
        if (c / "env").is_dir():
            return c
    raise FileNotFoundError(f"no conf/ with an env/ group found (looked in {[str(c) for c in candidates]}); "
                            "set METAMANIP_ROOT to the repository")


def compose_env(overrides: Sequence[str]) -> DictConfig:
    """Compose `env` (default explore) and `trial_limits` (optional) from conf/ with the given overrides."""
    ConfigStore.instance().store(name=PRIMARY, node={"defaults": [{"env": "explore"}, "_self_"]})
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name=PRIMARY, overrides=list(overrides))


def describe(env_cfg: DictConfig) -> dict[str, Any]:
    """The setting's pool, tasks and splits plus its trial budget, from the config alone."""
    cls = get_class(env_cfg._target_)
    cfg = OmegaConf.to_container(env_cfg, resolve=True)
    out = cls.describe_config(cfg)
    out["num_trials"], out["trial_steps"] = trial_budget(
        cfg.get("num_trials"), cfg.get("trial_steps"), cfg.get("rollout_steps"), cls.thesis_num_trials(cfg))
    return out


def _fmt(items: list) -> str:
    return ", ".join("/".join(i) if isinstance(i, (list, tuple)) else str(i) for i in items)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = compose_env(sys.argv[1:] if argv is None else argv)
    d = describe(cfg.env)
    unit = "pairs" if d["setting"] == "combi_explore" else "combinations"
    print(f"setting: {d['setting']}")
    print(f"object pool ({len(d['pool'])}): {_fmt(d['pool'])}; objects per episode: {d['objects_per_episode']}")
    print(f"tasks ({len(d['tasks'])}): {_fmt(d['tasks'])}")
    print(f"train {unit} ({len(d['train'])}):")
    for c in d["train"]:
        print(f"  {_fmt(c)}")
    print(f"held-out {unit} ({len(d['heldout'])}):")
    for c in d["heldout"]:
        print(f"  {_fmt(c)}")
    print(f"trials: num_trials={d['num_trials']} trial_steps={d['trial_steps']}")
    print(json.dumps({"train": len(d["train"]), "heldout": len(d["heldout"]), "tasks": len(d["tasks"])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
