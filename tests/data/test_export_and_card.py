"""CALVIN npz export and the dataset card."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import make_buffer, write_two_episodes  # noqa: E402

from metamanip.atomic import write_json  # noqa: E402
from metamanip.data.calvin_export import export_calvin, load_calvin_frame  # noqa: E402
from metamanip.data.card import build_card, card_markdown, write_card  # noqa: E402
from metamanip.data.shards import ShardWriter  # noqa: E402


@pytest.fixture
def dataset(tmp_path):
    return write_two_episodes(tmp_path / "ds")


def test_export_calvin_layout(dataset, tmp_path):
    out = export_calvin(dataset, tmp_path / "calvin", progress=False)
    split = tmp_path / "calvin" / "training"
    assert out["frames"] == 27 and out["episodes"] == 2
    assert sorted(p.name for p in split.glob("episode_*.npz"))[:2] == ["episode_0000000.npz", "episode_0000001.npz"]
    assert np.load(split / "ep_start_end_ids.npy").tolist() == [[0, 11], [12, 26]]
    assert np.load(split / "ep_lens.npy").tolist() == [12, 15]
    frame = load_calvin_frame(split / "episode_0000013.npz")
    src = make_buffer(num_trials=3, steps_per_trial=5, seed=1).stacked()
    np.testing.assert_array_equal(frame["rgb_static"], src["rgb_static"][1])
    np.testing.assert_allclose(frame["rel_actions"], src["actions"][1])
    np.testing.assert_allclose(frame["actions"], src["actions_abs"][1])
    assert frame["train_feedback"] == "first trial. episode objects: drawer, slider" and int(frame["trial"]) == 0
    lang = np.load(split / "lang_annotations" / "auto_lang_ann.npy", allow_pickle=True).item()
    assert len(lang["language"]["ann"]) == 6 and lang["info"]["indx"][1] == (4, 7)
    assert lang["language"]["task"][2:4] == ["open_drawer", "open_drawer+turn_on_led"]


def test_export_refuses_states_only(tmp_path):
    w = ShardWriter(tmp_path / "ds", 0)
    w.write_episode("0000000", make_buffer(images=False), {})
    with pytest.raises(ValueError, match="metamanip-render"):
        export_calvin(tmp_path / "ds", tmp_path / "out", progress=False)


def test_card_counts_and_success_rate(dataset):
    write_json(dataset / "shard-00000.progress.json",
               {"attempts": 4, "passed": 2, "failures": {"reward_lost": 2}})
    card = write_card(dataset, {"env": {"num_objs": 3}})
    assert card["episodes"] == 2 and card["steps"] == 27
    assert card["per_meta_task"] == {"open_drawer": 1, "open_drawer+turn_on_led": 1}
    assert card["per_bucket"] == {"0": 1, "2": 1}
    assert card["oracle_success_rate"] == 0.5 and card["bytes"] > 0
    assert json.loads((dataset / "card.json").read_text())["filter_failures"] == {"reward_lost": 2}
    md = (dataset / "card.md").read_text()
    assert "50.0% (2/4 attempts)" in md and "| open_drawer | 0 | 1 | 1 |" in md
    assert card_markdown(build_card(dataset)).startswith("# Dataset card")


def test_export_command_line(dataset, tmp_path, capsys):
    from metamanip.data.calvin_export import main

    main([str(dataset), str(tmp_path / "out"), "--split", "validation"])
    assert "27 frames of 2 episodes" in capsys.readouterr().out
    assert (tmp_path / "out" / "validation" / "episode_0000026.npz").exists()
