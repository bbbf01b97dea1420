import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from metamanip.cli.pipeline import compose, stage_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("primary,node", [("collect", "collect"), ("train", "data"), ("eval", "eval")])
def test_stage_configs_carry_every_key_of_the_primary_configs(tmp_path, primary, node):
    """Each stage's run(cfg) finds every key its own primary config has, with the pipeline's values."""
    pipe = compose("pipeline", [], tmp_path / "p")
    own = compose(primary, ["data.dir=x"] if primary == "train" else [], tmp_path / primary)
    assert set(pipe[node]) <= set(own[node]), "pipeline.yaml has a key the stage's primary config lacks"
    staged = stage_config(pipe, primary, tmp_path)
    assert set(staged[node]) == set(own[node])
    for key in pipe[node]:
        if key not in ("dir", "agent"):  # the pipeline sets these itself
            assert staged[node][key] == pipe[node][key]
    for group in ("env", "oracle", "backbone", "decoder", "policy", "trainer", "logger", "trial_limits"):
        if group in own:
            assert group in pipe, f"the pipeline config lacks the {group} node {primary} reads"


def test_stages_live_inside_the_job_dir(tmp_path):
    cfg = compose("pipeline", ["experiment=smoke"], tmp_path)
    out = tmp_path
    c, t, e = (stage_config(cfg, s, out) for s in ("collect", "train", "eval"))
    assert c.paths.output_dir == str(out / "collect") and c.collect.dir == str(out / "collect" / "dataset")
    assert t.data.dir == c.collect.dir and t.task_name == "train"
    assert e.ckpt == str(out / "train" / "checkpoints" / "last.pt") and e.eval.agent == "policy"
    assert OmegaConf.select(cfg, "collect.dir") != c.collect.dir  # the pipeline's own config is untouched


@pytest.mark.slow
def test_the_demo_prints_the_results_table(tmp_path):
    """`make demo`'s command on a fresh checkout: collect → train → eval, then the table."""
    job = tmp_path / "demo"
    env = {**os.environ, "METAMANIP_ROOT": str(tmp_path), "WANDB_MODE": "offline"}
    exe = Path(sys.executable).with_name("metamanip-pipeline")
    proc = subprocess.run([str(exe), "experiment=smoke", f"hydra.run.dir={job}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "overall" in out and "success by trial" in out and "avg_reward" in out
    for stage in ("collect", "train", "eval"):
        assert json.loads((job / stage / "status.json").read_text())["status"] == "done"
    metrics = json.loads((job / "metrics.json").read_text())
    assert {"average_reward", "success_trial_1", "train_loss"} <= set(metrics)
    assert (job / "eval" / "trials.csv").read_text().count("\n") > 1
    assert not (tmp_path / "data").exists()  # nothing written outside the job dir
    # the oracle baseline ran the same episodes and, playing optimally, found the reward in every trial
    assert "baseline: the oracle" in out
    baseline = json.loads((job / "baseline" / "summary.json").read_text())
    policy = json.loads((job / "eval" / "summary.json").read_text())
    assert baseline["episodes"] == policy["episodes"] == 1
    assert baseline["success_by_trial"] == [1.0, 1.0]
    assert metrics["baseline_average_reward"] == baseline["average_reward"] == 2.0
