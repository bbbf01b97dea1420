"""Compose-time validation (`metamanip.cli.checks`): every valid composition of the config tree passes, a
table of bad values is refused before any work starts (single runs), and a sweep with one bad element is
refused before any job is launched, naming the element (`metamanip.cli.entry.check_sweep`)."""
from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from metamanip.cli import checks
from metamanip.cli.entry import check_sweep, user_message
from metamanip.errors import ConfigValueError
from workbench_helpers import CONF, LAUNCHERS, PRIMARIES, compose_job, experiment_names

GRID = [(p, e, launcher) for p in PRIMARIES for e in experiment_names() for launcher in LAUNCHERS]

# (primary, override, what the refusal must say)
BAD = [
    ("train", "env.num_objs=4", "env.num_objs=4 is not one of 3, 5, 7"),
    ("collect", "env.num_objs=6", "env.num_objs=6 is not one of 3, 5, 7"),
    ("eval", "env.num_objs=0", "env.num_objs=0"),
    ("train", "trainer.precision=fp8", "trainer.precision='fp8' is not one of fp32, bf16, fp16"),
    ("pipeline", "trainer.precision=int8", "trainer.precision='int8'"),
    ("train", "trainer.lr=-1", "trainer.lr=-1"),
    ("train", "trainer.lr=0", "trainer.lr=0"),
    ("train", "trainer.batch_size=0", "trainer.batch_size=0"),
    ("train", "trainer.scheduler=step", "trainer.scheduler='step'"),
    ("train", "trainer.device=tpu", "trainer.device='tpu'"),
    ("train", "data.feedback=oracle_text", "data.feedback='oracle_text'"),
    ("train", "policy.obs=depth", "policy.obs='depth'"),
    ("train", "policy.window_size=0", "policy.window_size=0"),
    ("train", "decoder.num_layers=0", "decoder.num_layers=0"),
    ("train", "decoder.dropout=1.5", "decoder.dropout=1.5"),
    ("train", "decoder=discrete decoder.n_bins=1", "decoder.n_bins=1"),
    ("train", "+decoder.hiden_size=64", "decoder option(s) hiden_size are not taken by"),
    ("train", "+decoder.window_size=3", "decoder.window_size is set by the policy"),
    ("train", "env.split=test", "env.split='test'"),
    ("eval", "eval.split=validation", "eval.split='validation' is not one of train, heldout"),
    ("eval", "eval.agent=human", "eval.agent='human'"),
    ("eval", "eval.feedback=paraphrased", "eval.feedback='paraphrased'"),
    ("eval", "eval.num_resets=0", "eval.num_resets=0"),
    ("collect", "collect.render=never", "collect.render='never'"),
    ("collect", "collect.image_codec=png", "collect.image_codec='png'"),
    ("collect", "collect.shard=2 collect.num_shards=2", "collect.shard=2 with collect.num_shards=2"),
    ("collect", "collect.episodes=0", "collect.episodes=0"),
    ("train", "hydra/launcher=local +hydra.launcher.partition=gpu", "hydra.launcher.partition='gpu': SLURM-only"),
    ("collect", "hydra/launcher=local hydra.launcher.max_parallel=0", "hydra.launcher.max_parallel=0"),
    ("train", "hydra/launcher=slurm_gpu hydra.launcher.timeout_min=0", "hydra.launcher.timeout_min=0"),
]


@pytest.mark.parametrize("primary,experiment,launcher", GRID)
def test_every_valid_composition_passes_the_checks(tmp_path, primary, experiment, launcher):
    cfg = compose_job(CONF, primary, [f"experiment={experiment}", f"hydra/launcher={launcher}"], tmp_path)
    assert checks.problems(cfg) == []


@pytest.mark.parametrize("primary,override,message", BAD, ids=[f"{p}:{o}" for p, o, _ in BAD])
def test_a_bad_value_is_refused_at_compose_time(tmp_path, primary, override, message):
    cfg = compose_job(CONF, primary, override.split(), tmp_path)
    with pytest.raises(ConfigValueError) as e:
        checks.check_config(cfg)
    assert message in str(e.value)
    assert ";" in str(e.value)  # the fix follows the problem


def test_bad_values_the_composer_itself_refuses_are_user_errors(tmp_path):
    """Wrong types on typed nodes and unknown choices fail inside Hydra; the entry point reports them as
    one-line user errors too."""
    for override in (["hydra.launcher.timeout_min=soon"], ["decoder=transformer"], ["nope=1"]):
        with pytest.raises((ConfigCompositionException, MissingConfigException)) as e:
            compose_job(CONF, "train", override, tmp_path)
        assert user_message(e.value), override


def test_every_problem_is_named_at_once(tmp_path):
    cfg = compose_job(CONF, "train", ["env.num_objs=4", "trainer.precision=fp8"], tmp_path)
    assert len(checks.problems(cfg)) == 2
    with pytest.raises(ConfigValueError, match=r"env.num_objs=4 .*\(and 1 more: trainer.precision='fp8'"):
        checks.check_config(cfg)


def test_a_sweep_with_one_bad_element_is_refused_naming_it():
    with pytest.raises(ConfigValueError) as e:
        check_sweep(CONF, "train", ["data.dir=x", "decoder=lstm,gpt", "trainer.precision=fp32,fp8,bf16"])
    msg = str(e.value)
    assert msg.startswith("sweep element 2 of 6 (decoder=lstm trainer.precision=fp8): trainer.precision='fp8'")
    assert msg.endswith("no job was launched")
    with pytest.raises(ConfigValueError, match=r"sweep element 3 of 3 \(env.num_objs=4\)"):
        check_sweep(CONF, "collect", ["env.num_objs=3,5,4"])
    with pytest.raises(ConfigValueError, match=r"sweep element 2 of 2 \(decoder=nope\).*Could not find 'decoder/nope'"):
        check_sweep(CONF, "train", ["data.dir=x", "decoder=lstm,nope"])


def test_a_good_sweep_passes_with_its_size():
    assert check_sweep(CONF, "train", ["data.dir=x", "decoder=lstm,gpt,fc", "seed=1,2"]) == 6
    assert check_sweep(CONF, "eval", ["env.num_objs=range(3,8,2)", "eval.split=train,heldout"]) == 6


def test_the_allowed_values_agree_with_the_modules_that_own_them():
    from metamanip.cli.eval import AGENTS
    from metamanip.models.policy import TEXT_INPUTS
    from metamanip.settings.splits import EXPLORE_NUM_OBJS, SPLITS
    from metamanip.training.schedule import SCHEDULES
    from metamanip.training.trainer import PRECISIONS

    assert checks.EXPLORE_NUM_OBJS == EXPLORE_NUM_OBJS and checks.SPLITS == SPLITS
    assert checks.PRECISIONS == PRECISIONS and checks.SCHEDULERS == SCHEDULES
    assert checks.EVAL_AGENTS == AGENTS and checks.TEXT_INPUTS == TEXT_INPUTS
