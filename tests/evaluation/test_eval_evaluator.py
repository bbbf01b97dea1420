import json
import subprocess
import sys
import textwrap
from pathlib import Path

import imageio.v2 as imageio
import pytest

from eval_standins import ToyOracle, ToyPolicy
from metamanip.evaluation.evaluator import evaluate
from metamanip.evaluation.metrics import summarize
from metamanip.evaluation.protocol import combi_episodes, explore_episodes, mark_videos
from metamanip.evaluation.trial_log import read_trials
from metamanip.evaluation.workers import ConfigFactory, WorkerError

COMBOS = [("drawer", "led", "slider"), ("red_block", "led", "slider")]
SETTING = {"_target_": "eval_standins.make_setting", "num_trials": 4, "trial_steps": 12}
KW = dict(num_objs=5, num_trials=4, trial_steps=12)


def oracle_factory(env):
    return ToyOracle(env)


def specs(n=6):
    return explore_episodes(COMBOS, num_resets=n, num_trials=4, seed=0)


def test_oracle_in_two_workers_is_the_optimal_explorer(tmp_path):
    s = evaluate(specs(), env_factory=ConfigFactory(SETTING), agent_factory=oracle_factory, out_dir=tmp_path,
                 num_workers=2, progress=False, **KW)
    # positions balanced over 0, 1, 2: an in-order explorer earns num_trials - position
    assert s["average_reward"] == pytest.approx((4 + 3 + 2) / 3)
    assert s["ratio_reward_found"] == 1.0 and s["complete"]
    assert s["success_by_trial"] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    rows = read_trials(tmp_path / "trials.csv")
    assert len(rows) == 12 * 4
    assert [(r.group, r.episode) for r in rows[::4]] == [x.key for x in specs()]  # protocol order


def test_summary_and_metrics_agree_with_trials_csv(tmp_path):
    s = evaluate(specs(), env_factory=ConfigFactory(SETTING), policy=ToyPolicy(), out_dir=tmp_path,
                 num_workers=2, progress=False, config={"agent": "policy"}, **KW)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    again = summarize(read_trials(tmp_path / "trials.csv"), 4, groups=[c for c in on_disk["groups"]])
    for k in ("total_reward", "average_reward", "ratio_reward_found", "episode_length", "success_by_trial"):
        assert on_disk[k] == pytest.approx(again[k])
        assert s[k] == pytest.approx(again[k])
    assert on_disk["config"] == {"agent": "policy"}
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert [m[f"success_trial_{k}"] for k in (1, 2, 3, 4)] == pytest.approx(again["success_by_trial"])
    assert 0 < m["average_reward"] < 4  # the toy policy is neither hopeless nor perfect


def test_policy_batched_over_workers_matches_one_worker(tmp_path):
    one, two = ToyPolicy(), ToyPolicy()
    evaluate(specs(3), env_factory=ConfigFactory(SETTING), policy=one, out_dir=tmp_path / "1", num_workers=1,
             progress=False, **KW)
    evaluate(specs(3), env_factory=ConfigFactory(SETTING), policy=two, out_dir=tmp_path / "2", num_workers=2,
             progress=False, **KW)
    assert (tmp_path / "1/trials.csv").read_text() == (tmp_path / "2/trials.csv").read_text()
    assert set(one.batches) == {1} and 2 in two.batches
    # history cleared at each episode start and each trial end: 6 episodes x (1 + 3)
    assert len(two.resets) == 6 * 4


@pytest.mark.parametrize("agent", ["oracle", "policy"])
def test_a_resumed_evaluation_writes_the_same_trials_csv(tmp_path, agent):
    kw = dict(policy=ToyPolicy()) if agent == "policy" else dict(agent_factory=oracle_factory)
    full = tmp_path / "full"
    evaluate(specs(), env_factory=ConfigFactory(SETTING), out_dir=full, num_workers=2, progress=False, **kw, **KW)
    part = tmp_path / "part"
    s = evaluate(specs(), env_factory=ConfigFactory(SETTING), out_dir=part, num_workers=2, progress=False,
                 stop_after=5, **kw, **KW)
    assert not s["complete"] and s["episodes"] == 5
    s = evaluate(specs(), env_factory=ConfigFactory(SETTING), out_dir=part, num_workers=2, progress=False,
                 **kw, **KW)
    assert s["complete"] and s["episodes"] == 12
    assert (part / "trials.csv").read_text() == (full / "trials.csv").read_text()
    assert json.loads((part / "summary.json").read_text()) == json.loads((full / "summary.json").read_text())


