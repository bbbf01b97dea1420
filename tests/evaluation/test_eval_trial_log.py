import pytest

from metamanip.evaluation.metrics import TrialRow
from metamanip.evaluation.trial_log import TrialLog, read_trials


def episode(group, ep, n=3, reward=1.0):
    return [TrialRow("explore", 3, group, ep, t + 1, "1", "open_drawer", reward, 7, "open_drawer")
            for t in range(n)]


def test_append_and_reopen(tmp_path):
    log = TrialLog(tmp_path / "trials.csv", num_trials=3)
    log.append_episode(episode("a", 0))
    log.append_episode(episode("a", 1, reward=0.0))
    again = TrialLog(tmp_path / "trials.csv", num_trials=3)
    assert again.done == {("a", 0), ("a", 1)}
    assert read_trials(tmp_path / "trials.csv") == episode("a", 0) + episode("a", 1, reward=0.0)
    with pytest.raises(ValueError, match="already in"):
        again.append_episode(episode("a", 1))


def test_a_torn_tail_is_cut_away(tmp_path):
    path = tmp_path / "trials.csv"
    log = TrialLog(path, num_trials=3)
    log.append_episode(episode("a", 0))
    clean = path.read_text()
    lines = "".join(f"{line}\n" for line in ",".join(["explore", "3", "a", "1", "1", "1", "t", "1.0", "7", "t"])
                    .split("\n"))
    path.write_text(clean + lines + "explore,3,a,1,2,1,t,1.")  # one full row of episode 1, then a torn row
    again = TrialLog(path, num_trials=3)
    assert again.done == {("a", 0)}
    assert path.read_text() == clean


def test_another_evaluations_file_is_refused(tmp_path):
    log = TrialLog(tmp_path / "trials.csv", num_trials=3)
    log.append_episode(episode("a", 0))
    with pytest.raises(ValueError, match="new output dir"):
        log.check_plan([("a", 0)], "combi_explore", 4)
    with pytest.raises(ValueError, match="does not contain"):
        log.check_plan([("b", 0)], "explore", 3)
    log.check_plan([("a", 0), ("a", 1)], "explore", 3)
    (tmp_path / "other.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        TrialLog(tmp_path / "other.csv", num_trials=3)
