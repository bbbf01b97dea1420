"""`python -m metamanip.settings.describe`: composes conf/ and prints pools, tasks and splits."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from metamanip.settings.describe import compose_env, describe

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("overrides, expected", [
    (["env=explore", "env.num_objs=3"], {"train": 1, "heldout": 1, "tasks": 6}),
    (["env=explore", "env.num_objs=5"], {"train": 7, "heldout": 3, "tasks": 9}),
    (["env=explore", "env.num_objs=7"], {"train": 21, "heldout": 10, "tasks": 14}),
    (["env=explore", "env.num_objs=7", "env.block_holdout=true"], {"train": 16, "heldout": 15, "tasks": 14}),
    (["env=combi_explore"], {"train": 20, "heldout": 4, "tasks": 8}),
    (["env=single_object"], {"train": 1, "heldout": 1, "tasks": 2}),
])
def test_compose_and_describe(overrides, expected):
    d = describe(compose_env(overrides).env)
    assert {k: len(d[k]) for k in ("train", "heldout", "tasks")} == expected
    if d["setting"] == "combi_explore":
        train = {frozenset(p) for p in d["train"]}
        assert not any(frozenset(p) in train for p in d["heldout"])


def test_trial_budget_follows_rollout_steps():
    d = describe(compose_env(["env=explore", "env.num_objs=7"]).env)
    assert (d["num_trials"], d["trial_steps"]) == (5, 240)
    d = describe(compose_env(["env=combi_explore"]).env)
    assert (d["num_trials"], d["trial_steps"]) == (4, 400)


def test_bad_num_objs_names_allowed_values():
    with pytest.raises(ValueError, match=r"one of \[3, 5, 7\]"):
        describe(compose_env(["env=explore", "env.num_objs=4"]).env)


def test_yaml_mirrors_constructor():
    import inspect

    from metamanip.settings.combi import CombiExploreEnv
    from metamanip.settings.explore import ExploreEnv
    from metamanip.settings.meta_env import MetaEnv
    from metamanip.settings.single_object import SingleObjectEnv

    base = set(inspect.signature(MetaEnv.__init__).parameters)
    for name, cls in (("explore", ExploreEnv), ("combi_explore", CombiExploreEnv), ("single_object", SingleObjectEnv)):
        cfg = OmegaConf.load(ROOT / "conf" / "env" / f"{name}.yaml")
        keys = set(cfg) - {"defaults", "_target_"}
        allowed = base | set(inspect.signature(cls.__init__).parameters)
        assert keys <= allowed, (name, keys - allowed)
        assert cfg._target_.endswith(cls.__name__) and cfg.name == cls.setting


@pytest.mark.slow
def test_cli_last_line_is_json():
    out = subprocess.run([sys.executable, "-m", "metamanip.settings.describe", "env=explore", "env.num_objs=7"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.strip().splitlines()
    assert json.loads(lines[-1]) == {"train": 21, "heldout": 10, "tasks": 14}
    assert any("red_block" in line for line in lines[:-1])
