import json

import pytest
import torch

from metamanip.cli import eval as eval_cli
from metamanip.cli.pipeline import compose
from metamanip.evaluation import evaluator
from metamanip.evaluation.trial_log import read_trials

SMALL = ["env=explore", "env.num_objs=3", "eval.split=heldout", "eval.progress=false"]
NO_CAMERAS = ["env.sim.cameras.static=null", "env.sim.cameras.gripper=null"]


def policy_ckpt(path, use_gripper=True, window=4, trained_size=None):
    blob = {"format_version": 1, "config": {"backbone": {"_target_": "x.Backbone"},
                                            "decoder": {"_target_": "x.LSTMDecoder"},
                                            "policy": {"use_gripper": use_gripper, "window_size": window}},
            "state_dict": {}}
    if trained_size is not None:  # a trainer checkpoint knows the cameras it was trained on
        h, w = trained_size
        cams = {"static": {"width": w, "height": h}, "gripper": {"width": w, "height": h}}
        blob = {"policy": blob, "config": {"env": {"sim": {"cameras": cams}}}, "step": 10}
    torch.save(blob, path)
    return path


@pytest.fixture
def no_envs(monkeypatch):
    """Fail the test if an env worker is started."""
    def refuse(*a, **k):
        raise AssertionError("an env worker was started")
    monkeypatch.setattr(evaluator, "EnvWorkerPool", refuse)


def test_a_missing_checkpoint_is_refused_before_any_env_starts(tmp_path, no_envs):
    cfg = compose("eval", [*SMALL, f"ckpt={tmp_path / 'nope.pt'}"], tmp_path / "job")
    with pytest.raises(eval_cli.CheckpointError, match="does not exist"):
        eval_cli.run(cfg)
    status = json.loads((tmp_path / "job" / "status.json").read_text())
    assert status["status"] == "failed" and "does not exist" in status["error"]
    assert not (tmp_path / "job" / "trials.csv").exists()
    cfg = compose("eval", SMALL, tmp_path / "job2")
    with pytest.raises(eval_cli.CheckpointError, match="needs ckpt="):
        eval_cli.run(cfg)


def test_a_checkpoint_for_other_inputs_is_refused(tmp_path, no_envs):
    ckpt = policy_ckpt(tmp_path / "a.pt", trained_size=(32, 32))
    cfg = compose("eval", [*SMALL, f"ckpt={ckpt}", "env.sim.cameras.gripper=null",
                           "env.sim.cameras.static.width=64", "env.sim.cameras.static.height=64"], tmp_path / "j")
    with pytest.raises(eval_cli.CheckpointError) as e:
        eval_cli.run(cfg)
    msg = str(e.value)
    assert "gripper camera" in msg and "is off" in msg
    assert "trained on static images of 32x32" in msg and "env.sim.cameras.static.height=32" in msg
    window = compose("eval", [*SMALL, f"ckpt={policy_ckpt(tmp_path / 'b.pt')}", "+policy.window_size=12"],
                     tmp_path / "k")
    with pytest.raises(eval_cli.CheckpointError, match="window_size=4"):
        eval_cli.run(window)


def test_a_file_that_is_no_policy_checkpoint_is_refused(tmp_path, no_envs):
    torch.save({"weights": 1}, tmp_path / "x.pt")
    (tmp_path / "torn.pt").write_bytes(b"PK\x03\x04 not a whole file")
    for name, why in (("x.pt", "holds no policy"), ("torn.pt", "cannot be read")):
        cfg = compose("eval", [*SMALL, f"ckpt={tmp_path / name}"], tmp_path / name.replace(".", "_"))
        with pytest.raises(eval_cli.CheckpointError, match=why):
            eval_cli.run(cfg)


def test_a_matching_checkpoint_passes_the_check(tmp_path):
    ckpt = policy_ckpt(tmp_path / "a.pt", trained_size=(200, 200))
    cfg = compose("eval", [*SMALL, f"ckpt={ckpt}", "env.sim.cameras.gripper.width=200",
                           "env.sim.cameras.gripper.height=200", "env.sim.cameras.static.width=200",
                           "env.sim.cameras.static.height=200"], tmp_path / "j")
    assert eval_cli.check_checkpoint(ckpt, cfg)["config"]["policy"]["window_size"] == 4


def test_bad_eval_choices_are_refused(tmp_path):
    for bad, why in (("eval.agent=robot", "eval.agent"), ("eval.split=test", "eval.split"),
                     ("eval.feedback=chat", "eval.feedback")):
        with pytest.raises(ValueError, match=why):
            eval_cli.run(compose("eval", [*SMALL, bad], tmp_path / bad.replace("=", "_")))
    with pytest.raises(ValueError, match="needs a camera"):
        eval_cli.run(compose("eval", [*SMALL, *NO_CAMERAS, "eval.agent=oracle", "eval.videos=1"], tmp_path / "v"))


