"""The real config tree: every entry point × experiment × launcher composes with every value resolved, and
every `_target_` in it imports and accepts its arguments."""
from __future__ import annotations

import inspect

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from workbench_helpers import (CONF, LAUNCHERS, PRIMARIES, check_target_binds, compose_job, experiment_names,
                               resolve_all, target_nodes)

PRESENT = [p for p in PRIMARIES if (CONF / f"{p}.yaml").exists()]
GRID = [(p, e, launcher) for p in PRESENT for e in experiment_names() for launcher in LAUNCHERS]


def test_every_entry_point_has_its_primary_config():
    assert PRESENT == list(PRIMARIES), f"missing: {sorted(set(PRIMARIES) - set(PRESENT))}"


def test_sweep_time_interpolation_errors_are_caught(standin_conf, tmp_path):
    """A key that only a sweep reads (hydra.sweep.dir) with a broken interpolation fails here, not on the
    cluster (the submitit#1655 failure)."""
    from omegaconf.errors import InterpolationKeyError

    cfg = compose_job(standin_conf, "train", ["hydra.sweep.dir=${paths.log_dir}/${agent_cfg.experiment}"], tmp_path)
    with pytest.raises(InterpolationKeyError, match="agent_cfg"):
        resolve_all(cfg)


def test_thesis_grid_and_smoke_are_there():
    assert {"explore_3", "explore_5", "explore_7", "combi_explore", "smoke"} <= set(experiment_names())


@pytest.mark.parametrize("primary", PRESENT)
def test_primary_defaults_end_with_the_workbench_groups(primary):
    """Recipes must override the primary's own values and the local file everything: the order matters."""
    defaults = OmegaConf.load(CONF / f"{primary}.yaml").defaults
    names = [d if isinstance(d, str) else next(iter(d)) for d in defaults]
    assert names[-4:] == ["_self_", "experiment", "hparams_search", "optional local"], names
    assert {"paths", "hydra", "env", "trial_limits"} <= set(names), names


@pytest.mark.parametrize("primary,experiment,launcher", GRID)
def test_composes_fully_resolved(tmp_path, primary, experiment, launcher):
    cfg = compose_job(CONF, primary, [f"experiment={experiment}", f"hydra/launcher={launcher}"], tmp_path)
    choices = cfg.hydra.runtime.choices
    assert (choices["experiment"], choices["hydra/launcher"]) == (experiment, launcher)
    resolved = resolve_all(cfg)  # raises on ??? and on broken interpolations, incl. sweep-time ones
    assert resolved["task"]["task_name"] == primary
    assert resolved["hydra"]["sweep"]["dir"].startswith(f"{tmp_path}/logs/{primary}/")
    for path, node in [*target_nodes(resolved["task"]), *target_nodes(resolved["hydra"], "hydra")]:
        check_target_binds(path, node)


@pytest.mark.parametrize("primary", PRESENT)
def test_unknown_choice_lists_the_valid_ones(primary):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(MissingConfigException) as e:
            compose(primary, overrides=["env=nope"])
        msg = str(e.value)
        assert "env/nope" in msg and "explore" in msg and "combi_explore" in msg
        with pytest.raises(MissingConfigException) as e:
            compose(primary, overrides=["hydra/launcher=slurm"])
        assert all(name in str(e.value) for name in LAUNCHERS)
        with pytest.raises((MissingConfigException, ConfigCompositionException)) as e:
            compose(primary, overrides=["experiment=explore_9"])
        assert "explore_5" in str(e.value)


@pytest.mark.parametrize("primary", PRESENT)
def test_smoke_instantiates_for_real(tmp_path, primary):
    """Every `_target_` of the smoke config that needs no runtime argument is built for real (the
    simulator, the setting, the trainer, the logger, ...); the rest are built by the entry point with
    runtime objects (an oracle's env, ...) and only bind-checked above."""
    cfg = compose_job(CONF, primary, ["experiment=smoke"], tmp_path)
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    built = []
    for key, node in task.items():
        if not (OmegaConf.is_dict(node) and "_target_" in node):
            continue
        sig = inspect.signature(get_object(node._target_))
        needs_runtime = [p.name for p in sig.parameters.values()
                         if p.default is inspect.Parameter.empty and p.name not in node
                         and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if needs_runtime:
            continue
        obj = instantiate(node)
        assert obj is not None, key
        close = getattr(obj, "close", None)
        if callable(close):
            close()
        built.append(key)
    assert built, f"nothing in {primary}'s smoke config could be built on its own"
    if "env" in task:
        assert "env" in built  # the setting with its simulator
