"""LeRobot export: a shard dataset → LeRobotDataset v3.0 (parquet + mp4 + meta JSON), checked against our
shards frame by frame, through the layout LeRobot's loader reads (meta/info.json path templates, the
episodes table's frame ranges and video timestamps), and, where the `lerobot` package is installed, through
LeRobot's own `LeRobotDataset`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import make_buffer, write_two_episodes  # noqa: E402

from metamanip.data import lerobot_export  # noqa: E402
from metamanip.data.lerobot_export import export_lerobot  # noqa: E402
from metamanip.data.shards import EpisodeReader, ShardWriter, list_episodes  # noqa: E402
from metamanip.errors import UserError  # noqa: E402

pq = pytest.importorskip("pyarrow.parquet")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dataset(tmp_path):
    return write_two_episodes(tmp_path / "ds")


def _ours(root: Path) -> list[dict]:
    reader = EpisodeReader()
    try:
        out = []
        for ref in list_episodes(root):
            ep = reader.episode(ref, ["rgb_static", "rgb_gripper", "robot_obs", "scene_obs", "actions",
                                      "actions_abs", "trial", "reward"])
            ep["task"] = list(reader.texts(ref, "train_feedback"))
            ep["id"] = ref.episode_id
            out.append(ep)
        return out
    finally:
        reader.close()


def _decode(path: Path, height: int, width: int) -> np.ndarray:
    """Every frame of an mp4 as (T, H, W, 3) uint8, through the ffmpeg that imageio ships."""
    import imageio_ffmpeg

    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True, timeout=60).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def _load_like_lerobot(out: Path) -> list[dict]:
    """Read the export the way LeRobotDataset v3.0 does: info.json's templates, the episodes table's
    `dataset_from_index` / `dataset_to_index` and `videos/<key>/{chunk,file}_index, from_timestamp`,
    tasks.parquet's task → task_index."""
    info = json.loads((out / "meta" / "info.json").read_text())
    episodes = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    tasks = pq.read_table(out / "meta" / "tasks.parquet").to_pandas()
    by_index = {int(i): t for t, i in zip(tasks.index, tasks["task_index"])}
    files = {}
    frames = []
    for ep in episodes:
        data_path = out / info["data_path"].format(chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"])
        table = files.setdefault(data_path, pq.read_table(data_path).to_pandas())
        rows = table[(table["index"] >= ep["dataset_from_index"]) & (table["index"] < ep["dataset_to_index"])]
        videos = {}
        for key, ft in info["features"].items():
            if ft["dtype"] != "video":
                continue
            vpath = out / info["video_path"].format(video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"],
                                                    file_index=ep[f"videos/{key}/file_index"])
            decoded = _decode(vpath, *ft["shape"][:2])
            first = round(ep[f"videos/{key}/from_timestamp"] * info["fps"])
            idx = [first + round(float(ts) * info["fps"]) for ts in rows["timestamp"]]
            videos[key] = decoded[idx]
        frames.append({"rows": rows, "videos": videos, "task": [by_index[int(i)] for i in rows["task_index"]],
                       "meta": ep})
    return frames


def test_layout_follows_lerobot_v3(dataset, tmp_path):
    res = export_lerobot(dataset, tmp_path / "lr", pix_fmt="yuv444p", crf=0, progress=False)
    out = tmp_path / "lr"
    assert res["episodes"] == 2 and res["frames"] == 27 and res["tasks"] == 3  # first trial + 2 feedback texts
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 30
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, 27, 3)
    assert info["splits"] == {"train": "0:2"}
    feats = info["features"]
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):  # LeRobot's defaults
        assert feats[key]["shape"] == [1]
    assert feats["observation.state"]["shape"] == [15] and feats["action"]["shape"] == [7]
    assert feats["observation.images.static"]["dtype"] == "video"
    assert feats["observation.images.static"]["shape"] == [16, 16, 3]
    assert feats["observation.images.gripper"]["info"]["video.pix_fmt"] == "yuv444p"
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet")
    non_video = {k for k, f in feats.items() if f["dtype"] != "video"}
    assert set(data.column_names) == non_video
    state_type = data.schema.field("observation.state").type
    assert str(state_type.value_type) == "float" and state_type.list_size == 15  # datasets.Sequence(length=15)
    stats = json.loads((out / "meta" / "stats.json").read_text())
    assert set(stats) == set(feats)
    assert np.array(stats["observation.images.static"]["mean"]).shape == (3, 1, 1)
    assert stats["action"]["count"] == [27] and len(stats["action"]["std"]) == 7
    assert (out / "README.md").exists() and not list(tmp_path.glob(".lr.tmp-*"))