def test_protocol_from_config_follows_the_split():
    heldout = eval_cli.protocol_specs(compose("eval", ["env=explore", "env.num_objs=5", "eval.num_resets=3"]))
    assert {s.group for s in heldout} == {"red_block/slider/led", "slider/drawer/led", "slider/led/lightbulb"} or \
        all("slider" in s.group and "led" in s.group for s in heldout)
    assert len(heldout) == 9
    train = eval_cli.protocol_specs(compose("eval", ["env=explore", "env.num_objs=5", "eval.num_resets=3",
                                                     "eval.split=train"]))
    assert len(train) == 21 and not any("slider" in s.group and "led" in s.group for s in train)
    combi = eval_cli.protocol_specs(compose("eval", ["env=combi_explore", "eval.num_resets=2", "eval.videos=3"]))
    assert len(combi) == 8 and sum(s.video for s in combi) == 3
    assert eval_cli.trial_budget_of(compose("eval", ["env=explore", "env.num_objs=7"]).env) == (5, 240)


def test_scripted_oracle_through_the_cli(tmp_path):
    cfg = compose("eval", [*SMALL, *NO_CAMERAS, "eval.agent=oracle", "oracle=scripted",
                           "eval.num_resets=3", "eval.num_workers=2", "env.num_trials=4", "env.trial_steps=150"],
                  tmp_path)
    metrics = eval_cli.run(cfg)
    rows = read_trials(tmp_path / "trials.csv")
    assert len(rows) == 3 * 4 and {r.meta_position for r in rows} == {"0", "1", "2"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["agent"] == "oracle/scripted"
    assert summary["config"]["split"] == "heldout" and summary["config"]["num_trials"] == 4
    assert metrics["success_trial_4"] == pytest.approx(sum(r.reward for r in rows if r.trial == 4) / 3)
    # the scripted oracle explores in listed order: it is rewarded from trial position+1 on
    assert metrics["average_reward"] == pytest.approx(3.0)
    table = eval_cli.format_table(summary)
    assert "overall" in table and "drawer/lightbulb/slider" in table


@pytest.mark.slow
def test_a_policy_checkpoint_through_the_cli_with_a_video(tmp_path):
    from metamanip.models.checkpoint import save_policy
    from metamanip.models.policy import build_policy

    torch.manual_seed(0)
    policy = build_policy(compose("train", ["backbone=tiny", "decoder=lstm", "policy=tiny", "data.dir=unused"],
                                  tmp_path / "train"))
    ckpt = save_policy(policy, tmp_path / "policy.pt")
    cams = [f"env.sim.cameras.{c}.{d}=32" for c in ("static", "gripper") for d in ("width", "height")]
    cfg = compose("eval", [*SMALL, *cams, f"ckpt={ckpt}", "env.num_trials=2", "env.trial_steps=6",
                           "eval.num_resets=2", "eval.num_workers=2", "eval.videos=1"], tmp_path / "job")
    metrics = eval_cli.run(cfg)
    rows = read_trials(tmp_path / "job" / "trials.csv")
    assert len(rows) == 2 * 2 and all(0 < r.steps <= 6 for r in rows)
    assert set(metrics) >= {"average_reward", "success_trial_1", "success_trial_2"}
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert summary["config"]["agent"] == "policy" and summary["config"]["decoder"] == "lstm"
    assert [p.name for p in (tmp_path / "job" / "videos").iterdir()] == ["drawer-lightbulb-slider_ep000.mp4"]
    # the same evaluation with a copy of the policy in each worker instead of one batched policy
    cfg = compose("eval", [*SMALL, *cams, f"ckpt={ckpt}", "env.num_trials=2", "env.trial_steps=6",
                           "eval.num_resets=2", "eval.num_workers=2", "eval.policy_in_workers=true"],
                  tmp_path / "copies")
    assert eval_cli.run(cfg)["episodes"] == 2
    assert (tmp_path / "copies" / "trials.csv").read_text() == (tmp_path / "job" / "trials.csv").read_text()


def test_a_resumed_playtable_evaluation_matches_an_uninterrupted_one(tmp_path):
    """On the real simulator: episode results depend only on their seed, not on what ran before."""
    from metamanip.evaluation.agents import OracleFactory
    from metamanip.evaluation.evaluator import evaluate
    from metamanip.evaluation.workers import ConfigFactory
    from omegaconf import OmegaConf

    cfg = compose("eval", [*SMALL, *NO_CAMERAS, "eval.num_resets=3", "env.num_trials=3", "env.trial_steps=120"],
                  tmp_path)
    kw = dict(env_factory=ConfigFactory(eval_cli.env_for_split(cfg.env, "heldout")), num_objs=3, num_trials=3,
              trial_steps=120, agent_factory=OracleFactory(OmegaConf.to_container(cfg.oracle, resolve=True)),
              progress=False)
    specs = eval_cli.protocol_specs(cfg)
    evaluate(specs, out_dir=tmp_path / "full", num_workers=1, **kw)
    evaluate(specs, out_dir=tmp_path / "part", num_workers=2, stop_after=1, **kw)
    evaluate(specs[::-1], out_dir=tmp_path / "part", num_workers=2, **kw)  # the rest, even in another order
    full = (tmp_path / "full" / "trials.csv").read_text()
    assert full.count("\n") == 1 + 3 * 3
    assert sorted((tmp_path / "part" / "trials.csv").read_text().splitlines()) == sorted(full.splitlines())
