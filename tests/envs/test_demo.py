"""metamanip-demo: the scripted expert's episode is filmed into the job dir; bad task lists are refused."""
import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import pytest
from hydra import compose, initialize_config_dir

from metamanip.cli.demo import CONFIG_DIR, run_demo

SMALL = ["sim.cameras.static.width=48", "sim.cameras.static.height=48"]


def demo_cfg(*overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose("demo", overrides=[*SMALL, *overrides], return_hydra_config=False)


def test_demo_films_the_tasks(tmp_path):
    cfg = demo_cfg("demo.tasks=[turn_on_led,lift_red_block_table]", "demo.frame_every=3")
    m = run_demo(cfg, tmp_path)
    assert m["tasks_done"] == 2 and [r["task"] for r in m["per_task"]] == ["turn_on_led", "lift_red_block_table"]
    frames = imageio.mimread(tmp_path / "demo.gif")
    assert len(frames) == m["frames"] > 10 and frames[0].shape[:2] == (48, 48)
    assert json.loads((tmp_path / "metrics.json").read_text())["tasks_done"] == 2


@pytest.mark.parametrize("override, message", [
    ("demo.tasks=[open_fridge]", "unknown task.*valid tasks"),
    ("demo.tasks=[open_drawer,open_drawer]", "open_drawer is not possible.*reorder demo.tasks"),
    ("demo.video=demo.avi", "must end in one of"),
])
def test_bad_demo_settings_are_refused(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        run_demo(demo_cfg(override, "demo.max_steps_per_task=80"), tmp_path)
    assert not (tmp_path / "demo.avi").exists()


@pytest.mark.slow
def test_demo_cli_writes_video_status_and_metrics(tmp_path):
    out = tmp_path / "job"
    exe = Path(sys.executable).with_name("metamanip-demo")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "metamanip.cli.demo"]
    proc = subprocess.run([*cmd, *SMALL, "demo.tasks=[open_drawer,move_slider_left]", "demo.video=demo.mp4",
                           f"hydra.run.dir={out}"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2/2 tasks" in proc.stdout
    assert json.loads((out / "status.json").read_text())["status"] == "done"
    assert (out / "demo.mp4").stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text())["tasks_done"] == 2
