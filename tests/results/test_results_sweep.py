"""End to end: a real tiny sweep (two decoders × two seeds through the local launcher), then the results
notebook executed headless against it; its table must agree with the jobs' summary.json files."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from results_sweeps import execute_notebook, notebook_text

REPO = Path(__file__).resolve().parents[2]
T_975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305}  # Student t quantiles (0.975) by dof


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real_sweep")
    sweep = root / "sweep"
    env = {**os.environ, "METAMANIP_ROOT": str(root), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    cmd = [sys.executable, "-m", "metamanip.cli.pipeline", "-m", "experiment=smoke", "decoder=lstm,fc",
           "seed=1,2", "logger=none", "collect.dir=null", "hydra/launcher=local",
           f"hydra.sweep.dir={sweep}"]  # collect.dir=null: each job collects into its own dir
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return sweep


@pytest.mark.slow
def test_notebook_table_matches_the_sweeps_summaries(real_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "nb"
    # the thesis' metrics, plus the training loss: a 20-step policy rarely finds a reward, while its loss
    # differs from job to job, so the intervals are checked on values that are not all equal
    metrics = ["average_reward", "ratio_reward_found", "episode_length", "success_trial_1", "success_trial_2",
               "train_loss"]
    nb = execute_notebook([real_sweep], out, group_by="decoder", metrics=" ".join(metrics))
    assert "4 of 4 job(s) with results" in notebook_text(nb)

    # ground truth straight from the files the jobs wrote
    truth: dict[str, list[dict]] = {}
    for num in range(4):
        job = real_sweep / str(num)
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
        summary = json.loads((job / "eval" / "summary.json").read_text())
        train = json.loads((job / "train" / "metrics.json").read_text())
        assert json.loads((job / "status.json").read_text())["status"] == "done"
        figures = {k: summary[k] for k in ("average_reward", "ratio_reward_found", "episode_length")}
        figures.update({f"success_trial_{k}": v for k, v in enumerate(summary["success_by_trial"], start=1)})
        figures["train_loss"] = train["train_loss"]
        truth.setdefault(overrides["decoder"], []).append(figures)
    assert sorted(truth) == ["fc", "lstm"] and all(len(v) == 2 for v in truth.values())

    table = pd.read_csv(out / "table.csv")
    ours = table[table["source"] == "metamanip"].set_index("decoder")
    assert sorted(ours.index) == ["fc", "lstm"] and set(ours["n"]) == {2}
    spread = 0.0
    for decoder, runs in truth.items():
        for metric in metrics:
            vals = [r[metric] for r in runs]
            half = T_975[1] * np.std(vals, ddof=1) / math.sqrt(2)
            assert ours.loc[decoder, metric] == pytest.approx(np.mean(vals), rel=1e-9, abs=1e-12), (decoder, metric)
            assert ours.loc[decoder, f"{metric}_ci"] == pytest.approx(half, rel=1e-6, abs=1e-12), (decoder, metric)
            spread = max(spread, half)
    assert spread > 0  # at least one interval was computed from values that differ
    for name in ("table.md", "table.tex", "success_by_trial.png", "success_by_trial.pdf", "average_reward.pdf",
                 "loss_curves.png"):
        assert (out / name).stat().st_size > 0, name
    trials = pd.read_csv(out / "trials.csv")
    assert set(trials["decoder"]) == {"lstm", "fc"} and set(trials["seed"]) == {1, 2}
