"""The original result CSV (dict strings per cell, rows of other runs under the first header) reads tidy."""
from __future__ import annotations

from pathlib import Path

import pytest

from metamanip.results.thesis_csv import load_thesis_csv

CSV = '''run_name,red_block/slider/led,drawer/led/slider,overall_reward
eval__standard_9000_5_train_feedback,"{'total_reward': 5, 'average_reward': 2.5, 'ratio_reward_found': 1.0, 'episode_length': 900.0}","{'total_reward': 3, 'average_reward': 1.5, 'ratio_reward_found': 0.5, 'episode_length': 1000.5}","{'total_reward': 8, 'average_reward': 2.0, 'ratio_reward_found': 0.75, 'episode_length': 950.25}"
eval__combi_14000_4_alt_feedback,"{'total_reward': 1, 'average_reward': 0.1, 'ratio_reward_found': 0.1, 'episode_length': 1300}","{'total_reward': 2, 'average_reward': 0.2, 'ratio_reward_found': 0.2, 'episode_length': 1270}","{'total_reward': 0, 'average_reward': 0.0, 'ratio_reward_found': 0.0, 'episode_length': 1340}","{'total_reward': 3, 'average_reward': 0.1, 'ratio_reward_found': 0.1, 'episode_length': 1303.3}"
'''


def test_reads_dict_cells_and_rows_with_other_columns(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text(CSV)
    df = load_thesis_csv(path)
    first = df[df["row"] == 1].set_index("group")
    assert list(first.index) == ["red_block/slider/led", "drawer/led/slider", "overall"]
    assert first.loc["overall", "average_reward"] == 2.0 and first.loc["drawer/led/slider", "episode_length"] == 1000.5
    combi = df[df["row"] == 2].set_index("group")  # 4 cells under a 3-column header: named by position
    assert list(combi.index) == ["group_1", "group_2", "group_3", "overall"]
    assert combi.loc["overall", "episode_length"] == pytest.approx(1303.3)
    assert set(df["run_name"]) == {"eval__standard_9000_5_train_feedback", "eval__combi_14000_4_alt_feedback"}


def test_bad_files_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="not a Meta-CALVIN result CSV"):
        load_thesis_csv(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("run_name,overall_reward\nr1,\"{'total_reward': 1\"\n")
    with pytest.raises(ValueError, match=r"b.csv:2: cell 2 is not a Python dict string"):
        load_thesis_csv(tmp_path / "b.csv")