def test_an_evaluation_killed_midway_resumes_without_duplicates(tmp_path):
    out = tmp_path / "eval"
    here = Path(__file__).parent
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(here)!r})
        import eval_standins
        from metamanip.evaluation.evaluator import evaluate
        from metamanip.evaluation.protocol import explore_episodes
        from metamanip.evaluation.workers import ConfigFactory
        orig = eval_standins.ToyOracle.act
        def slow(self, obs, info):
            time.sleep(0.03)
            return orig(self, obs, info)
        eval_standins.ToyOracle.act = slow
        def factory(env):
            return eval_standins.ToyOracle(env)
        if __name__ == "__main__":
            evaluate(explore_episodes({COMBOS!r}, 6, 4, seed=0), env_factory=ConfigFactory({SETTING!r}),
                     agent_factory=factory, out_dir={str(out)!r}, num_workers=2, progress=False,
                     num_objs=5, num_trials=4, trial_steps=12)
    """)
    (tmp_path / "run.py").write_text(script)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "run.py")], start_new_session=True)
    csv = out / "trials.csv"
    import os, signal, time
    deadline = time.time() + 60
    while time.time() < deadline and (not csv.exists() or csv.read_text().count("\n") < 1 + 4 * 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its workers, as a preempted node would
    proc.wait()
    done = csv.read_text().count("\n") - 1
    assert 12 <= done < 48, "the run should have been killed midway"
    evaluate(specs(), env_factory=ConfigFactory(SETTING), agent_factory=oracle_factory, out_dir=out,
             num_workers=2, progress=False, **KW)
    ref = tmp_path / "ref"
    evaluate(specs(), env_factory=ConfigFactory(SETTING), agent_factory=oracle_factory, out_dir=ref,
             num_workers=1, progress=False, **KW)
    assert csv.read_text() == (ref / "trials.csv").read_text()


def test_videos_of_the_first_episodes_show_both_cameras(tmp_path):
    sp = mark_videos(specs(2), 2)
    evaluate(sp, env_factory=ConfigFactory({**SETTING, "image_size": 32}), agent_factory=oracle_factory,
             out_dir=tmp_path / "o", progress=False, **KW)
    evaluate(sp, env_factory=ConfigFactory({**SETTING, "image_size": 32}), policy=ToyPolicy(),
             out_dir=tmp_path / "p", progress=False, **KW)
    for d in ("o", "p"):
        videos = sorted((tmp_path / d / "videos").glob("*.mp4"))
        assert [v.name for v in videos] == ["drawer-led-slider_ep000.mp4", "drawer-led-slider_ep001.mp4"]
        rows = read_trials(tmp_path / d / "trials.csv")
        steps = sum(r.steps for r in rows if r.episode == 0 and r.group == "drawer/led/slider")
        frames = imageio.mimread(videos[0])
        assert len(frames) == steps + 1  # the first observation and one per step
        h, w, _ = frames[0].shape
        assert h > 192 and w >= 192 + 96  # static and gripper side by side, caption below


def test_combi_protocol_runs(tmp_path):
    pairs = [("move_slider_right", "turn_off_led"), ("close_drawer", "turn_on_lightbulb")]
    sp = combi_episodes(pairs, 3, seed=0)
    s = evaluate(sp, env_factory=ConfigFactory({**SETTING, "combi": True}), agent_factory=oracle_factory,
                 out_dir=tmp_path, progress=False, **{**KW, "num_objs": 4})
    rows = read_trials(tmp_path / "trials.csv")
    assert {r.group for r in rows} == {"move_slider_right+turn_off_led", "close_drawer+turn_on_lightbulb"}
    assert rows[0].meta_task == "move_slider_right+turn_off_led"
    assert s["episodes"] == 6


def test_a_failing_worker_reports_its_traceback(tmp_path):
    bad = {"_target_": "eval_standins.make_setting", "no_such_argument": 1}
    with pytest.raises(WorkerError, match="no_such_argument"):
        evaluate(specs(1), env_factory=ConfigFactory(bad), agent_factory=oracle_factory, out_dir=tmp_path,
                 progress=False, **KW)