def test_frames_actions_and_tasks_match_our_shards(dataset, tmp_path):
    export_lerobot(dataset, tmp_path / "lr", pix_fmt="yuv444p", crf=0, progress=False)
    ours, theirs = _ours(dataset), _load_like_lerobot(tmp_path / "lr")
    assert [t["meta"]["metamanip/episode_id"] for t in theirs] == [o["id"] for o in ours]
    assert theirs[1]["meta"]["metamanip/meta_task"] == "open_drawer+turn_on_led"
    start = 0
    for o, t in zip(ours, theirs):
        rows, n = t["rows"], len(o["actions"])
        assert len(rows) == n == t["meta"]["length"]
        assert list(rows["index"]) == list(range(start, start + n)) and list(rows["frame_index"]) == list(range(n))
        np.testing.assert_array_equal(np.stack(rows["action"]), o["actions"])
        np.testing.assert_array_equal(np.stack(rows["action.absolute"]), o["actions_abs"])
        np.testing.assert_array_equal(np.stack(rows["observation.state"]), o["robot_obs"])
        np.testing.assert_array_equal(np.stack(rows["observation.environment_state"]), o["scene_obs"])
        np.testing.assert_array_equal(rows["trial_index"], o["trial"])
        np.testing.assert_array_equal(rows["next.reward"], o["reward"])
        assert list(rows["next.done"]) == [False] * (n - 1) + [True]
        assert t["task"] == o["task"]  # the feedback in force, per frame
        for cam in ("static", "gripper"):
            got = t["videos"][f"observation.images.{cam}"].astype(int)
            assert got.shape == o[f"rgb_{cam}"].shape
            assert np.abs(got - o[f"rgb_{cam}"]).max() <= 3, cam  # yuv444p crf 0: colour conversion only
        start += n


def test_default_video_plays_everywhere_and_keeps_the_picture(dataset, tmp_path):
    export_lerobot(dataset, tmp_path / "lr", progress=False)
    info = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
    assert info["features"]["observation.images.static"]["info"]["video.pix_fmt"] == "yuv420p"
    ours, theirs = _ours(dataset), _load_like_lerobot(tmp_path / "lr")
    err = np.abs(theirs[0]["videos"]["observation.images.static"].astype(int) - ours[0]["rgb_static"]).mean()
    assert err < 6, err


def test_refuses_a_non_empty_output_and_states_only_data(dataset, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        export_lerobot(dataset, tmp_path / "busy", progress=False)
    assert (tmp_path / "busy" / "x").read_text() == "keep me"
    w = ShardWriter(tmp_path / "states", 0)
    w.write_episode("0000000", make_buffer(images=False), {"meta_task": "open_drawer"})
    with pytest.raises(UserError, match="metamanip-render"):
        export_lerobot(tmp_path / "states", tmp_path / "o2", progress=False)
    with pytest.raises(UserError, match="no dataset"):
        export_lerobot(tmp_path / "nope", tmp_path / "o3", progress=False)


def test_a_failed_export_leaves_nothing(dataset, tmp_path, monkeypatch):
    calls = []

    def boom(self, frames):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return orig(self, frames)

    orig = lerobot_export._VideoWriter.write
    monkeypatch.setattr(lerobot_export._VideoWriter, "write", boom)
    with pytest.raises(OSError, match="disk full"):
        export_lerobot(dataset, tmp_path / "lr", progress=False)
    assert not (tmp_path / "lr").exists() and not list(tmp_path.glob(".lr.tmp-*"))


def test_command_line(dataset, tmp_path):
    r = subprocess.run([sys.executable, "-m", "metamanip.cli.export", "lerobot", str(dataset), str(tmp_path / "lr")],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "2 episodes, 27 frames, 3 tasks" in r.stdout and "LeRobotDataset v3.0" in r.stdout
    again = subprocess.run([sys.executable, "-m", "metamanip.cli.export", "lerobot", str(dataset),
                            str(tmp_path / "lr")], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "not empty" in again.stderr


def test_lerobots_own_dataset_class_loads_the_export(dataset, tmp_path):
    """Runs where `lerobot` is installed (with its `datasets`, `av` / `torchcodec` dependencies)."""
    lerobot_dataset = pytest.importorskip("lerobot.datasets.lerobot_dataset")
    export_lerobot(dataset, tmp_path / "lr", pix_fmt="yuv444p", crf=0, progress=False)
    ds = lerobot_dataset.LeRobotDataset("metamanip/test", root=tmp_path / "lr", video_backend="pyav")
    ours = _ours(dataset)
    assert ds.num_episodes == 2 and ds.num_frames == 27
    k = 0
    for o in ours:
        for t in range(len(o["actions"])):
            item = ds[k]
            np.testing.assert_allclose(item["action"].numpy(), o["actions"][t])
            np.testing.assert_allclose(item["observation.state"].numpy(), o["robot_obs"][t])
            assert item["task"] == o["task"][t]
            img = (item["observation.images.static"].numpy().transpose(1, 2, 0) * 255).round()
            assert np.abs(img - o["rgb_static"][t]).max() <= 4
            k += 1
